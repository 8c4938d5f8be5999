//! PURE: Patroni's validation of the action endpoints, returning `(code, text)` refusals with Patroni's exact
//! texts: `POST /switchover` and `/failover` (contract §1.8 rows 1-5, including the 412 pre-check over the
//! cluster view and the candidates' `GET /patroni` answers) and the filters of `POST /restart` (§1.9).
//!
//! No I/O, no clock reads: `now` is a parameter and the candidates' status documents are fetched by the caller.

use chrono::DateTime;
use chrono::FixedOffset;
use chrono::NaiveDate;
use chrono::NaiveDateTime;
use chrono::Utc;
use serde_json::Map;
use serde_json::Value;

use crate::config::SynchronousMode;
use crate::dcs::view::ClusterView;
use crate::status::Role;

/// A refused request: the HTTP code and Patroni's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status code.
    pub code: u16,
    /// Patroni's body text.
    pub text: String,
}

impl Refusal {
    /// A refusal with `code` and `text`.
    pub fn new(code: u16, text: impl Into<String>) -> Refusal {
        Refusal { code, text: text.into() }
    }
}

/// Which endpoint was called (a `/failover` naming a leader turns into a switchover).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `POST /switchover`: from a named leader.
    Switchover,
    /// `POST /failover`: to a named candidate.
    Failover,
}

impl Action {
    /// `switchover` or `failover`, as in Patroni's messages.
    pub fn word(self) -> &'static str {
        match self {
            Action::Switchover => "switchover",
            Action::Failover => "failover",
        }
    }

    /// `Switchover` or `Failover`.
    pub fn title(self) -> &'static str {
        match self {
            Action::Switchover => "Switchover",
            Action::Failover => "Failover",
        }
    }

    /// `switched` or `failed` (Patroni's `action[:-4] + 'ed'`).
    pub fn past(self) -> &'static str {
        match self {
            Action::Switchover => "switched",
            Action::Failover => "failed",
        }
    }
}

/// The body of `POST /switchover` or `/failover`, with Python's truthiness applied (an empty string is absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailoverRequest {
    /// `leader`.
    pub leader: Option<String>,
    /// `candidate`, else `member`.
    pub candidate: Option<String>,
    /// `scheduled_at`, unparsed.
    pub scheduled_at: Option<String>,
}

impl FailoverRequest {
    /// Reads the fields of a JSON object body.
    pub fn from_json(body: &Map<String, Value>) -> FailoverRequest {
        FailoverRequest {
            leader: truthy_text(body.get("leader")),
            candidate: truthy_text(body.get("candidate")).or_else(|| truthy_text(body.get("member"))),
            scheduled_at: truthy_text(body.get("scheduled_at")),
        }
    }
}

/// A request that passed the body checks (rows 1-4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The action after the `/failover`-with-leader rewrite.
    pub action: Action,
    /// The named leader.
    pub leader: Option<String>,
    /// The named candidate.
    pub candidate: Option<String>,
    /// When to run it; `None` means now.
    pub scheduled_at: Option<DateTime<FixedOffset>>,
}

/// Rows 1-4 of §1.8, in Patroni's order: what the body alone (plus pause and the clock) can refuse.
pub fn check_failover_request(
    action: Action,
    req: &FailoverRequest,
    paused: bool,
    now: DateTime<Utc>,
) -> Result<Accepted, Refusal> {
    match action {
        Action::Failover if req.candidate.is_none() => {
            return Err(Refusal::new(400, "Failover could be performed only to a specific candidate"));
        }
        Action::Switchover if req.leader.is_none() => {
            return Err(Refusal::new(400, "Switchover could be performed only from a specific leader"));
        }
        _ => {}
    }
    let scheduled_at = match &req.scheduled_at {
        None => None,
        Some(_) if action == Action::Failover => return Err(Refusal::new(400, "Failover can't be scheduled")),
        Some(_) if paused => return Err(Refusal::new(400, "Can't schedule switchover in the paused state")),
        Some(text) => Some(parse_schedule(text, action.word(), now)?),
    };
    if paused && req.candidate.is_none() {
        return Err(Refusal::new(400, "Switchover is possible only to a specific candidate in a paused state"));
    }
    // Patroni: "received failover request with leader specified - performing switchover instead".
    let action = if req.leader.is_some() { Action::Switchover } else { action };
    if req.leader == req.candidate {
        return Err(Refusal::new(400, "Switchover target and source are the same"));
    }
    Ok(Accepted { action, leader: req.leader.clone(), candidate: req.candidate.clone(), scheduled_at })
}

