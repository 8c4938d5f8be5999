//! Table tests of the `haproxy` section: addresses, names, defaults and the key path of every refusal.

use std::path::PathBuf;
use std::time::Duration;

use super::tests::load_patched;
use super::*;

#[test]
fn haproxy_section_reads_sockets_and_addresses_and_names_bad_keys() {
    let haproxy = |patch: &str| load_patched(patch, &[]).map(|loaded| loaded.config.haproxy).map_err(|e| e.to_string());
    assert_eq!(haproxy("{}"), Ok(None), "no section, no push");
    let config = haproxy("haproxy: {runtime_api: [/run/haproxy/admin.sock, '127.0.0.1:9999', '[::1]:9998']}")
        .unwrap_or_else(|e| panic!("{e}"))
        .expect("a haproxy section");
    assert_eq!(
        config,
        HaproxyConfig {
            runtime_api: vec![
                RuntimeApi::Unix(PathBuf::from("/run/haproxy/admin.sock")),
                RuntimeApi::Tcp(HostPort { host: "127.0.0.1".into(), port: 9999 }),
                RuntimeApi::Tcp(HostPort { host: "::1".into(), port: 9998 }),
            ],
            primary_backend: "primary".into(),
            replica_backend: None,
            server: "{name}".into(),
            timeout: Duration::from_millis(500),
        }
    );
    let config = haproxy(
        "haproxy: {runtime_api: /run/h.sock, primary_backend: pg_rw, replica_backend: pg_ro, server: 'db-{name}', timeout: 1s}",
    )
    .unwrap_or_else(|e| panic!("{e}"))
    .expect("a haproxy section");
    assert_eq!(
        (config.primary_backend.as_str(), config.replica_backend.as_deref(), config.server.as_str(), config.timeout),
        ("pg_rw", Some("pg_ro"), "db-{name}", Duration::from_secs(1))
    );
    let rows = [
        ("haproxy: {primary_backend: primary}", "haproxy.runtime_api: missing; list the HAProxy runtime API addresses"),
        ("haproxy: {runtime_api: []}", "haproxy.runtime_api: is empty; list the HAProxy runtime API addresses"),
        (
            "haproxy: {runtime_api: [admin.sock]}",
            "haproxy.runtime_api[0]: expected an absolute UNIX socket path or host:port, got \"admin.sock\"",
        ),
        (
            "haproxy: {runtime_api: [/s, {a: 1}]}",
            "haproxy.runtime_api[1]: expected a UNIX socket path or host:port, got a map",
        ),
        (
            "haproxy: {runtime_api: /s, primary_backend: 'pg rw'}",
            "haproxy.primary_backend: \"pg rw\" is not an HAProxy name",
        ),
        (
            "haproxy: {runtime_api: /s, replica_backend: 'ro;x'}",
            "haproxy.replica_backend: \"ro;x\" is not an HAProxy name",
        ),
        ("haproxy: {runtime_api: /s, timeout: 0}", "haproxy.timeout: must be above 0"),
    ];
    for (patch, expected) in rows {
        let error = haproxy(patch).map(|_| ()).expect_err(patch);
        assert!(error.starts_with(expected), "{patch}: {error}");
    }
}
