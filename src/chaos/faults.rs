//! Injects one planned fault into a running [`LocalCluster`], holds it, and heals it: signals to
//! raftgres processes and postmasters, raft links cut or slowed through the [`ProxyMesh`], clean
//! restarts, whole-node network faults in the [`Lab`], CPU starvation through [`Cgroups`], full
//! disks on the node's [`Volumes`].
//!
//! It only acts; whether the cluster survived is for the checkers. A fault that cannot be injected
//! (the chosen node has no postmaster at that moment, say) is an error the caller counts as skipped.

use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::Signal;
use raft::faultproxy::LinkMode;
use raft::faultproxy::ProxyMesh;

use super::netns::Cut;
use super::netns::Lab;
use super::resources::Cgroups;
use super::resources::Volume;
use super::resources::Volumes;
use super::schedule::Fault;
use super::schedule::FaultKind;
use super::schedule::Target;
use crate::demo::cluster::LocalCluster;
use crate::demo::procs;

/// What was done, for the record.
#[derive(Debug, Clone)]
pub struct Injected {
    /// The nodes hit (1-based).
    pub nodes: Vec<usize>,
    /// A short description.
    pub detail: String,
}

/// The node a fault aimed at `target` hits, given the current primary.
pub fn resolve(fault: &Fault, primary: usize, n_nodes: usize) -> usize {
    match fault.target {
        Target::Primary => primary,
        Target::Replica => {
            let replicas: Vec<usize> = (1..=n_nodes).filter(|idx| *idx != primary).collect();
            replicas.get(fault.choose(replicas.len())).copied().unwrap_or(primary)
        }
    }
}

/// What faults are made with; the optional parts exist only where the machine offers them.
#[derive(Clone, Copy)]
pub struct Tools<'a> {
    /// The nodes.
    pub cluster: &'a LocalCluster,
    /// The proxies on the Raft links.
    pub mesh: &'a ProxyMesh,
    /// The network namespaces (`--net netns`).
    pub lab: Option<&'a Lab>,
    /// The CPU cgroups.
    pub cgroups: Option<&'a Cgroups>,
    /// The nodes' own filesystems.
    pub volumes: Option<&'a Volumes>,
    /// SQL access from the observer's address (set once the cluster runs).
    pub observer: Option<&'a super::net::Endpoints>,
}

