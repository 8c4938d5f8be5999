//! Durable writes and ownership of every file raftgres puts in or next to a PostgreSQL data directory.
//!
//! This module owns: write-temp + fsync + rename + fsync-dir, removal with a directory fsync, creating the
//! data directory (mode 0700, owned by the PostgreSQL user), ownership and reachability checks with an error
//! that names the command to run, and the managed files (`postgresql.conf`, `pg_hba.conf`, `standby.signal`).
//! Everything here is blocking: async callers go through [`blocking`]. It must not spawn processes or run SQL.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::postgres::conf::{self, ConnInfo, PinnedParams, BASE_CONF, MANAGED_HEADER};
use crate::postgres::supervisor::{Credentials, PgConfig, PgError};

/// The OS user PostgreSQL programs run as when raftgres runs as root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// User name, for messages and the `chown` hint.
    pub name: String,
    /// Numeric user id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory, passed to programs as `HOME`.
    pub home: PathBuf,
}

/// The user PostgreSQL programs run as: as root `run_as` (default `default_run_as`), which must exist and not be
/// root; otherwise ourselves (`run_as` may only name ourselves).
pub(crate) fn resolve_owner(run_as: Option<&str>, default_run_as: &str) -> Result<Option<Owner>, PgError> {
    let euid = nix::unistd::geteuid();
    let name = match (euid.is_root(), run_as) {
        (true, name) => name.unwrap_or(default_run_as),
        (false, None) => return Ok(None),
        (false, Some(name)) => name,
    };
    let user = nix::unistd::User::from_name(name)
        .map_err(|errno| PgError::Io { context: format!("look up user {name}"), cause: errno.into() })?
        .ok_or_else(|| {
            PgError::Config(format!(
                "postgresql.run_as: user {name:?} does not exist; PostgreSQL refuses to run as root, so create it \
                 (useradd --system --user-group --home-dir /var/lib/postgresql {name}) or set postgresql.run_as"
            ))
        })?;
    if !euid.is_root() {
        if user.uid == euid {
            return Ok(None);
        }
        return Err(PgError::Config(format!(
            "postgresql.run_as: raftgres runs as uid {euid} and cannot switch to {name:?}; run it as root or as {name}"
        )));
    }
    if user.uid.is_root() {
        return Err(PgError::Config(format!(
            "postgresql.run_as: {name:?} is root, and PostgreSQL refuses to run as root; name an unprivileged user"
        )));
    }
    Ok(Some(Owner { name: user.name, uid: user.uid.as_raw(), gid: user.gid.as_raw(), home: user.dir }))
}

/// The `pg_hba.conf` lines initdb writes for `--auth-local=peer`, kept after the configured lines.
pub const LOCAL_HBA_DEFAULTS: [&str; 2] = ["local all all peer", "local replication all peer"];

/// PostgreSQL's limit on a unix socket path (`sizeof(sun_path) - 1`).
const MAX_SOCKET_PATH: usize = 107;

/// Runs blocking file work on the blocking pool. The work runs to completion even if the caller is dropped,
/// so a write started here is never left half done.
pub(crate) async fn blocking<T, F>(what: &str, work: F) -> Result<T, PgError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, PgError> + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(res) => res,
        Err(join_error) => Err(PgError::Io { context: what.to_owned(), cause: io::Error::other(join_error) }),
    }
}

/// Wraps an I/O error with a context phrase naming the action and path ("write /x/postgresql.conf").
pub(crate) fn io_context(verb: &str, path: &Path) -> impl FnOnce(io::Error) -> PgError {
    let context = format!("{verb} {}", path.display());
    move |cause| PgError::Io { context, cause }
}

/// Writes `contents` to `path` so that after a crash the file holds either the old or the new contents:
/// write a temporary file next to it, set mode and owner, fsync, rename over `path`, fsync the directory.
///
/// The temporary file is always new (a stale one is removed first, and `O_EXCL` never follows a symlink) and
/// gets its mode and owner through the open handle before any content is written, so a secret such as the
/// pgpass file is never readable by others, even in a shared directory like `/tmp` (Patroni's default pgpass
/// is `/tmp/pgpass0`) where another user could plant a symlink under the temporary name.
pub(crate) fn write_durable(path: &Path, contents: &[u8], mode: u32, owner: Option<&Owner>) -> Result<(), PgError> {
    let dir = parent_dir(path);
    let file_name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.raftgres-tmp"));
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_context("remove the stale", &tmp)(e)),
    }
    let mut file =
        OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).map_err(io_context("create", &tmp))?;
    file.set_permissions(fs::Permissions::from_mode(mode)).map_err(io_context("chmod", &tmp))?;
    if let Some(owner) = owner {
        std::os::unix::fs::fchown(&file, Some(owner.uid), Some(owner.gid)).map_err(io_context("chown", &tmp))?;
    }
    file.write_all(contents).map_err(io_context("write", &tmp))?;
    file.sync_all().map_err(io_context("fsync", &tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_context("rename into place", path))?;
    fsync_dir(&dir)
}

