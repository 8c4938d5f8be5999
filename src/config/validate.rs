//! PURE cross-key rules of the static configuration: the peer list and this node's place in it,
//! addresses others must connect to, Raft timers, TLS prerequisites, and timing advice.
//!
//! Single keys (types, syntax, required) are checked while reading (`sections.rs`); checks
//! that look at the filesystem are in `load::check_environment`. No I/O here.

use std::time::Duration;

use raft::config::validate_peers;
use raft::RaftError;

use super::walk::invalid;
use super::Config;
use super::ConfigError;
use super::HostPort;
use super::VerifyClient;
use super::WatchdogMode;

/// Checks the rules that relate several keys; returns warnings for settings that work but are
/// probably not what the operator wants.
pub fn validate(config: &Config) -> Result<Vec<String>, ConfigError> {
    let mut warnings = Vec::new();
    check_peers(config)?;
    check_connect_addresses(config)?;
    check_raft_timers(config)?;
    check_tls(config)?;
    check_timing_rule(config)?;
    check_standby_methods(config)?;
    // Peer TLS or loopback-only plaintext (`raft.tls` / `raft.insecure`); last, so an older config
    // with another mistake hears about that one first.
    config.raft_config().validate_transport().map_err(from_raft)?;
    timing_advice(config, &mut warnings);
    Ok(warnings)
}

/// Every method `bootstrap.dcs.standby_cluster.create_replica_methods` names has its `postgresql.<name>` section
/// (or is `basebackup`): the node that bootstraps the standby cluster runs them.
fn check_standby_methods(config: &Config) -> Result<(), ConfigError> {
    let Some(standby) = config.bootstrap.dcs.view().standby_cluster.as_ref() else { return Ok(()) };
    let sections = &config.postgresql.replica_methods;
    match standby.create_replica_methods.iter().find(|m| *m != "basebackup" && !sections.contains_key(*m)) {
        None => Ok(()),
        Some(method) => Err(ConfigError::Invalid {
            path: "bootstrap.dcs.standby_cluster.create_replica_methods".to_owned(),
            message: format!("lists {method:?}; add a postgresql.{method} section with its command"),
        }),
    }
}

fn from_raft(error: RaftError) -> ConfigError {
    match error {
        RaftError::Config { path, message } => ConfigError::Invalid { path, message },
        other => invalid("raft.peers", other.to_string()),
    }
}

fn check_peers(config: &Config) -> Result<(), ConfigError> {
    let raft = &config.raft;
    validate_peers(&raft.peers).map_err(from_raft)?;
    let Some((peer_idx, peer)) = raft.peers.iter().enumerate().find(|(_, p)| p.id == raft.node_id) else {
        let ids: Vec<String> = raft.peers.iter().map(|p| p.id.to_string()).collect();
        let message = format!(
            "node id {} is not in raft.peers (ids: {}); add this node to the peer list",
            raft.node_id,
            ids.join(", ")
        );
        return Err(invalid("raft.node_id", message));
    };
    if peer.name != config.name {
        let message = format!(
            "{:?} does not match raft.peers[{peer_idx}].name {:?} of raft.node_id {}; use the same member name in both",
            config.name, peer.name, raft.node_id
        );
        return Err(invalid("name", message));
    }
    Ok(())
}

fn check_connect_addresses(config: &Config) -> Result<(), ConfigError> {
    let mut addresses: Vec<(String, HostPort)> = vec![
        ("raft.advertise".into(), config.raft.advertise.clone()),
        ("restapi.connect_address".into(), config.restapi.connect_address.clone()),
        ("postgresql.connect_address".into(), config.postgresql.connect_address.clone()),
    ];
    for (peer_idx, peer) in config.raft.peers.iter().enumerate() {
        if let Some(addr) = HostPort::parse(&peer.raft_addr) {
            addresses.push((format!("raft.peers[{peer_idx}].raft_addr"), addr));
        }
        if let Some(addr) = HostPort::parse(&peer.api_addr) {
            addresses.push((format!("raft.peers[{peer_idx}].api_addr"), addr));
        }
    }
    for (path, address) in addresses {
        if address.is_wildcard() {
            let message = format!("{address} is a wildcard address; set an address others can connect to");
            return Err(invalid(path, message));
        }
    }
    let raft_listen = &config.raft.listen;
    if raft_listen.port != 0 && *raft_listen == config.restapi.listen {
        let message = format!("{raft_listen} is also restapi.listen; the raft peer listener needs its own port");
        return Err(invalid("raft.listen", message));
    }
    Ok(())
}

