//! PURE: the HAProxy runtime API commands a role change sends (`haproxy` section).
//!
//! raftgres forces the *health* of its servers (`set server <backend>/<server> health up|down`), not their
//! administrative state (`state ready|drain|maint`): a forced health lasts only until the server's next health
//! check, so HAProxy's own checks of `GET /primary` and `GET /replica` stay the source of truth and a push that
//! was wrong, lost or late is corrected within one check interval; an administrative state would outlive every
//! check, and would overwrite the `maint` an operator set by hand. On promotion the new primary first marks every
//! other member down in the primary backend, then itself up (so no moment has two servers up there), and itself
//! down in the replica backend; before a primary stops accepting writes it marks itself down in the primary
//! backend.

/// The backends and the server-name rule of the `haproxy` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The backend (or `listen` section) routing to the primary.
    pub primary_backend: String,
    /// The backend routing to the replicas, if any.
    pub replica_backend: Option<String>,
    /// The server name of a member, `{name}` standing for the member name.
    pub server: String,
}

impl Names {
    /// The server name of `member`; `None` when it could not be used safely in a command line.
    pub fn server_of(&self, member: &str) -> Option<String> {
        let name = self.server.replace("{name}", member);
        usable(&name).then_some(name)
    }
}

/// A name safe inside a runtime API command line (no space or `;` that would split it).
fn usable(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
}

fn health(backend: &str, server: &str, up: bool) -> String {
    format!("set server {backend}/{server} health {}", if up { "up" } else { "down" })
}

/// After `me` was promoted: every other server of the primary backend down (the servers of the other `members`
/// and every server HAProxy lists there, `listed`, which includes a member that left the cluster view a moment
/// ago, such as a primary that just handed over and stopped), then `me` up there, and `me` down in the replica
/// backend. Names that are unusable in a command line are left out.
pub fn promoted(names: &Names, me: &str, members: &[String], listed: &[String]) -> Vec<String> {
    let mine = names.server_of(me);
    let mut others: Vec<String> =
        members.iter().filter(|member| member.as_str() != me).filter_map(|m| names.server_of(m)).collect();
    for server in listed {
        if usable(server) && Some(server) != mine.as_ref() && !others.contains(server) {
            others.push(server.clone());
        }
    }
    let mut commands: Vec<String> = others.iter().map(|server| health(&names.primary_backend, server, false)).collect();
    if let Some(server) = names.server_of(me) {
        commands.push(health(&names.primary_backend, &server, true));
        if let Some(replicas) = &names.replica_backend {
            commands.push(health(replicas, &server, false));
        }
    }
    commands
}

/// Before `me` stops accepting writes (a switchover, a stop, a lost lease): `me` down in the primary backend.
pub fn demoting(names: &Names, me: &str) -> Vec<String> {
    names.server_of(me).map(|server| vec![health(&names.primary_backend, &server, false)]).unwrap_or_default()
}

/// The runtime API answers each command of a line with its own output; `set server … health` prints nothing
/// when it worked. The non-empty lines of an answer are the complaints (`No such server.`, `Require
/// 'backend/server'.`, a permission error).
pub fn complaints(answer: &str) -> Vec<&str> {
    answer.lines().map(str::trim).filter(|line| !line.is_empty()).collect()
}

/// A line of `show servers state [backend]`: the server's name and operational state (0 stopped, 1 starting,
/// 2 running, 3 stopping) and administrative state (0 ready; bits for maintenance and drain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerState {
    /// `be_name`.
    pub backend: String,
    /// `srv_name`.
    pub server: String,
    /// `srv_op_state`.
    pub op_state: u8,
    /// `srv_admin_state`.
    pub admin_state: u8,
}

impl ServerState {
    /// HAProxy sends it new connections: running and not in maintenance or drain.
    pub fn routable(&self) -> bool {
        self.op_state == 2 && self.admin_state == 0
    }
}