/// Removes `path` if it exists and fsyncs its directory, so the removal survives a crash.
pub(crate) fn remove_durable(path: &Path) -> Result<(), PgError> {
    match fs::remove_file(path) {
        Ok(()) => fsync_dir(&parent_dir(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_context("remove", path)(e)),
    }
}

/// Renames `from` to `to` and fsyncs the directory.
pub(crate) fn rename_durable(from: &Path, to: &Path) -> Result<(), PgError> {
    fs::rename(from, to).map_err(io_context("rename", from))?;
    fsync_dir(&parent_dir(to))
}

fn fsync_dir(dir: &Path) -> Result<(), PgError> {
    File::open(dir).and_then(|dir_file| dir_file.sync_all()).map_err(io_context("fsync directory", dir))
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Installs a replication slot's state file copied from another server as `<replslot>/<name>/state`, so that a
/// crash leaves either no slot, the old one, or the new one: the file goes into `<name>.tmp` (which PostgreSQL
/// removes at start if it finds it), then that directory replaces `<name>`; modes 0700/0600, owned by `owner`,
/// everything fsynced. PostgreSQL must be stopped.
pub(crate) fn install_slot_state(
    replslot: &Path,
    name: &str,
    state: &[u8],
    owner: Option<&Owner>,
) -> Result<(), PgError> {
    let dir = replslot.join(name);
    let tmp = replslot.join(format!("{name}.tmp"));
    match fs::remove_dir_all(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_context("remove the stale", &tmp)(e)),
    }
    fs::create_dir(&tmp).map_err(io_context("create directory", &tmp))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o700)).map_err(io_context("chmod 0700", &tmp))?;
    if let Some(owner) = owner {
        std::os::unix::fs::chown(&tmp, Some(owner.uid), Some(owner.gid)).map_err(io_context("chown", &tmp))?;
    }
    write_durable(&tmp.join("state"), state, 0o600, owner)?;
    match fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_context("remove the old slot directory", &dir)(e)),
    }
    rename_durable(&tmp, &dir)?;
    fsync_dir(&dir)
}

/// Whether `dir` is absent or has no entries (what initdb and pg_basebackup need).
pub(crate) fn is_missing_or_empty(dir: &Path) -> Result<bool, PgError> {
    match fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(io_context("read directory", dir)(e)),
    }
}

/// Creates the data directory (and missing parents) with mode 0700, owned by `owner` (or by us), or checks
/// an existing one: another owner is an error naming the `chown` to run; a wider mode is narrowed to 0700.
pub(crate) fn ensure_private_dir(dir: &Path, owner: Option<&Owner>) -> Result<(), PgError> {
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent).map_err(io_context("create directory", parent))?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {
            if let Some(owner) = owner {
                std::os::unix::fs::chown(dir, Some(owner.uid), Some(owner.gid)).map_err(io_context("chown", dir))?;
            }
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => check_owner(dir, owner)?,
        Err(e) => return Err(io_context("create directory", dir)(e)),
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_context("chmod 0700", dir))?;
    fsync_dir(&parent_dir(dir))?;
    check_reachable(dir, owner)
}

/// Fails unless `path` is owned by the PostgreSQL user (`owner`, or ourselves when `owner` is `None`).
pub(crate) fn check_owner(path: &Path, owner: Option<&Owner>) -> Result<(), PgError> {
    let meta = fs::metadata(path).map_err(io_context("stat", path))?;
    let (uid, name) = match owner {
        Some(owner) => (owner.uid, owner.name.clone()),
        None => (nix::unistd::geteuid().as_raw(), "this user".to_owned()),
    };
    if meta.uid() == uid {
        return Ok(());
    }
    let chown = match owner {
        Some(owner) => format!("chown -R {0}:{1} {2} && chmod 0700 {2}", owner.name, owner.gid, path.display()),
        None => format!("chown -R {uid} {0} && chmod 0700 {0}", path.display()),
    };
    Err(PgError::Ownership {
        path: path.to_path_buf(),
        detail: format!("owned by uid {} but PostgreSQL runs as {name} (uid {uid}); run: {chown}", meta.uid()),
    })
}

