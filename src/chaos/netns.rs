//! `raftgres chaos --net netns`: every node (raftgres, its PostgreSQL, its REST API) in a Linux
//! network namespace of its own, with its own address on a bridge, so a fault cuts what a failed
//! switch or a pulled cable cuts: Raft, replication and clients together.
//!
//! The lab is made with iproute2 (`ip netns`, a bridge, one veth pair per node) and its faults with
//! iptables rules inside the node's namespace (root only). The harness stays in the host namespace
//! and reaches the nodes over the bridge from three addresses of its own, so a rule can tell them
//! apart:
//! - [`Lab::gateway`] (`.254`): the Raft fault proxies listen and dial from here;
//! - [`Lab::clients`] (`.253`): the workload's clients (and HAProxy), the application;
//! - [`Lab::observer`] (`.250`): the sampler's write probes and lease reads, and the final checks.
//!   No fault ever cuts it: it is the measurement, the way a test's own wire would be, and it is
//!   what catches a primary that still accepts writes on the minority side.
//!
//! This machine kind's kernel has no `tc netem`, so delay stays in the userspace proxies on the Raft
//! links and loss is an iptables `statistic` match, which the kernel has.

use std::net::IpAddr;
use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::Context;

/// The first three octets of the lab network are `10.213.<slot>`.
const NET_PREFIX: [u8; 2] = [10, 213];
/// How many labs may exist at once on one machine (one per concurrent chaos run).
const MAX_SLOTS: u8 = 64;
/// Last octet of the host's addresses on the bridge.
const GATEWAY: u8 = 254;
const CLIENTS: u8 = 253;
const OBSERVER: u8 = 250;

/// How a node is cut off from the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Everything to and from the node dropped: peers and clients (the clients are on the majority side).
    Isolate,
    /// The node cut from its peers only; the clients still reach it (they are on the minority side).
    SplitWithClients,
    /// The node can send nothing to its peers (it still hears them).
    OutboundToPeers,
    /// The node hears nothing from its peers (it can still send).
    InboundFromPeers,
    /// A share (percent) of every packet to and from the node dropped, both ways.
    Loss(u8),
}

/// A bridge and one namespace per node; removed on [`Lab::destroy`] (and on drop, best effort).
#[derive(Debug)]
pub struct Lab {
    slot: u8,
    n_nodes: usize,
    /// iptables binaries whose FORWARD chain got our accept rule (the host firewall may drop bridged traffic).
    forward_rules: Vec<String>,
    destroyed: bool,
}

