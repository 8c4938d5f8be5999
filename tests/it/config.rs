//! Bad configurations are rejected at start-up with one line naming the key.

use std::path::Path;
use std::process::Command;

use crate::harness::binary;

/// Runs `raftgres check -c file` and returns (success, stderr).
fn check(file: &Path) -> (bool, String) {
    let out = Command::new(binary()).arg("check").arg("-c").arg(file).output().expect("run raftgres check");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The `# expect:` line at the top of a bad config.
fn expectation(file: &Path) -> String {
    let text = std::fs::read_to_string(file).expect("read the bad config");
    text.lines().next().and_then(|l| l.strip_prefix("# expect: ")).expect("an expect line").to_string()
}

#[test]
fn bad_configs_produce_one_line_naming_the_key() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut n_files = 0;
    for folder in ["bad-configs", "bad-environment"] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(folder)).expect("list bad configs").flatten().collect();
        files.sort_by_key(|e| e.path());
        for entry in files {
            let path = entry.path();
            let (ok, stderr) = check(&path);
            assert!(!ok, "{} must be rejected", path.display());
            let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            assert_eq!(lines.len(), 1, "{}: one line expected, got {stderr:?}", path.display());
            let want = expectation(&path);
            assert!(lines[0].contains(&want), "{}: {:?} does not contain {want:?}", path.display(), lines[0]);
            n_files += 1;
        }
    }
    assert!(n_files >= 10, "the bad-config corpus is complete");
}
