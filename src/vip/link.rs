//! Adding, removing and announcing the floating address on the interface: rtnetlink requests (what `ip addr
//! add|del` sends) and the gratuitous ARP frame on a raw packet socket (what `arping -U` sends).

use std::net::IpAddr;

use futures_util::TryStreamExt;
use tracing::debug;
use tracing::warn;

use super::arp;
use super::VipError;
use super::ANNOUNCE_EVERY;
use crate::config::VipConfig;

/// The interface and the address of one `vip` section, with a netlink connection opened on first use.
pub struct Link {
    config: VipConfig,
    handle: Option<rtnetlink::Handle>,
}

impl Link {
    pub fn new(config: &VipConfig) -> Self {
        Link { config: config.clone(), handle: None }
    }

    fn io_error(&self, what: &'static str, cause: std::io::Error) -> VipError {
        VipError::Netlink {
            what,
            address: self.config.address.to_string(),
            interface: self.config.interface.clone(),
            cause,
        }
    }

    fn handle(&mut self) -> Result<rtnetlink::Handle, VipError> {
        if let Some(handle) = &self.handle {
            return Ok(handle.clone());
        }
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|cause| self.io_error("open a netlink socket for", cause))?;
        tokio::spawn(connection);
        self.handle = Some(handle.clone());
        Ok(handle)
    }

    fn interface(&self) -> Option<pnet_datalink::NetworkInterface> {
        pnet_datalink::interfaces().into_iter().find(|interface| interface.name == self.config.interface)
    }

    /// Adds the address; `Ok(true)` when it was not there.
    pub async fn hold(&mut self) -> Result<bool, VipError> {
        let interface = self.interface().ok_or_else(|| VipError::NoInterface(self.config.interface.clone()))?;
        let handle = self.handle()?;
        let address = IpAddr::V4(self.config.address.addr());
        match handle.address().add(interface.index, address, self.config.address.prefix_len()).execute().await {
            Ok(()) => Ok(true),
            Err(e) if netlink_errno(&e) == Some(nix::errno::Errno::EEXIST as i32) => Ok(false),
            Err(e) => {
                self.handle = None;
                Err(self.io_error("add", netlink_io(e)))
            }
        }
    }

    /// Removes the address; `Ok(true)` when it was there. An interface that is gone holds nothing.
    pub async fn release(&mut self) -> Result<bool, VipError> {
        let Some(interface) = self.interface() else { return Ok(false) };
        let handle = self.handle()?;
        let result = remove_from(&handle, interface.index, self.config.address.addr()).await;
        if result.is_err() {
            self.handle = None;
        }
        result.map_err(|cause| self.io_error("remove", cause))
    }

    /// Sends `count` gratuitous ARP announcements, the first at once; failures are logged (the neighbours'
    /// entries then age out, as without an announcement).
    pub async fn announce(&self, count: u32) {
        if count == 0 {
            return;
        }
        for sent in 0..count {
            if sent > 0 {
                tokio::time::sleep(ANNOUNCE_EVERY).await;
            }
            let (config, interface) = (self.config.clone(), self.interface());
            let result = tokio::task::spawn_blocking(move || send_announcement(&config, interface)).await;
            match result {
                Ok(Ok(())) => debug!(sent = sent + 1, count, "announced the floating address"),
                Ok(Err(e)) => {
                    warn!(error = %e, "failed to announce the floating address; neighbours learn it when their ARP entries age");
                    return;
                }
                Err(e) => {
                    warn!(error = %e, "the announcement task failed");
                    return;
                }
            }
        }
    }
}

/// Whether this network namespace has an interface called `name` (checked at start-up, `raftgres check`).
pub fn interface_exists(name: &str) -> bool {
    pnet_datalink::interfaces().iter().any(|interface| interface.name == name)
}

/// The interfaces of this network namespace, for the error that names a missing one.
pub fn interface_names() -> Vec<String> {
    pnet_datalink::interfaces().into_iter().map(|interface| interface.name).collect()
}

/// The OS error number of a netlink error answer, if it is one.
fn netlink_errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(message) => message.to_io().raw_os_error(),
        _ => None,
    }
}

fn netlink_io(e: rtnetlink::Error) -> std::io::Error {
    match e {
        rtnetlink::Error::NetlinkError(message) => message.to_io(),
        other => std::io::Error::other(other.to_string()),
    }
}

/// Deletes every copy of `address` on interface `index`; `Ok(true)` when there was one.
async fn remove_from(handle: &rtnetlink::Handle, index: u32, address: std::net::Ipv4Addr) -> std::io::Result<bool> {
    let mut found = Vec::new();
    let mut listed =
        handle.address().get().set_link_index_filter(index).set_address_filter(IpAddr::V4(address)).execute();
    while let Some(message) = listed.try_next().await.map_err(netlink_io)? {
        found.push(message);
    }
    let mut removed = false;
    for message in found {
        match handle.address().del(message).execute().await {
            Ok(()) => removed = true,
            // Removed meanwhile (by the guard, an operator): what we wanted.
            Err(e) if netlink_errno(&e) == Some(nix::errno::Errno::EADDRNOTAVAIL as i32) => {}
            Err(e) => return Err(netlink_io(e)),
        }
    }
    Ok(removed)
}

fn send_announcement(config: &VipConfig, interface: Option<pnet_datalink::NetworkInterface>) -> Result<(), VipError> {
    let announce_error = |cause| VipError::Announce {
        address: config.address.addr().to_string(),
        interface: config.interface.clone(),
        cause,
    };
    let interface = interface.ok_or_else(|| VipError::NoInterface(config.interface.clone()))?;
    let mac = interface
        .mac
        .filter(|mac| !mac.is_zero())
        .ok_or_else(|| VipError::NoHardwareAddress(config.interface.clone()))?;
    let frame = arp::gratuitous_request(mac, config.address.addr());
    let settings = pnet_datalink::Config { read_buffer_size: 64, ..pnet_datalink::Config::default() };
    let mut tx = match pnet_datalink::channel(&interface, settings).map_err(announce_error)? {
        pnet_datalink::Channel::Ethernet(tx, _rx) => tx,
        _ => return Err(announce_error(std::io::Error::other("not an Ethernet channel"))),
    };
    match tx.send_to(&frame, None) {
        Some(result) => result.map_err(announce_error),
        None => Err(announce_error(std::io::Error::other("the packet socket took no frame"))),
    }
}

/// Removes the address once, with a connection of its own: for the fence guard, a separate process that acts when
/// raftgres is killed or frozen. `Ok(true)` when it was there.
pub async fn remove(config: &VipConfig) -> Result<bool, VipError> {
    Link::new(config).release().await
}
