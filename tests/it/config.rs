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

/// `raftgres check` reads a configuration as `run` does: `check FILE`, `-c FILE` before or after the command, or
/// the whole YAML in `PATRONI_CONFIGURATION`; with none of them it says what to give.
#[test]
fn check_reads_file_flag_or_patroni_configuration() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut spec = raftgres::demo::cluster::ClusterSpec::new(dir.path(), crate::harness::binary());
    spec.pg_bin_dir = raftgres::demo::cluster::find_pg_bin_dir().ok();
    if spec.pg_bin_dir.is_none() {
        println!("SKIP check_reads_file_flag_or_patroni_configuration: PostgreSQL is not installed");
        return;
    }
    let cluster = raftgres::demo::cluster::LocalCluster::generate(spec).expect("generate node configurations");
    let file = cluster.node(1).config_path();
    let run = |args: &[&str], env: Option<String>| {
        let mut command = Command::new(binary());
        command.args(args).env_remove("PATRONI_CONFIGURATION").env_remove("RAFTGRES_CONFIGURATION");
        for (key, _) in std::env::vars() {
            if key.starts_with("RAFTGRES_") || key.starts_with("PATRONI_") {
                command.env_remove(key);
            }
        }
        if let Some(yaml) = env {
            command.env("PATRONI_CONFIGURATION", yaml);
        }
        let out = command.output().expect("run raftgres check");
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let path = file.to_string_lossy().into_owned();
    for args in [vec!["check", path.as_str()], vec!["check", "-c", &path], vec!["-c", &path, "check"]] {
        let (ok, out) = run(&args, None);
        assert!(ok && out.contains(&format!("{path}: configuration is valid")), "{args:?}: {out}");
    }
    let yaml = std::fs::read_to_string(&file).expect("read the node configuration");
    let (ok, out) = run(&["check"], Some(yaml));
    assert!(ok && out.contains("$PATRONI_CONFIGURATION: configuration is valid"), "{out}");
    let (ok, out) = run(&["check"], None);
    assert!(
        !ok && out.contains("no configuration: give FILE (or -c FILE), or the whole YAML in PATRONI_CONFIGURATION")
    );
}