/// Patroni's `parse_schedule`: a timestamp with a time zone, not in the past.
pub fn parse_schedule(text: &str, action: &str, now: DateTime<Utc>) -> Result<DateTime<FixedOffset>, Refusal> {
    match parse_timestamp(text) {
        Timestamp::WithZone(at) if at < now => Err(Refusal::new(422, format!("Cannot schedule {action} in the past"))),
        Timestamp::WithZone(at) => Ok(at),
        Timestamp::WithoutZone => {
            Err(Refusal::new(400, format!("Timezone information is mandatory for the scheduled {action}")))
        }
        Timestamp::Invalid => Err(Refusal::new(
            422,
            "Unable to parse scheduled timestamp. It should be in an unambiguous format, e.g. ISO 8601",
        )),
    }
}

/// What a timestamp text turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timestamp {
    /// A point in time.
    WithZone(DateTime<FixedOffset>),
    /// A date and time without an offset.
    WithoutZone,
    /// Not a timestamp.
    Invalid,
}

/// ISO 8601 / RFC 3339 timestamps with `T` or a space, optional seconds and fractions, and an offset written
/// `Z`, `+HH`, `+HHMM` or `+HH:MM` (what `dateutil.parser.parse` accepts from patronictl and curl users).
pub fn parse_timestamp(text: &str) -> Timestamp {
    let text = text.trim();
    let normalized = match text.strip_suffix(['Z', 'z']) {
        Some(rest) => format!("{rest}+00:00"),
        None => text.to_string(),
    };
    const ZONED: [&str; 4] =
        ["%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M%#z", "%Y-%m-%d %H:%M%#z"];
    for format in ZONED {
        if let Ok(at) = DateTime::parse_from_str(&normalized, format) {
            return Timestamp::WithZone(at);
        }
    }
    const NAIVE: [&str; 4] = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"];
    let naive = NAIVE.iter().any(|format| NaiveDateTime::parse_from_str(text, format).is_ok())
        || NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok();
    if naive {
        Timestamp::WithoutZone
    } else {
        Timestamp::Invalid
    }
}

/// How a candidate's `GET /patroni` answer qualifies it (Patroni's `_MemberStatus.failover_limitation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CandidateStatus {
    /// It can take over.
    Good,
    /// No answer, or no `xlog` in it (PostgreSQL not running).
    NotReachable,
    /// `nofailover`, or `failover_priority` ≤ 0.
    NotAllowedToPromote,
    /// The watchdog it requires failed.
    NotWatchdogCapable,
}

/// Judges one candidate from its `GET /patroni` document (`None` when the request failed).
pub fn candidate_status(document: Option<&Value>) -> CandidateStatus {
    let Some(document) = document.and_then(Value::as_object) else { return CandidateStatus::NotReachable };
    // Patroni reads `wal` (newer) or `xlog` and counts the member unreachable when neither is there.
    if !document.get("wal").or_else(|| document.get("xlog")).is_some_and(Value::is_object) {
        return CandidateStatus::NotReachable;
    }
    let empty = Map::new();
    let tags = document.get("tags").and_then(Value::as_object).unwrap_or(&empty);
    if nofailover(tags) {
        return CandidateStatus::NotAllowedToPromote;
    }
    if document.get("watchdog_failed").is_some_and(truthy) {
        return CandidateStatus::NotWatchdogCapable;
    }
    CandidateStatus::Good
}

/// Patroni's `Tags.nofailover`: the `nofailover` tag when given, else `failover_priority` ≤ 0.
fn nofailover(tags: &Map<String, Value>) -> bool {
    match tags.get("nofailover") {
        Some(value) => truthy(value),
        None => tags
            .get("failover_priority")
            .and_then(|p| p.as_i64().or_else(|| p.as_str().and_then(|s| s.trim().parse().ok())))
            .is_some_and(|priority| priority <= 0),
    }
}