/// Fails unless the PostgreSQL user may enter every existing ancestor of `path` (a `tempfile` directory is 0700
/// and owned by root, which makes PostgreSQL fail later with a less helpful message). Only checked as root.
pub(crate) fn check_reachable(path: &Path, owner: Option<&Owner>) -> Result<(), PgError> {
    let Some(owner) = owner else { return Ok(()) };
    for dir in path.ancestors().skip(1).filter(|dir| !dir.as_os_str().is_empty()) {
        let Ok(meta) = fs::metadata(dir) else { continue };
        let mode = meta.mode();
        let search_bit = if meta.uid() == owner.uid {
            0o100
        } else if meta.gid() == owner.gid {
            0o010
        } else {
            0o001
        };
        if mode & search_bit == 0 {
            return Err(PgError::Ownership {
                path: dir.to_path_buf(),
                detail: format!(
                    "user {} cannot enter this directory (mode {:o}, uid {}); run: chmod o+x {}",
                    owner.name,
                    mode & 0o7777,
                    meta.uid(),
                    dir.display()
                ),
            });
        }
    }
    Ok(())
}

/// Removes everything inside `dir` but keeps `dir` itself (and its owner and mode).
pub(crate) fn clear_dir(dir: &Path) -> Result<(), PgError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_context("read directory", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_context("read directory", dir))?;
        let path = entry.path();
        // A symlink (for example pg_wal pointing elsewhere) is removed as a link, never followed.
        let is_dir = entry.file_type().map_err(io_context("stat", &path))?.is_dir();
        let res = if is_dir { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
        res.map_err(io_context("remove", &path))?;
    }
    fsync_dir(dir)
}

/// What the managed `postgresql.conf` says about recovery: nothing for a primary, or how to follow an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RecoveryConf {
    /// No `standby.signal`, no `primary_conninfo`.
    Primary,
    /// `standby.signal` plus these settings.
    Replica {
        /// The rendered `primary_conninfo`.
        primary_conninfo: String,
        /// `primary_slot_name`, if any.
        slot: Option<String>,
    },
}

/// The TCP keepalive and user-timeout keywords of every `primary_conninfo` (libpq names, values in seconds,
/// `tcp_user_timeout` in milliseconds): a connection whose peer vanished is given up after about 20 s.
///
/// PostgreSQL's WAL receiver bounds a silent *streaming* connection with `wal_receiver_timeout`, but it waits
/// for its connection to complete, and for the answers to `IDENTIFY_SYSTEM` and `START_REPLICATION`, without a
/// timeout of its own. A primary that is fenced or restarted while those packets are being lost (the FIN or RST
/// of its dead backend never arrives) left a replica waiting on a half-open connection for minutes in a chaos
/// run (docs/chaos.md, finding 19); since its leader did not change, no new `primary_conninfo` restarted the
/// receiver. Keepalive probes are answered with a reset by a peer that lost the connection, and unanswered by a
/// peer that is gone; `tcp_user_timeout` bounds data left unacknowledged. Patroni adds none of these.
pub(crate) const REPLICA_KEEPALIVES: [(&str, &str); 5] = [
    ("keepalives", "1"),
    ("keepalives_idle", "5"),
    ("keepalives_interval", "5"),
    ("keepalives_count", "3"),
    ("tcp_user_timeout", "20000"),
];

/// Renders the `primary_conninfo` a replica of `cfg` uses to stream from `host:port`.
pub(crate) fn replica_conninfo(cfg: &PgConfig, host: &str, port: u16) -> Result<String, PgError> {
    let info = ConnInfo {
        host: host.to_owned(),
        port,
        user: cfg.replication.username.clone(),
        password: None,
        passfile: Some(cfg.pgpass.to_string_lossy().into_owned()),
        application_name: cfg.name.clone(),
        sslmode: None,
        options: REPLICA_KEEPALIVES.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect(),
    };
    conf::render_conninfo(&info).map_err(|e| PgError::Config(format!("render primary_conninfo: {e}")))
}

