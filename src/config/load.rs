//! The imperative shell of the configuration: reads the YAML file (or a directory of `*.yml`
//! and `*.yaml` files merged in sorted order, as Patroni does), applies environment overrides,
//! runs the pure reader and checks, and checks the host in [`check_environment`].
//!
//! Precedence, as in Patroni: with a config path, the file(s) plus environment overrides;
//! without one ([`load_from_env`]), the `RAFTGRES_CONFIGURATION` / `PATRONI_CONFIGURATION`
//! document if set (other variables are then ignored), else the variables alone.
//!
//! [`load_private`] is what `raftgres run` and `raftgres check` use: it also refuses a file that
//! holds a password (any key ending in `password`) and that every user may read. Group-readable
//! is fine (a `0640` file with a service group is the usual Patroni deployment); the error names
//! the file and the `chmod` to run. The check runs after the pure checks, so a broken file is
//! first told what is broken.

use std::ffi::OsStr;
use std::path::Path;
use std::path::PathBuf;

use serde_json::Map;
use serde_json::Value;

use super::defaults;
use super::env;
use super::env::EnvMap;
use super::merge_patch;
use super::sections;
use super::validate::validate;
use super::walk::invalid;
use super::walk::parse_yaml;
use super::Config;
use super::ConfigError;
use super::PostgresqlConfig;

/// A configuration that passed every pure check, with the warnings to log once at start-up.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// Unknown or ignored keys and adjusted values, one sentence each.
    pub warnings: Vec<String>,
    /// The document it was read from, environment overrides applied (a reload compares two of them).
    pub tree: Value,
}

/// Loads a YAML file, or a directory of YAML files merged in sorted order, then applies the
/// environment overrides in `env` and checks the result.
pub fn load(path: &Path, env: &EnvMap) -> Result<Loaded, ConfigError> {
    let tree = read_tree(path)?;
    with_overrides(tree, env)
}

/// Loads like [`load`], then refuses any of the files that holds a password and is readable by
/// every user (mode `o+r`): what `raftgres run` and `raftgres check` call.
pub fn load_private(path: &Path, env: &EnvMap) -> Result<Loaded, ConfigError> {
    let documents = read_documents(path)?;
    let loaded = with_overrides(merge_documents(&documents), env)?;
    for (file, document) in &documents {
        let secrets = secret_keys(document);
        if secrets.is_empty() {
            continue;
        }
        let metadata = std::fs::metadata(file).map_err(|cause| ConfigError::Read { path: file.clone(), cause })?;
        check_secret_mode(file, std::os::unix::fs::PermissionsExt::mode(&metadata.permissions()), &secrets)?;
    }
    Ok(loaded)
}

/// PURE: the error for a file holding `secrets` (key paths) whose `mode` lets every user read it.
pub fn check_secret_mode(file: &Path, mode: u32, secrets: &[String]) -> Result<(), ConfigError> {
    if mode & 0o004 == 0 {
        return Ok(());
    }
    let shown = match secrets {
        [one] => one.clone(),
        [first, rest @ ..] => format!("{first} and {} more", rest.len()),
        [] => return Ok(()),
    };
    let file = file.display();
    Err(invalid(
        file.to_string(),
        format!(
            "holds passwords ({shown}) and every user may read it (mode {:04o}); run: chmod 600 {file} \
             (or chmod o-rwx {file} to keep group access)",
            mode & 0o7777
        ),
    ))
}

/// PURE: the key paths of `tree` that hold a secret: a non-empty value under a key ending in
/// `password` (`password`, `sslpassword`, `keyfile_password`), in document order.
pub fn secret_keys(tree: &Value) -> Vec<String> {
    let mut found = Vec::new();
    collect_secret_keys(tree, "", &mut found);
    found
}

