//! The Linux watchdog device file (`Documentation/watchdog/watchdog-api.rst`): open it (which starts the
//! timer), ask what it supports, set its timeout, keep it alive with a write, and the magic close (`V`, then
//! close) that stops it. Only I/O; what to do with it is in `watchdog::policy` and `watchdog::Watchdog`.
//!
//! This is the only file of the workspace with `unsafe` code: the three ioctls, in the `sys` module below.
//! A keepalive is a plain write (every Linux watchdog driver counts any write as one), not `WDIOC_KEEPALIVE`.
//!
//! A file that is not a watchdog (a regular file or a FIFO standing in for the device in tests) answers the
//! ioctls with `ENOTTY`: [`WatchdogError::NotAWatchdog`], which the caller may accept, and every write still goes
//! through the same path, so a test can read back the keepalives and the magic close.

use std::fs::File;
use std::io::Write;
use std::os::fd::IntoRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

/// What went wrong with the watchdog device (the module's one error type); each keeps the OS error as its source.
#[derive(Debug, thiserror::Error)]
pub enum WatchdogError {
    /// `open(2)` failed (missing, permission, busy: a watchdog has one user at a time).
    #[error("open {}", path.display())]
    Open {
        /// The device.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file takes no watchdog ioctls (`ENOTTY`): it is not a watchdog device.
    #[error("{} is not a watchdog device (no watchdog ioctls)", path.display())]
    NotAWatchdog {
        /// The file.
        path: PathBuf,
    },
    /// A watchdog ioctl failed otherwise.
    #[error("{what} on {}", path.display())]
    Ioctl {
        /// Which request (`set the timeout`, …).
        what: &'static str,
        /// The device.
        path: PathBuf,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// A write (keepalive or magic close) or the close failed.
    #[error("{what} {}", path.display())]
    Io {
        /// What was written (`keep alive`, …).
        what: &'static str,
        /// The device.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What the driver says about itself (`WDIOC_GETSUPPORT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Support {
    /// The driver's identity string (`Software Watchdog`, …).
    pub identity: String,
    /// `WDIOF_SETTIMEOUT`: the timeout can be set.
    pub settable_timeout: bool,
    /// `WDIOF_MAGICCLOSE`: writing `V` before closing stops it (else closing alone does, or nothing does).
    pub magic_close: bool,
}

/// An open watchdog device: its timer runs from the moment it was opened until [`Device::magic_close`].
/// Dropping it without the magic close leaves the timer running, so the host resets: that is the
/// behaviour wanted when raftgres dies holding the device, so `Drop` does nothing special.
#[derive(Debug)]
pub struct Device {
    file: File,
    path: PathBuf,
}

impl Device {
    /// Opens `path` for writing, which starts the watchdog. `O_NONBLOCK` keeps a FIFO without a reader from
    /// blocking the caller; `O_APPEND` means nothing to a character device and keeps every byte written to a
    /// regular file standing in for one.
    pub fn open(path: &Path) -> Result<Device, WatchdogError> {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(path)
            .map_err(|source| WatchdogError::Open { path: path.to_path_buf(), source })?;
        Ok(Device { file, path: path.to_path_buf() })
    }

    /// The device path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `WDIOC_GETSUPPORT`.
    pub fn support(&self) -> Result<Support, WatchdogError> {
        let info = sys::get_support(&self.file).map_err(|e| self.ioctl_error("read the watchdog's support", e))?;
        let identity = info.identity.iter().take_while(|b| **b != 0).map(|b| char::from(*b)).collect();
        Ok(Support {
            identity,
            settable_timeout: info.options & sys::WDIOF_SETTIMEOUT != 0,
            magic_close: info.options & sys::WDIOF_MAGICCLOSE != 0,
        })
    }

    /// `WDIOC_SETTIMEOUT` (which also restarts the timer); returns the timeout the driver actually took, which
    /// may differ from the one asked for (hardware granularity, limits).
    pub fn set_timeout(&self, timeout: Duration) -> Result<Duration, WatchdogError> {
        let secs = nix::libc::c_int::try_from(timeout.as_secs()).unwrap_or(nix::libc::c_int::MAX);
        let taken = sys::set_timeout(&self.file, secs).map_err(|e| self.ioctl_error("set the watchdog timeout", e))?;
        Ok(Duration::from_secs(u64::try_from(taken).unwrap_or(0)))
    }

    /// `WDIOC_GETTIMEOUT`.
    pub fn timeout(&self) -> Result<Duration, WatchdogError> {
        let secs = sys::get_timeout(&self.file).map_err(|e| self.ioctl_error("read the watchdog timeout", e))?;
        Ok(Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
    }

    /// Restarts the timer: one byte written (`1`, any byte but `V` does).
    pub fn keepalive(&mut self) -> Result<(), WatchdogError> {
        self.file.write_all(b"1").map_err(|source| WatchdogError::Io {
            what: "keep alive",
            path: self.path.clone(),
            source,
        })
    }

    /// Stops the watchdog: `V` written, then the file closed (a driver with `WDIOF_MAGICCLOSE` stops only
    /// then; others stop on close, unless the kernel runs them with `nowayout`).
    pub fn magic_close(mut self) -> Result<(), WatchdogError> {
        let path = self.path.clone();
        self.file.write_all(b"V").map_err(|source| WatchdogError::Io {
            what: "write the magic close to",
            path: path.clone(),
            source,
        })?;
        // `File`'s drop ignores errors of close(2); the watchdog may report there that it did not stop.
        nix::unistd::close(self.file.into_raw_fd()).map_err(|errno| WatchdogError::Io {
            what: "close",
            path,
            source: std::io::Error::from(errno),
        })
    }

    fn ioctl_error(&self, what: &'static str, errno: nix::Error) -> WatchdogError {
        match errno {
            nix::Error::ENOTTY => WatchdogError::NotAWatchdog { path: self.path.clone() },
            source => WatchdogError::Ioctl { what, path: self.path.clone(), source },
        }
    }
}

/// The watchdog ioctls of `<linux/watchdog.h>` and their safe wrappers.
#[allow(unsafe_code)]
mod sys {
    use std::fs::File;
    use std::os::fd::AsRawFd;

    use nix::libc::c_int;

    /// `WDIOF_SETTIMEOUT`.
    pub const WDIOF_SETTIMEOUT: u32 = 0x0080;
    /// `WDIOF_MAGICCLOSE`.
    pub const WDIOF_MAGICCLOSE: u32 = 0x0100;

    /// `struct watchdog_info`.
    #[repr(C)]
    #[derive(Debug, Default)]
    pub struct WatchdogInfo {
        pub options: u32,
        pub firmware_version: u32,
        pub identity: [u8; 32],
    }

    nix::ioctl_read!(wdioc_getsupport, b'W', 0, WatchdogInfo);
    nix::ioctl_readwrite!(wdioc_settimeout, b'W', 6, c_int);
    nix::ioctl_read!(wdioc_gettimeout, b'W', 7, c_int);

    pub fn get_support(file: &File) -> nix::Result<WatchdogInfo> {
        let mut info = WatchdogInfo::default();
        // SAFETY: the descriptor stays open while `file` is borrowed, and `info` is a writable `watchdog_info`,
        // the type and size the request code encodes.
        unsafe { wdioc_getsupport(file.as_raw_fd(), &mut info) }?;
        Ok(info)
    }

    pub fn set_timeout(file: &File, secs: c_int) -> nix::Result<c_int> {
        let mut value = secs;
        // SAFETY: as above; the kernel reads and writes back one `int`.
        unsafe { wdioc_settimeout(file.as_raw_fd(), &mut value) }?;
        Ok(value)
    }

    pub fn get_timeout(file: &File) -> nix::Result<c_int> {
        let mut value: c_int = 0;
        // SAFETY: as above; the kernel writes one `int`.
        unsafe { wdioc_gettimeout(file.as_raw_fd(), &mut value) }?;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A regular file stands in for the device: the ioctls say it is no watchdog, the writes land in it.
    #[test]
    fn a_regular_file_takes_the_writes_and_refuses_the_ioctls() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("watchdog");
        std::fs::write(&path, "").expect("create the stand-in");
        let mut device = Device::open(&path).expect("open the stand-in");
        assert!(matches!(device.support(), Err(WatchdogError::NotAWatchdog { .. })));
        assert!(matches!(device.set_timeout(Duration::from_secs(1)), Err(WatchdogError::NotAWatchdog { .. })));
        assert!(matches!(device.timeout(), Err(WatchdogError::NotAWatchdog { .. })));
        device.keepalive().expect("keepalive");
        device.keepalive().expect("keepalive");
        device.magic_close().expect("magic close");
        // Appended, so a second opening keeps what the first one wrote.
        let mut device = Device::open(&path).expect("open again");
        device.keepalive().expect("keepalive");
        device.magic_close().expect("magic close");
        assert_eq!(std::fs::read_to_string(&path).expect("read back"), "11V1V");
    }

    #[test]
    fn a_missing_device_is_an_open_error_with_its_cause() {
        let err = Device::open(Path::new("/nonexistent/watchdog")).map(|_| ()).map_err(|e| {
            let source = std::error::Error::source(&e).map(ToString::to_string);
            (e.to_string(), source)
        });
        assert_eq!(
            err,
            Err(("open /nonexistent/watchdog".to_string(), Some("No such file or directory (os error 2)".to_string())))
        );
    }
}