/// Row 5 of §1.8, first half: the 412 texts decided by the view alone, else the members whose `GET /patroni`
/// must be fetched (then judged by [`no_good_candidate`]).
pub fn members_to_check(
    view: &ClusterView,
    sync_mode: SynchronousMode,
    accepted: &Accepted,
) -> Result<Vec<String>, Refusal> {
    let refuse = |text: String| Err(Refusal::new(412, text));
    let word = accepted.action.word();
    let cluster_leader = view.leader.as_ref().map(|l| l.name.as_str());
    if let Some(leader) = accepted.leader.as_deref() {
        if cluster_leader != Some(leader) {
            return refuse("leader name does not match".into());
        }
    }
    let sync_members = view.sync.as_ref().map(|s| s.value.members()).unwrap_or_default();
    let strict_sync = sync_mode == SynchronousMode::On;
    let members: Vec<String> = match accepted.candidate.as_deref() {
        Some(candidate) => {
            if accepted.action == Action::Switchover && strict_sync && !sync_members.iter().any(|m| m == candidate) {
                return refuse("candidate name does not match with sync_standby".into());
            }
            if !view.members.contains_key(candidate) {
                return refuse("candidate does not exists".into());
            }
            vec![candidate.to_string()]
        }
        None if strict_sync => {
            let members: Vec<String> =
                view.members.keys().filter(|name| sync_members.contains(name)).cloned().collect();
            if members.is_empty() {
                return refuse(format!("{word} is not possible: can not find sync_standby"));
            }
            members
        }
        None => {
            let members: Vec<String> = view
                .members
                .iter()
                .filter(|(name, member)| {
                    cluster_leader.is_none() || (Some(name.as_str()) != cluster_leader && !member.api_url.is_empty())
                })
                .map(|(name, _)| name.clone())
                .collect();
            if members.is_empty() {
                return refuse(format!("{word} is not possible: cluster does not have members except leader"));
            }
            members
        }
    };
    Ok(members)
}

/// Row 5, second half: 412 unless at least one fetched candidate qualifies.
pub fn no_good_candidate(action: Action, statuses: &[CandidateStatus]) -> Option<Refusal> {
    if statuses.contains(&CandidateStatus::Good) {
        return None;
    }
    Some(Refusal::new(412, format!("{} is not possible: no good candidates have been found", action.word())))
}

/// The polled outcome of an immediate switchover or failover (Patroni's `poll_failover_result`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollVerdict {
    /// Keep polling.
    Pending,
    /// Finished: the code and text to answer.
    Done(u16, String),
}

