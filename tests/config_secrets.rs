//! `raftgres check` (and so `raftgres run`, which loads the same way) refuses a world-readable config file
//! that holds passwords, naming the file and the chmod to run; a group-readable one passes that check.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// Runs `raftgres check -c file` and returns (success, stderr).
fn check(file: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_raftgres"))
        .arg("check")
        .arg("-c")
        .arg(file)
        .env_remove("RAFTGRES_CONFIGURATION")
        .env_remove("PATRONI_CONFIGURATION")
        .output()
        .expect("run raftgres check");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn example_with_mode(dir: &Path, mode: u32) -> std::path::PathBuf {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/examples/node1.yml");
    let file = dir.join("node1.yml");
    std::fs::copy(example, &file).expect("copy the example config");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).expect("chmod");
    file
}

#[test]
fn world_readable_config_with_passwords_is_refused_with_the_chmod_to_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = example_with_mode(dir.path(), 0o644);
    let (ok, stderr) = check(&file);
    assert!(!ok, "a world-readable file with passwords must be refused");
    let lines: Vec<&str> = stderr.lines().filter(|line| !line.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected, got {stderr:?}");
    let want = format!("{}: holds passwords (", file.display());
    assert!(lines[0].contains(&want), "{:?} names the file", lines[0]);
    assert!(lines[0].contains(&format!("run: chmod 600 {}", file.display())), "{:?} gives the chmod", lines[0]);
}

#[test]
fn group_readable_config_passes_the_secret_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    for mode in [0o600, 0o640] {
        let file = example_with_mode(dir.path(), mode);
        let (_, stderr) = check(&file);
        // The host may lack PostgreSQL, so only the secret check's verdict is asserted.
        assert!(!stderr.contains("every user may read"), "mode {mode:o}: {stderr}");
    }
}

#[test]
fn world_readable_config_without_passwords_passes_the_secret_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/examples/node1.yml");
    let text = std::fs::read_to_string(example).expect("read the example");
    let without: String =
        text.lines().filter(|line| !line.contains("password")).map(|line| format!("{line}\n")).collect();
    let file = dir.path().join("public.yml");
    std::fs::write(&file, without).expect("write");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (_, stderr) = check(&file);
    assert!(!stderr.contains("every user may read"), "{stderr}");
}