/// The unix socket directory: the data directory's parent when the PostgreSQL user owns it and the socket
/// path fits PostgreSQL's 107-byte limit, else `/tmp`.
pub(crate) fn socket_dir(data_dir: &Path, port: u16, run_uid: u32) -> PathBuf {
    let parent = parent_dir(data_dir);
    let socket_len = parent.as_os_str().len() + format!("/.s.PGSQL.{port}.lock").len();
    let owned = fs::metadata(&parent).is_ok_and(|meta| meta.uid() == run_uid);
    if owned && socket_len <= MAX_SOCKET_PATH {
        parent
    } else {
        PathBuf::from("/tmp")
    }
}

/// The parameters of the managed `postgresql.conf`: user GUCs, cluster-wide defaults, the pinned values,
/// raftgres's own settings and the recovery settings. Also returns the cluster-wide values that were rejected.
pub(crate) fn server_parameters(
    cfg: &PgConfig,
    recovery: &RecoveryConf,
    socket_dir: &Path,
) -> (BTreeMap<String, String>, Vec<String>) {
    let cluster_wide = conf::apply_cluster_wide_defaults(&cfg.parameters);
    let rejected = cluster_wide.rejected.iter().map(ToString::to_string).collect();
    let pinned = PinnedParams {
        listen_addresses: &cfg.listen_addresses,
        port: cfg.port,
        cluster_name: &cfg.scope,
        hba_file: None,
        ident_file: None,
    };
    let mut params = conf::apply_pinned_parameters(cluster_wide.params, &pinned);
    let mut set = |name: &str, value: Option<String>| {
        params.retain(|key, _| !key.eq_ignore_ascii_case(name));
        if let Some(value) = value {
            params.insert(name.to_owned(), value);
        }
    };
    // The log must reach raftgres's stderr pipe, which re-emits it through tracing.
    set("logging_collector", Some("off".to_owned()));
    set("unix_socket_directories", Some(socket_dir.to_string_lossy().into_owned()));
    match recovery {
        RecoveryConf::Primary => {
            set("primary_conninfo", None);
            set("primary_slot_name", None);
        }
        RecoveryConf::Replica { primary_conninfo, slot } => {
            let params = match &cfg.standby_leader_recovery {
                // In a standby cluster, as in Patroni: the standby leader (following the remote primary, or with
                // no upstream when archive-only) runs with all of standby_cluster's recovery settings; a member
                // following another member gets its restore_command and archive_cleanup_command (it can fall back
                // to the primary cluster's archive); a nostream member none. They replace recovery_conf's.
                Some((remote, standby)) if !cfg.nostream => {
                    let leader = remote == primary_conninfo;
                    let mut params = cfg.recovery_params.clone();
                    let applied = standby
                        .iter()
                        .filter(|(name, _)| leader || name.as_str() != "recovery_min_apply_delay")
                        .collect::<Vec<_>>();
                    for (name, _) in &applied {
                        params.retain(|key, _| !key.eq_ignore_ascii_case(name));
                    }
                    params.extend(applied.into_iter().map(|(k, v)| (k.clone(), v.clone())));
                    params
                }
                _ => cfg.recovery_params.clone(),
            };
            for (name, value) in &params {
                set(name, Some(value.clone()));
            }
            set("primary_conninfo", Some(primary_conninfo.clone()));
            set("primary_slot_name", slot.clone());
            set("recovery_target_timeline", Some("latest".to_owned()));
        }
    }
    (params, rejected)
}

/// Writes the managed files of the data directory: `postgresql.conf` (moving an unmanaged original to
/// `postgresql.base.conf` first and including it), `pg_hba.conf` when lines are configured, and
/// `standby.signal` for a replica (removed for a primary). Returns the rejected cluster-wide values.
pub(crate) fn write_managed_conf(
    cfg: &PgConfig,
    owner: Option<&Owner>,
    recovery: &RecoveryConf,
    socket_dir: &Path,
) -> Result<Vec<String>, PgError> {
    let data_dir = &cfg.data_dir;
    let conf_path = data_dir.join("postgresql.conf");
    let base_path = data_dir.join(BASE_CONF);
    if !base_path.exists() {
        let current = match fs::read_to_string(&conf_path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_context("read", &conf_path)(e)),
        };
        if current.is_some_and(|text| !text.starts_with(MANAGED_HEADER)) {
            rename_durable(&conf_path, &base_path)?;
        }
    }
    let (params, rejected) = server_parameters(cfg, recovery, socket_dir);
    let include = base_path.exists().then_some(BASE_CONF);
    let text = conf::render_postgresql_conf(&params, include)
        .map_err(|e| PgError::Config(format!("postgresql.parameters: {e}")))?;
    write_durable(&conf_path, text.as_bytes(), 0o600, owner)?;
    if !cfg.pg_hba.is_empty() {
        let lines: Vec<&str> = cfg.pg_hba.iter().map(String::as_str).chain(LOCAL_HBA_DEFAULTS).collect();
        write_durable(&data_dir.join("pg_hba.conf"), conf::render_pg_hba(&lines).as_bytes(), 0o600, owner)?;
    }
    let signal = data_dir.join("standby.signal");
    match recovery {
        RecoveryConf::Primary => remove_durable(&signal)?,
        RecoveryConf::Replica { .. } => write_durable(&signal, b"", 0o600, owner)?,
    }
    Ok(rejected)
}

