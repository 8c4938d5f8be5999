//! `raftgres certs init`: the private CA and node certificates of the raft peer transport's
//! mutual TLS, written with private permissions, and a note of which file goes to which node.
//!
//! Generation lives in `raft::network::certs` (the demo and the tests use it too); this module
//! parses the flags and prints. It talks to no node.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use clap::Subcommand;
use raft::network::certs::InitReport;
use raft::network::certs::InitSpec;
use raft::network::certs::NodeSpec;
use raft::network::certs::DEFAULT_CA_DAYS;
use raft::network::certs::DEFAULT_NODE_DAYS;

/// `raftgres certs …`.
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create a private CA and one certificate per node for the raft peer port (mutual TLS).
    Init(InitArgs),
}

/// Flags of `certs init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Member names, comma separated (each node's `name` and its `raft.peers[].name`).
    #[arg(long, value_delimiter = ',', required = true)]
    pub nodes: Vec<String>,
    /// Extra names per node the certificate also carries: NAME=HOST_OR_IP, comma separated; repeat a
    /// NAME for several hosts (e.g. pg1=10.0.0.11,pg1=db1.example.com).
    #[arg(long, value_delimiter = ',')]
    pub hosts: Vec<String>,
    /// Output directory (created with mode 0700).
    #[arg(long)]
    pub dir: PathBuf,
    /// Lifetime of the node certificates in days.
    #[arg(long, default_value_t = DEFAULT_NODE_DAYS)]
    pub days: u32,
    /// Lifetime of the CA in days.
    #[arg(long, default_value_t = DEFAULT_CA_DAYS)]
    pub ca_days: u32,
    /// Cluster name written into the CA's name (Patroni's `scope`).
    #[arg(long, default_value = "raftgres")]
    pub scope: String,
    /// Replace existing files (every node then needs its new files).
    #[arg(long)]
    pub force: bool,
}

/// Runs a `certs` command.
pub fn run(command: CertsCommand) -> anyhow::Result<()> {
    match command {
        CertsCommand::Init(args) => {
            let spec = init_spec(&args)?;
            let report = raft::network::certs::init(&spec).context("create the peer certificates")?;
            print!("{}", render_report(&report, args.days));
            Ok(())
        }
    }
}

/// The generation request of `args`; `--hosts` entries must name a listed node.
pub fn init_spec(args: &InitArgs) -> anyhow::Result<InitSpec> {
    let mut hosts: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for entry in &args.hosts {
        let Some((name, host)) = entry.split_once('=') else {
            anyhow::bail!("--hosts: {entry:?} is not NAME=HOST_OR_IP");
        };
        anyhow::ensure!(
            args.nodes.iter().any(|n| n == name),
            "--hosts: {name:?} is not one of --nodes ({})",
            args.nodes.join(",")
        );
        anyhow::ensure!(!host.trim().is_empty(), "--hosts: {entry:?} has no host");
        hosts.entry(name).or_default().push(host.trim().to_string());
    }
    let nodes = args
        .nodes
        .iter()
        .map(|name| NodeSpec {
            name: name.trim().to_string(),
            hosts: hosts.get(name.as_str()).cloned().unwrap_or_default(),
        })
        .collect();
    Ok(InitSpec {
        cluster_name: args.scope.clone(),
        nodes,
        dir: args.dir.clone(),
        node_days: args.days,
        ca_days: args.ca_days,
        force: args.force,
    })
}

/// What was written and where each file goes.
pub fn render_report(report: &InitReport, node_days: u32) -> String {
    let mut out = String::new();
    out.push_str(&format!("CA certificate: {} (copy to every node)\n", report.ca_cert.display()));
    out.push_str(&format!(
        "CA key:         {} (keep it off the nodes; it signs new node certificates)\n",
        report.ca_key.display()
    ));
    out.push_str(&format!("Node certificates, valid for {node_days} days:\n"));
    for files in &report.nodes {
        out.push_str(&format!(
            "  {}: copy {} and {} (mode 0600) to the node, then set\n    raft.tls: {{cafile: {}, certfile: {}, keyfile: {}}}\n",
            files.name,
            files.certfile.display(),
            files.keyfile.display(),
            files.cafile.display(),
            files.certfile.display(),
            files.keyfile.display(),
        ));
    }
    out.push_str("Rotate later by writing new files in place and sending SIGHUP to raftgres.\n");
    out
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn args(dir: PathBuf, hosts: &[&str]) -> InitArgs {
        InitArgs {
            nodes: vec!["pg1".into(), "pg2".into(), "pg3".into()],
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            dir,
            days: 30,
            ca_days: 365,
            scope: "batman".into(),
            force: false,
        }
    }

    #[test]
    fn init_writes_private_files_and_refuses_to_overwrite() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("certs");
        let args = args(dir.clone(), &["pg1=10.0.0.11", "pg1=db1.example", "pg3=10.0.0.13"]);
        let spec = init_spec(&args).expect("spec");
        assert_eq!(spec.nodes[0].hosts, vec!["10.0.0.11".to_string(), "db1.example".to_string()]);
        let report = raft::network::certs::init(&spec).expect("init");
        let mode = |p: &std::path::Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&report.ca_key), 0o600);
        for files in &report.nodes {
            assert_eq!(mode(&files.keyfile), 0o600, "{}", files.keyfile.display());
            assert!(files.certfile.exists());
        }
        let text = render_report(&report, 30);
        assert!(text.contains("pg2: copy"), "{text}");
        let err = raft::network::certs::init(&spec).expect_err("second run refused").to_string();
        assert!(err.contains("already exists; pass --force"), "{err}");
        let forced = InitSpec { force: true, ..spec };
        raft::network::certs::init(&forced).expect("forced run");
    }

    #[test]
    fn hosts_must_name_a_listed_node() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let err = init_spec(&args(tmp.path().into(), &["pg9=10.0.0.9"])).expect_err("unknown node").to_string();
        assert!(err.contains("\"pg9\" is not one of --nodes"), "{err}");
        let err = init_spec(&args(tmp.path().into(), &["pg1"])).expect_err("no =").to_string();
        assert!(err.contains("is not NAME=HOST_OR_IP"), "{err}");
    }
}