/// Injects `fault`, waits its hold, heals it; returns once the fault is healed (not once the
/// cluster has recovered).
pub async fn inject(tools: Tools<'_>, fault: &Fault, primary: usize) -> anyhow::Result<Injected> {
    let Tools { cluster, mesh, .. } = tools;
    let node = resolve(fault, primary, cluster.n_nodes());
    let name = format!("node{node}");
    let one = |detail: String| Injected { nodes: vec![node], detail };
    let hold = fault.hold;
    let res = match fault.kind {
        FaultKind::KillRaftgres => {
            cluster.kill_node(node).await?;
            tokio::time::sleep(hold).await;
            cluster.start_node(node)?;
            one(format!("{name}: raftgres SIGKILL, down {:.1} s", hold.as_secs_f64()))
        }
        FaultKind::KillPostmaster => {
            let pid = cluster.kill_postmaster(node)?;
            tokio::time::sleep(hold).await;
            one(format!("{name}: postmaster {pid} SIGKILL"))
        }
        FaultKind::KillBoth => {
            cluster.kill_node(node).await?;
            let killed = cluster.kill_postmaster(node).map_or("none running".to_string(), |pid| pid.to_string());
            tokio::time::sleep(hold).await;
            cluster.start_node(node)?;
            one(format!("{name}: raftgres and postmaster ({killed}) SIGKILL, down {:.1} s", hold.as_secs_f64()))
        }
        FaultKind::FreezeRaftgres => {
            cluster.sigstop_node(node)?;
            tokio::time::sleep(hold).await;
            cluster.sigcont_node(node)?;
            one(format!("{name}: raftgres frozen {:.1} s", hold.as_secs_f64()))
        }
        FaultKind::FreezePostmaster => {
            let data_dir = cluster.node(node).data_dir();
            let pid = procs::postmaster_of(&data_dir).with_context(|| format!("{name} has no running postmaster"))?;
            procs::send(pid, Signal::SIGSTOP)?;
            tokio::time::sleep(hold).await;
            procs::send(pid, Signal::SIGCONT)?;
            one(format!("{name}: postmaster {pid} frozen {:.1} s", hold.as_secs_f64()))
        }
        FaultKind::IsolateRaft => {
            mesh.isolate(node as u64, LinkMode::Blackhole);
            tokio::time::sleep(hold).await;
            mesh.heal_all();
            one(format!("{name}: raft links cut both ways {:.1} s", hold.as_secs_f64()))
        }
        FaultKind::OneWayRaft => {
            let outbound = fault.outbound();
            for other in (1..=cluster.n_nodes()).filter(|other| *other != node) {
                let (from, to) = if outbound { (node, other) } else { (other, node) };
                mesh.set_link(from as u64, to as u64, LinkMode::Blackhole);
            }
            tokio::time::sleep(hold).await;
            mesh.heal_all();
            let way = if outbound { "outbound" } else { "inbound" };
            one(format!("{name}: raft links cut {way} {:.1} s", hold.as_secs_f64()))
        }
        FaultKind::CleanRestart => {
            cluster.stop_node(node).await?;
            tokio::time::sleep(hold).await;
            cluster.start_node(node)?;
            one(format!("{name}: SIGTERM, restarted after {:.1} s", hold.as_secs_f64()))
        }
        FaultKind::RestartAll => restart_all(cluster, hold).await?,
        FaultKind::SlowRaft => {
            let delay = Duration::from_millis(fault.param(20, 500));
            mesh.isolate(node as u64, LinkMode::Delay(delay));
            tokio::time::sleep(hold).await;
            mesh.heal_all();
            one(format!("{name}: raft links delayed {} ms for {:.1} s", delay.as_millis(), hold.as_secs_f64()))
        }
        FaultKind::StarveCpu => {
            let cgroups = tools.cgroups.context("no cgroup CPU controller")?;
            let which = fault.param(0, 2);
            let postmaster = procs::postmaster_of(&cluster.node(node).data_dir());
            let pids = super::resources::node_pids(cluster.pid(node), postmaster, which);
            anyhow::ensure!(!pids.is_empty(), "{name} has no process to starve");
            cgroups.starve(node, &pids)?;
            tokio::time::sleep(hold).await;
            cgroups.release(node)?;
            let what = ["raftgres", "PostgreSQL", "raftgres and PostgreSQL"][which as usize];
            one(format!("{name}: {what} starved to 2 % CPU for {:.1} s", hold.as_secs_f64()))
        }
        FaultKind::DiskFullPg | FaultKind::DiskFullRaft => {
            anyhow::ensure!(tools.volumes.is_some(), "the nodes have no filesystems of their own");
            let (volume, what) = match fault.kind {
                FaultKind::DiskFullPg => (Volume::Postgres, "PostgreSQL data"),
                _ => (Volume::Raft, "Raft"),
            };
            let filled = Volumes::fill(cluster, node, volume);
            // Half the time on PostgreSQL's disk, make the WAL grow at once (a switch to a new segment and a
            // commit): a primary then PANICs as when pg_wal fills up, rather than only failing to extend tables.
            let wal = volume == Volume::Postgres && filled.is_ok() && fault.param(0, 1) == 1;
            if let (true, Some(observer)) = (wal, tools.observer) {
                force_wal_segment(observer, node).await;
            }
            tokio::time::sleep(hold).await;
            Volumes::free(cluster, node, volume)?;
            let filled = filled?;
            let what = if wal { "PostgreSQL data and WAL" } else { what };
            one(format!("{name}: {what} disk full ({} MiB filled) for {:.1} s", filled >> 20, hold.as_secs_f64()))
        }
        FaultKind::IsolateNode | FaultKind::SplitNode | FaultKind::OneWayNode | FaultKind::LossyNode => {
            let lab = tools.lab.context("the nodes are not in network namespaces (--net netns)")?;
            let (cut, what) = match fault.kind {
                FaultKind::IsolateNode => (Cut::Isolate, "cut off from peers and clients".to_string()),
                FaultKind::SplitNode => {
                    (Cut::SplitWithClients, "cut off from its peers, clients still reach it".to_string())
                }
                FaultKind::OneWayNode if fault.outbound() => {
                    (Cut::OutboundToPeers, "cannot send to its peers".to_string())
                }
                FaultKind::OneWayNode => (Cut::InboundFromPeers, "hears nothing from its peers".to_string()),
                _ => {
                    let percent = fault.param(10, 50) as u8;
                    (Cut::Loss(percent), format!("losing {percent} % of its packets"))
                }
            };
            let cut_res = lab.cut(node, cut);
            tokio::time::sleep(hold).await;
            lab.heal(node)?;
            cut_res?;
            one(format!("{name}: {what} for {:.1} s", hold.as_secs_f64()))
        }
        FaultKind::FlapNode => {
            let lab = tools.lab.context("the nodes are not in network namespaces (--net netns)")?;
            let mut rng = super::schedule::Rng::new(fault.pick);
            let until = tokio::time::Instant::now() + hold;
            let mut flaps = 0;
            while tokio::time::Instant::now() < until {
                let down = rng.between(Duration::from_millis(300), Duration::from_secs(2));
                let up = rng.between(Duration::from_millis(300), Duration::from_secs(2));
                let cut_res = lab.cut(node, Cut::Isolate);
                tokio::time::sleep(down).await;
                lab.heal(node)?;
                cut_res?;
                flaps += 1;
                tokio::time::sleep(up).await;
            }
            one(format!("{name}: network flapped {flaps} times over {:.1} s", hold.as_secs_f64()))
        }
    };
    Ok(res)
}