/// One polling step: `old_leader` held the key when the request was made; `leader` and `failover_pending` are
/// what the view shows now.
pub fn poll_verdict(
    action: Action,
    old_leader: Option<&str>,
    candidate: Option<&str>,
    leader: Option<&str>,
    failover_pending: bool,
) -> PollVerdict {
    if let Some(new_leader) = leader.filter(|l| Some(*l) != old_leader) {
        return match candidate {
            Some(wanted) if wanted != new_leader => {
                let past = action.past();
                let title = format!("{}{}", past[..1].to_uppercase(), &past[1..]);
                PollVerdict::Done(200, format!(r#"{title} over to "{new_leader}" instead of "{wanted}""#))
            }
            _ => PollVerdict::Done(200, format!(r#"Successfully {} over to "{new_leader}""#, action.past())),
        };
    }
    if !failover_pending {
        return PollVerdict::Done(503, format!("{} failed", action.title()));
    }
    PollVerdict::Pending
}

/// The text after polling ran out.
pub fn poll_timed_out(action: Action) -> Refusal {
    Refusal::new(503, format!("{} status unknown", action.title()))
}

/// How many one-second polls an immediate switchover waits: `2 * max(10, loop_wait)`.
pub fn poll_iterations(loop_wait_secs: u64) -> u64 {
    2 * loop_wait_secs.max(10)
}

/// The checked filters of `POST /restart`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestartRequest {
    /// When to restart; `None` means now.
    pub schedule: Option<DateTime<FixedOffset>>,
    /// Only when this node has this role.
    pub role: Option<Role>,
    /// Only when the running `server_version` is lower than this (as an integer, `150004`).
    pub postgres_version: Option<u32>,
    /// Overrides `primary_start_timeout` for this restart, seconds.
    pub timeout: Option<u64>,
    /// Only when a restart is pending.
    pub restart_pending: bool,
}

/// §1.9's filter checks in Patroni's order; keys are visited in the body's (sorted) key order.
pub fn check_restart(body: &Map<String, Value>, paused: bool, now: DateTime<Utc>) -> Result<RestartRequest, Refusal> {
    if paused && body.contains_key("schedule") {
        return Err(Refusal::new(500, "Can't schedule restart in the paused state"));
    }
    let mut res = RestartRequest::default();
    for (key, value) in body {
        match key.as_str() {
            "schedule" => {
                let text = value.as_str().map_or_else(|| value.to_string(), str::to_string);
                res.schedule = Some(parse_schedule(&text, "restart", now)?);
            }
            "role" => {
                res.role = Some(match value.as_str() {
                    Some("primary") => Role::Primary,
                    Some("standby_leader") => Role::StandbyLeader,
                    Some("replica") => Role::Replica,
                    _ => {
                        let text = "PostgreSQL role should be either primary, standby_leader, or replica";
                        return Err(Refusal::new(400, text));
                    }
                });
            }
            "postgres_version" => {
                let text = value.as_str().map_or_else(|| value.to_string(), str::to_string);
                res.postgres_version = Some(postgres_version_to_int(&text).map_err(|e| Refusal::new(400, e))?);
            }
            "timeout" => match timeout_seconds(value) {
                Some(secs) if secs > 0 => res.timeout = Some(secs),
                _ => return Err(Refusal::new(400, "Timeout should be a positive number of seconds")),
            },
            "restart_pending" => res.restart_pending = truthy(value),
            other => return Err(Refusal::new(400, format!("Unknown filter for the scheduled restart: {other}"))),
        }
    }
    Ok(res)
}

/// Patroni's `postgres_version_to_int`: `X.Y.Z` (before 10) or `X.Y` (10 and later) to `server_version_num`.
pub fn postgres_version_to_int(text: &str) -> Result<u32, String> {
    let components: Result<Vec<u32>, _> = text.split('.').map(|part| part.trim().parse::<u32>()).collect();
    let Ok(mut components) = components else { return Err(format!("Invalid PostgreSQL version: {text}")) };
    let n_components = components.len();
    if n_components < 2 || (n_components == 2 && components[0] < 10) || n_components > 3 {
        return Err(format!("Invalid PostgreSQL version format: X.Y or X.Y.Z is accepted: {text}"));
    }
    if n_components == 2 {
        components.insert(1, 0);
    }
    let digits: String = components.iter().map(|c| format!("{c:02}")).collect();
    digits.parse().map_err(|_| format!("Invalid PostgreSQL version: {text}"))
}

/// Patroni's `parse_int(value, 's')`: a number of seconds, or a string with an optional unit.
fn timeout_seconds(value: &Value) -> Option<u64> {
    let (number, unit) = match value {
        Value::Number(n) => (n.as_f64()?, ""),
        Value::String(text) => {
            let text = text.trim();
            let split_idx = text.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(text.len());
            let (number, unit) = text.split_at(split_idx);
            (number.trim().parse::<f64>().ok()?, unit.trim())
        }
        _ => return None,
    };
    let scale = match unit {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "min" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => return None,
    };
    let secs = (number * scale).round();
    (secs.is_finite() && secs >= 0.0 && secs < u64::MAX as f64).then_some(secs as u64)
}

/// Patroni's `parse_bool` with Python's truthiness as the fallback (`{"force": 1}` counts).
pub fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => matches!(s.trim().to_ascii_lowercase().as_str(), "on" | "true" | "yes" | "1"),
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
    }
}

/// A body field as text when Python would find it truthy (absent, `null`, `""`, `false` and `0` are absent).
fn truthy_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        Value::Null | Value::Bool(false) => None,
        Value::Number(n) if n.as_f64() == Some(0.0) => None,
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