/// Renders `.pgpass` lines valid for any host, port and database (`*:*:*:user:password`), one per distinct
/// user with a password, escaping `\` and `:` as libpq expects.
pub(crate) fn render_pgpass_any_host(credentials: &[&Credentials]) -> String {
    let escape = |value: &str| value.replace('\\', "\\\\").replace(':', "\\:");
    let mut seen = Vec::new();
    let mut out = String::new();
    for creds in credentials {
        let Some(password) = creds.password.as_deref() else { continue };
        if seen.contains(&creds.username.as_str()) {
            continue;
        }
        seen.push(creds.username.as_str());
        out.push_str(&format!("*:*:*:{}:{}\n", escape(&creds.username), escape(password)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(username: &str, password: Option<&str>) -> Credentials {
        Credentials { username: username.to_owned(), password: password.map(str::to_owned) }
    }

    #[test]
    fn pgpass_covers_each_user_once_and_escapes() {
        let su = creds("postgres", Some("a:b\\c"));
        let repl = creds("replicator", Some("r"));
        let dup = creds("postgres", Some("other"));
        let nopw = creds("rewinder", None);
        assert_eq!(
            render_pgpass_any_host(&[&su, &repl, &dup, &nopw]),
            "*:*:*:postgres:a\\:b\\\\c\n*:*:*:replicator:r\n"
        );
    }

    #[test]
    fn durable_write_replaces_and_remove_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.conf");
        write_durable(&path, b"one", 0o600, None).unwrap();
        write_durable(&path, b"two", 0o640, None).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "two");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o640);
        remove_durable(&path).unwrap();
        remove_durable(&path).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn durable_write_of_a_secret_ignores_a_planted_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "keep").unwrap();
        let path = dir.path().join("pgpass");
        // Another user's symlink under the temporary name, as could be planted in /tmp.
        std::os::unix::fs::symlink(&victim, dir.path().join(".pgpass.raftgres-tmp")).unwrap();
        write_durable(&path, b"*:*:*:postgres:secret\n", 0o600, None).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(fs::metadata(&victim).unwrap().mode() & 0o777, 0o644 & !umask_bits());
        assert_eq!(fs::read_to_string(&path).unwrap(), "*:*:*:postgres:secret\n");
        assert_eq!(fs::symlink_metadata(&path).unwrap().mode() & 0o777, 0o600);
        // A stale world-readable leftover of a crash is replaced, not reused with its mode.
        fs::write(dir.path().join(".pgpass.raftgres-tmp"), "old").unwrap();
        fs::set_permissions(dir.path().join(".pgpass.raftgres-tmp"), fs::Permissions::from_mode(0o666)).unwrap();
        write_durable(&path, b"new", 0o600, None).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    }

    fn umask_bits() -> u32 {
        let probe = tempfile::tempdir().unwrap();
        let file = probe.path().join("p");
        fs::write(&file, "").unwrap();
        0o666 & !(fs::metadata(&file).unwrap().mode() & 0o777)
    }

    #[test]
    fn clear_dir_keeps_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/f"), "x").unwrap();
        fs::write(dir.path().join("g"), "y").unwrap();
        clear_dir(dir.path()).unwrap();
        assert!(is_missing_or_empty(dir.path()).unwrap());
        assert!(is_missing_or_empty(&dir.path().join("absent")).unwrap());
    }

    #[test]
    fn socket_dir_falls_back_to_tmp_for_long_or_foreign_parents() {
        let me = nix::unistd::geteuid().as_raw();
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(socket_dir(&dir.path().join("data"), 5432, me), dir.path());
        assert_eq!(socket_dir(&dir.path().join("data"), 5432, me + 1), Path::new("/tmp"));
        let long = dir.path().join("x".repeat(120)).join("data");
        assert_eq!(socket_dir(&long, 5432, me), Path::new("/tmp"));
    }
}