/// On node `node`, if it is a primary: a switch to a new WAL segment and a commit, twice, so PostgreSQL has to
/// create a segment (on a full disk it cannot, and PANICs). Best effort: a replica refuses, which is fine.
async fn force_wal_segment(observer: &super::net::Endpoints, node: usize) {
    let Some(client) = observer.connect(node).await else { return };
    for _ in 0..2 {
        let statements = "SELECT pg_switch_wal(); SELECT txid_current();";
        if tokio::time::timeout(Duration::from_secs(3), client.batch_execute(statements)).await.is_err() {
            return;
        }
    }
}

/// SIGTERM to every node at once, then every node started again.
async fn restart_all(cluster: &LocalCluster, hold: Duration) -> anyhow::Result<Injected> {
    let stops = (1..=cluster.n_nodes()).map(|idx| cluster.stop_node(idx));
    for stopped in join_all(stops).await {
        stopped?;
    }
    tokio::time::sleep(hold).await;
    cluster.start_all()?;
    Ok(Injected {
        nodes: (1..=cluster.n_nodes()).collect(),
        detail: format!("all nodes SIGTERM, restarted after {:.1} s", hold.as_secs_f64()),
    })
}

/// Polls every future to completion concurrently (no extra crate for three futures).
async fn join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in pinned.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// Undoes anything a fault may have left behind: heals every link and namespace, lifts CPU limits,
/// frees the disks, resumes frozen processes, and starts nodes that are not running (logging
/// those that exited on their own). Returns the nodes that had exited without being asked to, with how.
pub async fn repair(tools: Tools<'_>) -> Vec<(usize, String)> {
    let Tools { cluster, mesh, lab, cgroups, volumes, .. } = tools;
    mesh.heal_all();
    if let Some(lab) = lab {
        lab.heal_all();
    }
    if let Some(cgroups) = cgroups {
        cgroups.release_all(cluster.n_nodes());
    }
    if let Some(volumes) = volumes {
        volumes.free_all(cluster);
    }
    let mut exited = Vec::new();
    for node in 1..=cluster.n_nodes() {
        if let Some(pid) = procs::postmaster_of(&cluster.node(node).data_dir()) {
            let _ = procs::send(pid, Signal::SIGCONT);
        }
        if cluster.is_running(node) {
            let _ = cluster.sigcont_node(node);
            continue;
        }
        if let Some(status) = cluster.take_exit(node) {
            exited.push((node, status.to_string()));
        }
        if let Err(e) = cluster.start_node(node) {
            tracing::warn!(node, "failed to {e:#}");
        }
    }
    exited
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(target: Target, pick: u64) -> Fault {
        Fault { kind: FaultKind::KillRaftgres, target, pick, hold: Duration::ZERO, rest: Duration::ZERO }
    }

    #[test]
    fn targets_resolve_against_the_primary() {
        assert_eq!(resolve(&fault(Target::Primary, 5), 2, 3), 2);
        assert_eq!(resolve(&fault(Target::Replica, 0), 2, 3), 1);
        assert_eq!(resolve(&fault(Target::Replica, 2), 2, 3), 3);
    }
}
