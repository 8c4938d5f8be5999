//! Table tests of the `vip` section: the address, the interface, the announcement count, and the key path of
//! every refusal.

use super::tests::load_patched;
use super::*;

#[test]
fn vip_section_reads_address_interface_and_count_and_names_bad_keys() {
    let vip = |patch: &str| load_patched(patch, &[]).map(|loaded| loaded.config.vip).map_err(|e| e.to_string());
    assert_eq!(vip("{}"), Ok(None), "no section, no floating address");
    let config = vip("vip: {address: 10.0.0.100/24, interface: eth0}").expect("valid").expect("a vip section");
    assert_eq!(
        config,
        VipConfig {
            address: "10.0.0.100/24".parse().expect("a network"),
            interface: "eth0".into(),
            arping_count: defaults::VIP_ARPING_COUNT,
        }
    );
    let config = vip("vip: {address: ' 192.168.1.5/32 ', interface: bond0.12, arping_count: 0}").expect("valid");
    assert_eq!(
        config.map(|c| (c.address.to_string(), c.interface, c.arping_count)),
        Some(("192.168.1.5/32".into(), "bond0.12".into(), 0))
    );
    for (patch, expected) in [
        ("vip: {interface: eth0}", "vip.address: missing"),
        ("vip: {address: 10.0.0.100, interface: eth0}", "vip.address: \"10.0.0.100\" has no prefix length"),
        ("vip: {address: 10.0.0.100/0, interface: eth0}", "vip.address: \"10.0.0.100/0\": set the floating address"),
        ("vip: {address: 'fd00::10/64', interface: eth0}", "vip.address: \"fd00::10/64\" is IPv6"),
        ("vip: {address: db.example.com, interface: eth0}", "vip.address: \"db.example.com\" is not an address"),
        ("vip: {address: 10.0.0.100/24}", "vip.interface: missing"),
        ("vip: {address: 10.0.0.100/24, interface: 'eth0:1'}", "vip.interface: \"eth0:1\" is not a network interface"),
        ("vip: {address: 10.0.0.100/24, interface: averyveryverylongname}", "vip.interface: \"averyveryverylongname\""),
        ("vip: {address: 10.0.0.100/24, interface: eth0, arping_count: -1}", "vip.arping_count: expected"),
        ("vip: {address: 10.0.0.100/24, interface: eth0, arping_count: 1000}", "vip.arping_count: 1000 is too many"),
    ] {
        let got = vip(patch).expect_err(patch);
        assert!(got.contains(expected), "{patch}: {got}");
    }
}