fn collect_secret_keys(value: &Value, path: &str, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let child_path = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                let holds_value = !matches!(child, Value::Null | Value::Object(_) | Value::Array(_))
                    && child.as_str().is_none_or(|text| !text.is_empty());
                if key.to_ascii_lowercase().ends_with("password") && holds_value {
                    found.push(child_path);
                } else {
                    collect_secret_keys(child, &child_path, found);
                }
            }
        }
        Value::Array(items) => {
            for (idx, item) in items.iter().enumerate() {
                collect_secret_keys(item, &format!("{path}[{idx}]"), found);
            }
        }
        _ => {}
    }
}

/// Loads one YAML document (`origin` names it in errors) with the environment overrides.
pub fn load_str(yaml: &str, origin: &str, env: &EnvMap) -> Result<Loaded, ConfigError> {
    let tree = document_tree(yaml, origin)?;
    with_overrides(tree, env)
}

/// Loads without a config file: the whole-document variable if set, else the variables alone.
pub fn load_from_env(env: &EnvMap) -> Result<Loaded, ConfigError> {
    match env::configuration_document(env) {
        Some((name, yaml)) => from_tree(&document_tree(yaml, &name)?),
        None => from_tree(&env::overrides(env)?),
    }
}

fn with_overrides(tree: Value, env: &EnvMap) -> Result<Loaded, ConfigError> {
    let overrides = env::overrides(env)?;
    from_tree(&merge_patch(&tree, &overrides))
}

fn from_tree(tree: &Value) -> Result<Loaded, ConfigError> {
    let mut warnings = Vec::new();
    let config = sections::config(tree, &mut warnings)?;
    warnings.extend(super::unsupported::local_warnings(tree));
    warnings.extend(validate(&config)?);
    Ok(Loaded { config, warnings, tree: tree.clone() })
}

/// One document as a tree; the top level must be a map (an empty document reads as one).
fn document_tree(yaml: &str, origin: &str) -> Result<Value, ConfigError> {
    match parse_yaml(yaml, origin)? {
        Value::Null => Ok(Value::Object(Map::new())),
        tree @ Value::Object(_) => Ok(tree),
        _ => Err(ConfigError::Syntax { origin: origin.to_string(), message: "expected a map at the top level".into() }),
    }
}

fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|cause| ConfigError::Read { path: path.to_path_buf(), cause })
}

pub(crate) fn read_tree(path: &Path) -> Result<Value, ConfigError> {
    Ok(merge_documents(&read_documents(path)?))
}

fn merge_documents(documents: &[(PathBuf, Value)]) -> Value {
    documents.iter().fold(Value::Object(Map::new()), |tree, (_, document)| merge_patch(&tree, document))
}