fn check_raft_timers(config: &Config) -> Result<(), ConfigError> {
    let raft = &config.raft;
    if raft.heartbeat_interval.is_zero() {
        return Err(invalid("raft.heartbeat_interval", "must be greater than zero"));
    }
    if raft.election_timeout_min <= raft.heartbeat_interval {
        let message = format!(
            "{:?} must be greater than raft.heartbeat_interval ({:?})",
            raft.election_timeout_min, raft.heartbeat_interval
        );
        return Err(invalid("raft.election_timeout_min", message));
    }
    if raft.election_timeout_max <= raft.election_timeout_min {
        let message = format!(
            "{:?} must be greater than raft.election_timeout_min ({:?})",
            raft.election_timeout_max, raft.election_timeout_min
        );
        return Err(invalid("raft.election_timeout_max", message));
    }
    Ok(())
}

fn check_tls(config: &Config) -> Result<(), ConfigError> {
    let restapi = &config.restapi;
    if restapi.verify_client != VerifyClient::None && (restapi.certfile.is_none() || restapi.cafile.is_none()) {
        let message = "client certificates need HTTPS; set restapi.certfile and restapi.cafile, or verify_client: none";
        return Err(invalid("restapi.verify_client", message));
    }
    if restapi.certfile.is_none() && (restapi.keyfile.is_some() || restapi.cafile.is_some()) {
        let key = if restapi.keyfile.is_some() { "restapi.keyfile" } else { "restapi.cafile" };
        return Err(invalid(key, "has no effect without restapi.certfile; set the certificate or remove it"));
    }
    Ok(())
}

/// Warnings about the initial dynamic configuration as it meets this node's settings.
/// Patroni's rule `loop_wait + 2 * retry_timeout <= ttl`: values left to defaults are adjusted
/// (as Patroni adjusts a stored dynamic config), but a file that sets all three explicitly and
/// breaks the rule is a mistake to point out at start-up.
fn check_timing_rule(config: &Config) -> Result<(), ConfigError> {
    let document = config.bootstrap.dcs.document();
    let explicit = ["ttl", "loop_wait", "retry_timeout"].iter().all(|key| document.get(*key).is_some());
    let timing = config.bootstrap.dcs.view().timing;
    if explicit && timing.loop_wait + 2 * timing.retry_timeout > timing.ttl {
        let message = format!(
            "loop_wait + 2 * retry_timeout must not exceed ttl ({} + 2 * {} > {}); lower loop_wait or retry_timeout, or raise ttl",
            secs(timing.loop_wait),
            secs(timing.retry_timeout),
            secs(timing.ttl)
        );
        return Err(invalid("bootstrap.dcs.loop_wait", message));
    }
    Ok(())
}

fn timing_advice(config: &Config, warnings: &mut Vec<String>) {
    let (timing, timing_warnings) = config.bootstrap.dcs.timing();
    warnings.extend(timing_warnings.into_iter().map(|w| format!("bootstrap.dcs: {w}")));
    // The primary renews every loop_wait and its lease holds ttl - margin after each renewal, so
    // a Raft outage longer than ttl - margin - loop_wait can cost it its lease. Raft leadership
    // stays on the primary's node, so losing another node costs no election at all; but when the
    // Raft leader is elsewhere (for a moment after a failover, or with
    // raft.leadership_follows_primary off), an election must fit in that window.
    let election = raft::lease::longest_election(config.raft.heartbeat_interval, config.raft.election_timeout_max);
    let window = raft::lease::survivable_outage(timing.ttl, timing.loop_wait);
    if election > window {
        warnings.push(format!(
            "raft.election_timeout_max: a raft election can take {} (2 * election_timeout_max + heartbeat_interval) \
             but the primary's lease only rides out {} without a renewal (bootstrap.dcs ttl {} - max(0.1 ttl, 0.5s) \
             - loop_wait {}); raise ttl or lower election_timeout_max, or losing a raft leader that is not the \
             primary's node makes the primary demote",
            secs(election),
            secs(window),
            secs(timing.ttl),
            secs(timing.loop_wait)
        ));
    }
    let watchdog = &config.watchdog;
    if watchdog.mode != WatchdogMode::Off {
        if let Err(why) = watchdog.timeout(timing.ttl) {
            let effect = match watchdog.mode {
                WatchdogMode::Required => "this node never becomes the leader",
                _ => "the watchdog is not used",
            };
            warnings.push(format!("watchdog.safety_margin: {why} (bootstrap.dcs ttl); {effect}"));
        }
    }
}

fn secs(duration: Duration) -> String {
    format!("{}s", duration.as_secs_f64())
}
