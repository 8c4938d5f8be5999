//! The gratuitous ARP announcement (PURE): the frame `arping -U` sends, so the switches and the neighbours'
//! caches move the floating address to this host's hardware address at once instead of when their entries age.

use core::net::Ipv4Addr;

use pnet_datalink::MacAddr;
use pnet_packet::arp::ArpHardwareTypes;
use pnet_packet::arp::ArpOperations;
use pnet_packet::arp::MutableArpPacket;
use pnet_packet::ethernet::EtherTypes;
use pnet_packet::ethernet::MutableEthernetPacket;
use pnet_packet::MutablePacket;

/// Ethernet header (14) + ARP for IPv4 over Ethernet (28).
pub const FRAME_LEN: usize = 42;

/// PURE: a broadcast ARP request from `mac` asking for `address` itself (sender and target address both the
/// floating one): every neighbour that has an entry for `address` updates it to `mac`, and nobody answers.
pub fn gratuitous_request(mac: MacAddr, address: Ipv4Addr) -> [u8; FRAME_LEN] {
    let mut frame = [0u8; FRAME_LEN];
    if let Some(mut ethernet) = MutableEthernetPacket::new(&mut frame) {
        ethernet.set_destination(MacAddr::broadcast());
        ethernet.set_source(mac);
        ethernet.set_ethertype(EtherTypes::Arp);
        if let Some(mut arp) = MutableArpPacket::new(ethernet.payload_mut()) {
            arp.set_hardware_type(ArpHardwareTypes::Ethernet);
            arp.set_protocol_type(EtherTypes::Ipv4);
            arp.set_hw_addr_len(6);
            arp.set_proto_addr_len(4);
            arp.set_operation(ArpOperations::Request);
            arp.set_sender_hw_addr(mac);
            arp.set_sender_proto_addr(address);
            arp.set_target_hw_addr(MacAddr::zero());
            arp.set_target_proto_addr(address);
        }
    }
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use pnet_packet::Packet as _;

    #[test]
    fn gratuitous_request_is_the_frame_arping_u_sends() {
        let mac = MacAddr::new(0x02, 0x42, 0xac, 0x11, 0x00, 0x02);
        let frame = gratuitous_request(mac, Ipv4Addr::new(10, 0, 0, 100));
        #[rustfmt::skip]
        let want: [u8; FRAME_LEN] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // broadcast
            0x02, 0x42, 0xac, 0x11, 0x00, 0x02, // from this host
            0x08, 0x06,                         // ARP
            0x00, 0x01, 0x08, 0x00, 6, 4,       // Ethernet, IPv4, address lengths
            0x00, 0x01,                         // request
            0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 10, 0, 0, 100, // sender: this host has 10.0.0.100
            0, 0, 0, 0, 0, 0, 10, 0, 0, 100,    // target: 10.0.0.100 itself
        ];
        assert_eq!(frame, want);
        let arp = pnet_packet::arp::ArpPacket::new(&frame[14..]).expect("an ARP packet");
        assert_eq!(arp.get_sender_proto_addr(), arp.get_target_proto_addr());
        assert!(arp.payload().is_empty());
    }
}