impl Lab {
    /// Whether namespaces can be made here: root, `ip` and `iptables` present.
    pub fn available() -> Result<(), String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("network namespaces need root".to_string());
        }
        for tool in ["ip", "iptables"] {
            if crate::config::load::find_bin_dir(tool, std::env::var_os("PATH").as_deref()).is_none() {
                return Err(format!("{tool} is not installed (iproute2, iptables)"));
            }
        }
        Ok(())
    }

    /// Creates the bridge and `n_nodes` namespaces on the first free slot.
    pub fn create(n_nodes: usize) -> anyhow::Result<Lab> {
        Lab::available().map_err(anyhow::Error::msg)?;
        anyhow::ensure!(n_nodes < usize::from(OBSERVER), "too many nodes for one lab");
        let mut slot = None;
        for candidate in 0..MAX_SLOTS {
            // Creating the bridge claims the slot: a second run finds it taken.
            if run(&["ip", "link", "add", &bridge_name(candidate), "type", "bridge"]).is_ok() {
                slot = Some(candidate);
                break;
            }
        }
        let slot =
            slot.context("no free network lab slot (64 in use?); remove stale ones with `ip link del rgcNbr`")?;
        let mut lab = Lab { slot, n_nodes, forward_rules: Vec::new(), destroyed: false };
        lab.build().with_context(|| format!("build the network lab {}", bridge_name(slot)))?;
        Ok(lab)
    }

    fn build(&mut self) -> anyhow::Result<()> {
        let bridge = bridge_name(self.slot);
        for octet in [GATEWAY, CLIENTS, OBSERVER] {
            run(&["ip", "addr", "add", &format!("{}/24", self.addr(octet)), "dev", &bridge])?;
        }
        run(&["ip", "link", "set", &bridge, "up"])?;
        // With br_netfilter loaded, bridged packets pass the host's FORWARD chain, which Docker sets to DROP.
        for tool in ["iptables", "iptables-legacy"] {
            let rule = ["-i", &bridge, "-o", &bridge, "-j", "ACCEPT"];
            let mut insert = vec![tool, "-w", "-I", "FORWARD", "1"];
            insert.extend(rule);
            if run(&insert).is_ok() {
                self.forward_rules.push(tool.to_string());
            }
        }
        for node in 1..=self.n_nodes {
            let ns = self.namespace(node);
            let veth = veth_name(self.slot, node);
            // A veth of an earlier lab in this slot may outlive its namespace for a moment (removal is asynchronous).
            let _ = run(&["ip", "link", "del", &veth]);
            run(&["ip", "netns", "add", &ns])?;
            run(&["ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            run(&["ip", "link", "set", &veth, "master", &bridge, "up"])?;
            let addr = format!("{}/24", self.node_addr(node));
            run(&["ip", "netns", "exec", &ns, "ip", "addr", "add", &addr, "dev", "eth0"])?;
            run(&["ip", "netns", "exec", &ns, "ip", "link", "set", "eth0", "up"])?;
            run(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    fn addr(&self, octet: u8) -> Ipv4Addr {
        Ipv4Addr::new(NET_PREFIX[0], NET_PREFIX[1], self.slot, octet)
    }

    /// Node `node`'s address (1-based: `10.213.<slot>.<node>`).
    pub fn node_addr(&self, node: usize) -> Ipv4Addr {
        self.addr(u8::try_from(node).unwrap_or(u8::MAX))
    }

    /// The lab network, for `pg_hba.conf`.
    pub fn network(&self) -> String {
        format!("{}.{}.{}.0/24", NET_PREFIX[0], NET_PREFIX[1], self.slot)
    }

    /// The host's address the Raft proxies use.
    pub fn gateway(&self) -> IpAddr {
        IpAddr::V4(self.addr(GATEWAY))
    }

    /// The address the application's clients connect from.
    pub fn clients(&self) -> IpAddr {
        IpAddr::V4(self.addr(CLIENTS))
    }

    /// The address the sampler and the checks connect from; never cut.
    pub fn observer(&self) -> IpAddr {
        IpAddr::V4(self.addr(OBSERVER))
    }

    /// Node `node`'s namespace name.
    pub fn namespace(&self, node: usize) -> String {
        format!("rgc{}n{node}", self.slot)
    }

    /// The command a node runs under: `ip netns exec <namespace>`.
    pub fn wrapper(&self, node: usize) -> Vec<String> {
        vec!["ip".to_string(), "netns".to_string(), "exec".to_string(), self.namespace(node)]
    }

    /// Applies `cut` to node `node` (on top of what it already has).
    pub fn cut(&self, node: usize, cut: Cut) -> anyhow::Result<()> {
        for rule in
            rules(cut, node, self.n_nodes, |octet| self.addr(octet).to_string(), |n| self.node_addr(n).to_string())
        {
            let mut args = vec!["ip", "netns", "exec"];
            let ns = self.namespace(node);
            args.push(&ns);
            args.extend(["iptables", "-w"]);
            args.extend(rule.iter().map(String::as_str));
            run(&args).with_context(|| format!("cut node{node} ({cut:?})"))?;
        }
        Ok(())
    }

    /// Removes every rule from node `node`'s namespace.
    pub fn heal(&self, node: usize) -> anyhow::Result<()> {
        let ns = self.namespace(node);
        run(&["ip", "netns", "exec", &ns, "iptables", "-w", "-F"]).with_context(|| format!("heal node{node}"))
    }

    /// Heals every node; logs what fails.
    pub fn heal_all(&self) {
        for node in 1..=self.n_nodes {
            if let Err(e) = self.heal(node) {
                tracing::warn!("failed to {e:#}");
            }
        }
    }

    /// Removes the namespaces, the bridge and the FORWARD rules. The nodes must be stopped first:
    /// a process in a removed namespace keeps running, cut off from everything.
    pub fn destroy(mut self) {
        self.teardown();
    }

    fn teardown(&mut self) {
        if std::mem::replace(&mut self.destroyed, true) {
            return;
        }
        let bridge = bridge_name(self.slot);
        for node in 1..=self.n_nodes {
            // The host side first, synchronously: a namespace's own interfaces go away in the background.
            let _ = run(&["ip", "link", "del", &veth_name(self.slot, node)]);
            let _ = run(&["ip", "netns", "del", &self.namespace(node)]);
        }
        for tool in &self.forward_rules {
            let _ = run(&[tool, "-w", "-D", "FORWARD", "-i", &bridge, "-o", &bridge, "-j", "ACCEPT"]);
        }
        let _ = run(&["ip", "link", "del", &bridge]);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn veth_name(slot: u8, node: usize) -> String {
    format!("rgc{slot}v{node}")
}

fn bridge_name(slot: u8) -> String {
    format!("rgc{slot}br")
}

/// PURE: the iptables arguments (after `iptables -w`) that make `cut` on node `node`; `host(octet)`
/// gives the host's addresses, `peer(n)` the other nodes'. Loopback and the observer always pass.
fn rules(
    cut: Cut,
    node: usize,
    n_nodes: usize,
    host: impl Fn(u8) -> String,
    peer: impl Fn(usize) -> String,
) -> Vec<Vec<String>> {
    let args = |items: &[&str]| items.iter().map(|item| item.to_string()).collect::<Vec<String>>();
    let observer = host(OBSERVER);
    let keep = |rules: &mut Vec<Vec<String>>, also_clients: bool| {
        let mut passing = vec![observer.clone()];
        if also_clients {
            passing.push(host(CLIENTS));
        }
        rules.push(args(&["-A", "INPUT", "-i", "lo", "-j", "ACCEPT"]));
        rules.push(args(&["-A", "OUTPUT", "-o", "lo", "-j", "ACCEPT"]));
        for addr in passing {
            rules.push(args(&["-A", "INPUT", "-s", &addr, "-j", "ACCEPT"]));
            rules.push(args(&["-A", "OUTPUT", "-d", &addr, "-j", "ACCEPT"]));
        }
        rules.push(args(&["-A", "INPUT", "-j", "DROP"]));
        rules.push(args(&["-A", "OUTPUT", "-j", "DROP"]));
    };
    // The peers: every other node, and the gateway the Raft proxies use.
    let peers: Vec<String> =
        (1..=n_nodes).filter(|other| *other != node).map(&peer).chain(std::iter::once(host(GATEWAY))).collect();
    let mut rules = Vec::new();
    match cut {
        Cut::Isolate => keep(&mut rules, false),
        Cut::SplitWithClients => keep(&mut rules, true),
        Cut::OutboundToPeers => {
            for addr in &peers {
                rules.push(args(&["-A", "OUTPUT", "-d", addr, "-j", "DROP"]));
            }
        }
        Cut::InboundFromPeers => {
            for addr in &peers {
                rules.push(args(&["-A", "INPUT", "-s", addr, "-j", "DROP"]));
            }
        }
        Cut::Loss(percent) => {
            let probability = format!("{:.2}", f64::from(percent.min(100)) / 100.0);
            // A lossy link, not a lossy host: traffic inside the node (raftgres to its own PostgreSQL, to its own
            // address) goes over `lo` and loses nothing.
            for (chain, dir, lo) in [("INPUT", "-s", "-i"), ("OUTPUT", "-d", "-o")] {
                rules.push(args(&["-A", chain, lo, "lo", "-j", "ACCEPT"]));
                rules.push(args(&["-A", chain, dir, &observer, "-j", "ACCEPT"]));
                let drop =
                    ["-A", chain, "-m", "statistic", "--mode", "random", "--probability", &probability, "-j", "DROP"];
                rules.push(args(&drop));
            }
        }
    }
    rules
}

/// Runs `args` (program first); an error with its stderr when it fails.
fn run(args: &[&str]) -> anyhow::Result<()> {
    let (program, rest) = args.split_first().context("an empty command")?;
    super::resources::run(Command::new(program).args(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules_for(cut: Cut) -> Vec<String> {
        rules(cut, 2, 3, |octet| format!("10.0.0.{octet}"), |n| format!("10.0.0.{n}"))
            .into_iter()
            .map(|rule| rule.join(" "))
            .collect()
    }

    #[test]
    fn isolation_keeps_only_loopback_and_the_observer() {
        let rules = rules_for(Cut::Isolate);
        assert!(rules.contains(&"-A INPUT -s 10.0.0.250 -j ACCEPT".to_string()), "{rules:?}");
        assert!(!rules.iter().any(|rule| rule.contains("10.0.0.253")), "{rules:?}");
        assert_eq!(rules.last().map(String::as_str), Some("-A OUTPUT -j DROP"));
    }

    #[test]
    fn a_split_with_the_clients_lets_them_through() {
        let rules = rules_for(Cut::SplitWithClients);
        assert!(rules.contains(&"-A INPUT -s 10.0.0.253 -j ACCEPT".to_string()), "{rules:?}");
        assert!(rules.contains(&"-A OUTPUT -d 10.0.0.253 -j ACCEPT".to_string()), "{rules:?}");
    }

    #[test]
    fn one_way_cuts_name_every_peer_and_the_proxies() {
        let rules = rules_for(Cut::OutboundToPeers);
        assert_eq!(
            rules,
            ["-A OUTPUT -d 10.0.0.1 -j DROP", "-A OUTPUT -d 10.0.0.3 -j DROP", "-A OUTPUT -d 10.0.0.254 -j DROP"]
        );
        assert!(rules_for(Cut::InboundFromPeers).iter().all(|rule| rule.starts_with("-A INPUT -s")));
    }

    #[test]
    fn loss_spares_loopback_and_the_observer() {
        let rules = rules_for(Cut::Loss(25));
        assert_eq!(rules[0], "-A INPUT -i lo -j ACCEPT");
        assert_eq!(rules[1], "-A INPUT -s 10.0.0.250 -j ACCEPT");
        assert!(rules[2].ends_with("--probability 0.25 -j DROP"), "{rules:?}");
        assert_eq!(rules[3], "-A OUTPUT -o lo -j ACCEPT");
    }
}
