//! Injects one planned fault into a running [`LocalCluster`], holds it, and heals it: signals to
//! raftgres processes and postmasters, raft links cut through the [`ProxyMesh`], clean restarts.
//!
//! It only acts; whether the cluster survived is for the checkers. A fault that cannot be injected
//! (the chosen node has no postmaster at that moment, say) is an error the caller counts as skipped.

use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::Signal;
use raft::faultproxy::LinkMode;
use raft::faultproxy::ProxyMesh;

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

/// Injects `fault`, waits its hold, heals it; returns once the fault is healed (not once the
/// cluster has recovered).
pub async fn inject(
    cluster: &LocalCluster,
    mesh: &ProxyMesh,
    fault: &Fault,
    primary: usize,
) -> anyhow::Result<Injected> {
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
    };
    Ok(res)
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

/// Undoes anything a fault may have left behind: heals every link, resumes frozen processes,
/// and starts nodes that are not running (logging those that exited on their own). Returns the
/// nodes that had exited without being asked to, with how.
pub async fn repair(cluster: &LocalCluster, mesh: &ProxyMesh) -> Vec<(usize, String)> {
    mesh.heal_all();
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