/// Parses the answer of `show servers state` (format version 1: a version line, a `#` header naming the columns,
/// then one line per server). Lines it cannot read are skipped.
pub fn parse_servers_state(answer: &str) -> Vec<ServerState> {
    let mut columns: Vec<&str> = Vec::new();
    let mut res = Vec::new();
    for line in answer.lines().map(str::trim).filter(|line| !line.is_empty()) {
        if let Some(header) = line.strip_prefix('#') {
            columns = header.split_whitespace().collect();
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let field = |name: &str| columns.iter().position(|c| *c == name).and_then(|idx| fields.get(idx).copied());
        let (Some(backend), Some(server), Some(op), Some(admin)) =
            (field("be_name"), field("srv_name"), field("srv_op_state"), field("srv_admin_state"))
        else {
            continue;
        };
        let (Ok(op_state), Ok(admin_state)) = (op.parse(), admin.parse()) else { continue };
        res.push(ServerState { backend: backend.into(), server: server.into(), op_state, admin_state });
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(replicas: Option<&str>) -> Names {
        Names { primary_backend: "primary".into(), replica_backend: replicas.map(Into::into), server: "{name}".into() }
    }

    fn members() -> Vec<String> {
        vec!["node1".into(), "node2".into(), "node3".into()]
    }

    #[test]
    fn promoted_marks_the_others_down_before_itself_up() {
        assert_eq!(
            promoted(&names(Some("standbys")), "node2", &members(), &[]),
            vec![
                "set server primary/node1 health down",
                "set server primary/node3 health down",
                "set server primary/node2 health up",
                "set server standbys/node2 health down",
            ]
        );
    }

    #[test]
    fn promoted_without_replica_backend() {
        assert_eq!(
            promoted(&names(None), "node1", &members(), &["node1".into(), "node2".into(), "node3".into()]),
            vec![
                "set server primary/node2 health down",
                "set server primary/node3 health down",
                "set server primary/node1 health up"
            ]
        );
    }

    #[test]
    fn promoted_also_marks_down_servers_only_haproxy_lists() {
        // node1 handed over and stopped: its member key is gone, HAProxy still lists (and may route to) it.
        assert_eq!(
            promoted(
                &names(None),
                "node2",
                &["node2".into(), "node3".into()],
                &["node1".into(), "node2".into(), "node3".into(), "bad name".into()]
            ),
            vec![
                "set server primary/node3 health down",
                "set server primary/node1 health down",
                "set server primary/node2 health up"
            ]
        );
    }

    #[test]
    fn demoting_marks_only_itself_down_in_the_primary_backend() {
        assert_eq!(demoting(&names(Some("standbys")), "node3"), vec!["set server primary/node3 health down"]);
    }

    #[test]
    fn server_rule_names_and_unsafe_names() {
        let rule = Names { server: "pg-{name}.db".into(), ..names(None) };
        assert_eq!(rule.server_of("node1").as_deref(), Some("pg-node1.db"));
        assert_eq!(rule.server_of("a b"), None, "a space would split the command");
        assert_eq!(rule.server_of("x;shutdown"), None, "a semicolon would start another command");
        assert_eq!(demoting(&rule, "bad;name"), Vec::<String>::new());
    }

    #[test]
    fn complaints_are_the_non_empty_lines() {
        assert!(complaints("\n\n").is_empty());
        assert_eq!(complaints("No such server.\n\n"), vec!["No such server."]);
    }

    #[test]
    fn servers_state_is_read_by_column_name() {
        let answer = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight\n\
                      3 primary 1 node1 127.0.0.1 2 0 1\n3 primary 2 node2 127.0.0.1 0 0 1\n3 primary 3 node3 127.0.0.1 2 1 1\n";
        let states = parse_servers_state(answer);
        assert_eq!(states.len(), 3);
        assert_eq!(
            states[0],
            ServerState { backend: "primary".into(), server: "node1".into(), op_state: 2, admin_state: 0 }
        );
        assert!(states[0].routable());
        assert!(!states[1].routable(), "stopped");
        assert!(!states[2].routable(), "in maintenance");
    }
}
