//! `raftgres drill --crash`: finds the primary's `raftgres run` process and its postmaster on this host, and kills
//! both with SIGKILL, as a host crash would.
//!
//! Why the CLI signals processes here (house rule 5 keeps signals in `postgres::process`): a drill acts on a node
//! from outside, as `demo::procs` does for the local cluster, and only when the operator asked for `--crash`. The
//! node is found by its command line (`raftgres run -c FILE`), its configuration read with `config::load` to
//! match the member name, and the postmaster taken from `postmaster.pid` only if that process works in the data
//! directory (`demo::procs::postmaster_of`), so a stale pid file never makes the drill kill an unrelated process.

use std::path::Path;
use std::path::PathBuf;

use anyhow::Context as _;
use nix::sys::signal::Signal;

use crate::demo::procs;

/// The primary's processes on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNode {
    /// The `raftgres run` process.
    pub raftgres_pid: u32,
    /// Its configuration file.
    pub config: PathBuf,
    /// Its postmaster, when one runs.
    pub postmaster_pid: Option<u32>,
    /// Its command line when it was found, checked again before the kill (a pid may be reused meanwhile).
    cmdline: Vec<u8>,
}

/// Which node the drill wants: several clusters may run on one host with the same member names (test and demo
/// clusters call theirs node1, node2, node3), so the scope and the REST API address must match too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The cluster's scope.
    pub scope: String,
    /// The member name.
    pub name: String,
    /// The host of the REST API address the member publishes (`restapi.connect_address`).
    pub api_host: String,
    /// Its port.
    pub api_port: u16,
}

impl Identity {
    /// The identity of the member named `name` of `cluster`, from its `api_url`.
    pub fn of(cluster: &crate::cli::cluster::Cluster, name: &str) -> anyhow::Result<Identity> {
        let member = cluster.member(name).with_context(|| format!("{name} is not a member of the cluster"))?;
        let url = reqwest::Url::parse(&member.api_url)
            .with_context(|| format!("read {name}'s api_url {:?}", member.api_url))?;
        let api_host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
        let api_port = url.port_or_known_default().with_context(|| format!("{name}'s api_url names no port"))?;
        Ok(Identity { scope: cluster.scope.clone(), name: name.to_string(), api_host, api_port })
    }

    fn of_config(config: &crate::config::Config) -> Identity {
        Identity {
            scope: config.scope.clone(),
            name: config.name.clone(),
            api_host: config.restapi.connect_address.host.clone(),
            api_port: config.restapi.connect_address.port,
        }
    }
}

/// The `raftgres run` process on this host whose configuration is `member`'s (scope, name and REST API address);
/// an error saying why a crash drill is impossible otherwise.
pub fn find(member: &Identity) -> anyhow::Result<LocalNode> {
    let entries = std::fs::read_dir("/proc").context("list /proc")?;
    let mut seen = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let args: Vec<String> =
            cmdline.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into()).collect();
        let Some(config) = run_config(&args) else { continue };
        let config = match config.is_absolute() {
            true => config,
            false => match std::fs::read_link(format!("/proc/{pid}/cwd")) {
                Ok(cwd) => cwd.join(config),
                Err(_) => continue,
            },
        };
        let Ok(loaded) = crate::config::load::load(&config, &crate::config::EnvMap::new()) else { continue };
        if Identity::of_config(&loaded.config) != *member {
            seen.push(format!("{} of {}", loaded.config.name, loaded.config.scope));
            continue;
        }
        if !procs::is_alive(pid) {
            continue;
        }
        let data_dir = absolute(pid, &loaded.config.postgresql.data_dir);
        let postmaster_pid = procs::postmaster_of(&data_dir);
        return Ok(LocalNode { raftgres_pid: pid, config, postmaster_pid, cmdline });
    }
    let found = match seen.is_empty() {
        true => "none runs here".to_string(),
        false => format!("this host runs {}", seen.join(", ")),
    };
    anyhow::bail!(
        "--crash needs the primary {} (cluster {}, REST API {}:{}) to run on this host as `raftgres run -c FILE` \
         ({found}); run the drill on the primary's host, or drop --crash for a switchover",
        member.name,
        member.scope,
        member.api_host,
        member.api_port
    )
}

/// SIGKILL to the node's raftgres, then to its postmaster's process group (the backends with it).
pub fn kill(node: &LocalNode) -> anyhow::Result<()> {
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", node.raftgres_pid)).unwrap_or_default();
    anyhow::ensure!(
        cmdline == node.cmdline,
        "raftgres (pid {}) is gone or another process took its pid; nothing was killed",
        node.raftgres_pid
    );
    procs::send(node.raftgres_pid, Signal::SIGKILL)
        .with_context(|| format!("kill raftgres (pid {})", node.raftgres_pid))?;
    if let Some(pid) = node.postmaster_pid {
        procs::send_group(pid, Signal::SIGKILL).with_context(|| format!("kill the postmaster (pid {pid})"))?;
    }
    Ok(())
}

/// A path of the process's configuration, relative to its working directory when it is not absolute.
fn absolute(pid: u32, path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    match std::fs::read_link(format!("/proc/{pid}/cwd")) {
        Ok(cwd) => cwd.join(path),
        Err(_) => path.to_path_buf(),
    }
}

/// PURE: the configuration file of a `raftgres run` command line (`raftgres [-c FILE] run [FILE | -c FILE]`), `None`
/// for any other command line.
pub fn run_config(args: &[String]) -> Option<PathBuf> {
    let program_idx = args.iter().position(|arg| {
        Path::new(arg).file_name().and_then(|name| name.to_str()).is_some_and(|name| name == "raftgres")
    })?;
    let rest = &args[program_idx + 1..];
    let mut run = false;
    let mut config = None;
    let mut idx = 0;
    while let Some(arg) = rest.get(idx) {
        match arg.as_str() {
            "-c" | "--config-file" | "--config" => {
                config = rest.get(idx + 1).cloned();
                idx += 1;
            }
            "run" if !run => run = true,
            other => {
                if let Some(value) = ["--config-file=", "--config="].iter().find_map(|p| other.strip_prefix(p)) {
                    config = Some(value.to_string());
                } else if run && !other.starts_with('-') && config.is_none() {
                    config = Some(other.to_string());
                } else if !run && !other.starts_with('-') {
                    // Another command (`raftgres guard`, `raftgres list`, …).
                    return None;
                }
            }
        }
        idx += 1;
    }
    config.filter(|_| run).map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(cmdline: &str, expected: Option<&str>) {
        let args: Vec<String> = cmdline.split_whitespace().map(String::from).collect();
        assert_eq!(run_config(&args), expected.map(PathBuf::from), "{cmdline}");
    }

    #[test]
    fn run_command_lines_name_their_configuration() {
        check("/usr/bin/raftgres run -c /etc/raftgres.yml", Some("/etc/raftgres.yml"));
        check("target/debug/raftgres -c node.yml run", Some("node.yml"));
        check("raftgres run /etc/raftgres.yml", Some("/etc/raftgres.yml"));
        check("raftgres run --config-file=/etc/a.yml", Some("/etc/a.yml"));
        check("chrt -f 10 /opt/raftgres run -c /etc/a.yml", Some("/etc/a.yml"));
        check("raftgres run", None);
        check("raftgres guard --file /x --parent 1", None);
        check("raftgres -c /etc/a.yml list", None);
        check("postgres -D /data", None);
        check("raftgres-exporter run -c /etc/a.yml", None);
    }
}