/// The file at `path`, or the `*.yml` and `*.yaml` files of the directory `path` in sorted order.
fn read_documents(path: &Path) -> Result<Vec<(PathBuf, Value)>, ConfigError> {
    let read_error = |cause| ConfigError::Read { path: path.to_path_buf(), cause };
    let metadata = std::fs::metadata(path).map_err(read_error)?;
    if !metadata.is_dir() {
        return Ok(vec![(path.to_path_buf(), document_tree(&read_file(path)?, &path.display().to_string())?)]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(read_error)? {
        let file = entry.map_err(read_error)?.path();
        let is_yaml = file.extension().is_some_and(|ext| ext == "yml" || ext == "yaml");
        if is_yaml && file.is_file() {
            files.push(file);
        }
    }
    if files.is_empty() {
        return Err(read_error(std::io::Error::new(std::io::ErrorKind::NotFound, "no *.yml or *.yaml files")));
    }
    files.sort();
    let mut documents = Vec::with_capacity(files.len());
    for file in files {
        let document = document_tree(&read_file(&file)?, &file.display().to_string())?;
        documents.push((file, document));
    }
    Ok(documents)
}

/// Checks what the configuration expects of this host: the PostgreSQL programs, and that
/// directories and TLS files named in it are what they claim. Returns every problem found.
pub fn check_environment(config: &Config) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    check_programs(&config.postgresql, &mut errors);
    let dirs = [
        ("postgresql.data_dir", Some(&config.postgresql.data_dir)),
        ("postgresql.config_dir", config.postgresql.config_dir.as_ref()),
        ("raft.data_dir", Some(&config.raft.data_dir)),
        ("log.dir", config.log.dir.as_ref()),
    ];
    for (key, dir) in dirs {
        if let Some(dir) = dir.filter(|d| d.exists() && !d.is_dir()) {
            errors.push(invalid(key, format!("{} exists and is not a directory", dir.display())));
        }
    }
    let files = [
        ("restapi.certfile", &config.restapi.certfile),
        ("restapi.keyfile", &config.restapi.keyfile),
        ("restapi.cafile", &config.restapi.cafile),
        ("ctl.cacert", &config.ctl.cacert),
        ("ctl.certfile", &config.ctl.certfile),
        ("ctl.keyfile", &config.ctl.keyfile),
    ];
    for (key, file) in files {
        if let Some(file) = file.as_ref().filter(|f| !f.is_file()) {
            errors.push(invalid(key, format!("{} is not a readable file", file.display())));
        }
    }
    check_postgres_user_reach(config, &mut errors);
    if let Some(vip) = config.vip.as_ref().filter(|vip| !crate::vip::link::interface_exists(&vip.interface)) {
        let names = crate::vip::link::interface_names().join(", ");
        errors.push(invalid(
            "vip.interface",
            format!("there is no network interface {:?} here (this host has: {names}); name the one on the clients' network", vip.interface),
        ));
    }
    errors
}

/// As root, PostgreSQL runs as `postgresql.run_as`: that user must be able to enter every directory above the
/// data directory, the configuration directory and the pgpass file, or every bootstrap and clone fails (a
/// `mktemp -d` directory or root's home is 0700). Checked up front so `run`, `check` and `demo` say which
/// directory and the `chmod` that fixes it, instead of failing each attempt.
fn check_postgres_user_reach(config: &Config, errors: &mut Vec<ConfigError>) {
    use crate::postgres::files;
    let pg = &config.postgresql;
    let owner = match files::resolve_owner(None, &pg.run_as) {
        Ok(Some(owner)) => owner,
        Ok(None) => return,
        Err(e) => {
            errors.push(invalid("postgresql.run_as", e.to_string()));
            return;
        }
    };
    let pgpass = pg.pgpass_path(&config.name);
    let paths = [
        ("postgresql.data_dir", pg.data_dir.clone()),
        ("postgresql.config_dir", pg.config_dir().to_path_buf()),
        ("postgresql.pgpass", pgpass),
    ];
    for (key, path) in paths {
        if let Err(e) = files::check_reachable(&path, Some(&owner)) {
            errors.push(invalid(key, format!("{} is out of reach of PostgreSQL: {e}", path.display())));
        }
    }
}

/// `raftgres check` only: with `watchdog.mode: required`, the device must exist and this user must be able to
/// write it, or the node runs but never becomes the leader. The device is never opened here: opening a watchdog
/// arms it, and closing it without the magic character leaves it to reset the host.
pub fn check_watchdog_device(config: &Config) -> Option<ConfigError> {
    let watchdog = &config.watchdog;
    if watchdog.mode != super::WatchdogMode::Required {
        return None;
    }
    let device = watchdog.device.display();
    let problem = match std::fs::metadata(&watchdog.device) {
        Err(e) => {
            format!("{device} cannot be read ({e}); load a watchdog driver (modprobe softdog) or set watchdog.device")
        }
        Ok(_) => match nix::unistd::access(&watchdog.device, nix::unistd::AccessFlags::W_OK) {
            Ok(()) => return None,
            Err(e) => format!("{device} is not writable by this user ({e}); raftgres opens it for writing"),
        },
    };
    Some(invalid("watchdog.device", format!("{problem}; watchdog.mode required refuses to lead without it")))
}

fn check_programs(pg: &PostgresqlConfig, errors: &mut Vec<ConfigError>) {
    let (dir, origin) = match &pg.bin_dir {
        Some(dir) if dir.is_dir() => (dir.clone(), "postgresql.bin_dir"),
        Some(dir) => {
            let message = format!("{} is not a directory; set the directory of the PostgreSQL programs", dir.display());
            errors.push(invalid("postgresql.bin_dir", message));
            return;
        }
        None => match find_bin_dir(&pg.bin_name.postgres, std::env::var_os("PATH").as_deref()) {
            Some(dir) => (dir, "found by search"),
            None => {
                let message = format!(
                    "not set, and {} is neither in {}/<version>/bin nor on PATH; install the PostgreSQL server \
                     or set postgresql.bin_dir",
                    pg.bin_name.postgres,
                    defaults::DEBIAN_PG_LIB
                );
                errors.push(invalid("postgresql.bin_dir", message));
                return;
            }
        },
    };
    for program in defaults::REQUIRED_PG_PROGRAMS {
        let name = pg.bin_name.get(program).unwrap_or(program);
        if !is_executable(&dir.join(name)) {
            let message = format!(
                "{} ({origin}) has no executable {name}; install the PostgreSQL server package or fix postgresql.bin_dir",
                dir.display()
            );
            errors.push(invalid("postgresql.bin_dir", message));
        }
    }
}

/// The directory of the PostgreSQL programs when `postgresql.bin_dir` is unset: the newest
/// `/usr/lib/postgresql/<version>/bin` holding `postgres_name` (Debian, Ubuntu), else the
/// first directory on `path_var` (the `PATH` value) that holds it.
pub fn find_bin_dir(postgres_name: &str, path_var: Option<&OsStr>) -> Option<PathBuf> {
    newest_versioned_bin(Path::new(defaults::DEBIAN_PG_LIB), postgres_name)
        .or_else(|| std::env::split_paths(path_var?).find(|dir| is_executable(&dir.join(postgres_name))))
}

/// `<root>/<newest version>/bin` that holds `program`; versions compare numerically (`9.6 < 10`).
fn newest_versioned_bin(root: &Path, program: &str) -> Option<PathBuf> {
    let mut versions: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir(root)
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name().into_string().ok()?;
            let version: Option<Vec<u32>> = name.split('.').map(|part| part.parse().ok()).collect();
            Some((version?, entry.path().join("bin")))
        })
        .filter(|(_, bin)| is_executable(&bin.join(program)))
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn touch_executable(path: &Path) {
        std::fs::create_dir_all(path.parent().expect("test paths have a parent")).expect("create dir");
        std::fs::write(path, "#!/bin/sh\n").expect("write program");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    #[track_caller]
    fn check(versions: &[&str], expected: Option<&str>) {
        let root = tempfile::tempdir().expect("tempdir");
        for version in versions {
            touch_executable(&root.path().join(version).join("bin").join("postgres"));
        }
        std::fs::create_dir_all(root.path().join("99").join("bin")).expect("dir without postgres");
        let res = newest_versioned_bin(root.path(), "postgres");
        assert_eq!(res, expected.map(|v| root.path().join(v).join("bin")));
    }

    #[test]
    fn newest_version_is_numeric_not_lexical() {
        check(&["9.6", "10", "16"], Some("16"));
    }

    #[test]
    fn directory_without_postgres_is_skipped() {
        check(&["15"], Some("15"));
    }

    #[test]
    fn no_versions_finds_nothing() {
        check(&[], None);
    }

    #[test]
    fn path_search_finds_postgres() {
        let dir = tempfile::tempdir().expect("tempdir");
        touch_executable(&dir.path().join("b").join("postgres_test_only"));
        let path_var = std::env::join_paths([dir.path().join("a"), dir.path().join("b")]).expect("join");
        let res = find_bin_dir("postgres_test_only", Some(&path_var));
        assert_eq!(res, Some(dir.path().join("b")));
    }

    #[test]
    fn secret_keys_name_every_password_but_not_empty_ones() {
        let tree = serde_json::json!({
            "restapi": {"authentication": {"username": "u", "password": "p"}, "keyfile_password": 1234},
            "postgresql": {
                "authentication": {"superuser": {"password": ""}, "rewind": {"sslpassword": "x", "password": null}},
                "parameters": {"password_encryption": "scram-sha-256"}
            },
            "list": [{"Password": "q"}]
        });
        let res = secret_keys(&tree);
        let expected = [
            "list[0].Password",
            "postgresql.authentication.rewind.sslpassword",
            "restapi.authentication.password",
            "restapi.keyfile_password",
        ];
        assert_eq!(res, expected);
    }

    #[track_caller]
    fn check_mode(mode: u32, expected: Option<&str>) {
        let secrets = vec!["ctl.authentication.password".to_string()];
        let res = check_secret_mode(Path::new("/etc/raftgres/n1.yml"), mode, &secrets).map_err(|e| e.to_string());
        match expected {
            None => assert_eq!(res, Ok(()), "mode {mode:o}"),
            Some(want) => assert_eq!(res.err().as_deref(), Some(want), "mode {mode:o}"),
        }
    }

    #[test]
    fn world_readable_secrets_are_refused_group_readable_are_not() {
        check_mode(0o600, None);
        check_mode(0o640, None);
        check_mode(0o660, None);
        check_mode(0o400, None);
        check_mode(
            0o644,
            Some(
                "/etc/raftgres/n1.yml: holds passwords (ctl.authentication.password) and every user may read it \
                 (mode 0644); run: chmod 600 /etc/raftgres/n1.yml (or chmod o-rwx /etc/raftgres/n1.yml to keep group \
                 access)",
            ),
        );
        assert!(check_mode_is_err(0o604));
        assert!(check_mode_is_err(0o100644));
        assert!(check_secret_mode(Path::new("x"), 0o644, &[]).is_ok(), "no secrets, no refusal");
    }

    fn check_mode_is_err(mode: u32) -> bool {
        check_secret_mode(Path::new("x"), mode, &["password".to_string()]).is_err()
    }

    const WITH_PASSWORD: &str = "ctl:\n  authentication: {username: admin, password: s3cret}\n";

    fn write_with_mode(path: &Path, text: &str, mode: u32) {
        std::fs::write(path, text).expect("write config");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn load_private_checks_each_file_of_a_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_with_mode(&dir.path().join("00-public.yml"), "scope: demo\n", 0o644);
        write_with_mode(&dir.path().join("10-secret.yml"), WITH_PASSWORD, 0o644);
        let documents = read_documents(dir.path()).expect("read");
        let flagged: Vec<&Path> =
            documents.iter().filter(|(_, doc)| !secret_keys(doc).is_empty()).map(|(file, _)| file.as_path()).collect();
        assert_eq!(flagged, [dir.path().join("10-secret.yml").as_path()]);
        // The pure checks fail first on this incomplete document, as they do for any broken file.
        let res = load_private(dir.path(), &EnvMap::new()).map(|_| ()).map_err(|e| e.to_string());
        assert!(res.is_err_and(|e| !e.contains("every user may read")));
    }

    #[test]
    fn load_private_refuses_a_world_readable_example() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/examples/node1.yml");
        let text = std::fs::read_to_string(example).expect("read the example");
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("node1.yml");
        write_with_mode(&file, &text, 0o644);
        let err = load_private(&file, &EnvMap::new()).map(|_| ()).expect_err("0644 with passwords");
        assert!(err.to_string().contains(&format!("run: chmod 600 {}", file.display())), "{err}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        assert!(load_private(&file, &EnvMap::new()).is_ok());
    }
}
