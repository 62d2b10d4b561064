//! Tells the daemon when the machine's addresses or routes may have changed (Wi-Fi
//! switched, DHCP lease, a cable plugged in), so that it can gather host candidates again.
//!
//! The kernel says so itself: on Linux a netlink socket subscribed to address, route and
//! link changes, on macOS the routing socket (`PF_ROUTE`), which carries every address
//! and route change, on Windows `NotifyUnicastIpAddressChange` and `NotifyIpInterfaceChange`
//! callbacks. Elsewhere the interface list is compared every [`POLL_EVERY`]. Either way the
//! daemon only hears "look again": it reads the addresses itself and compares them with
//! what the engine has.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How often the portable watcher compares the interface list.
#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
const POLL_EVERY: Duration = Duration::from_secs(2);
/// Changes come in bursts (an address, then its routes, then a link state): the daemon
/// looks once after the burst is over.
pub const SETTLE: Duration = Duration::from_millis(250);

/// The watcher's task, owned by the daemon: stopped and awaited by [`NetWatcher::stop`].
#[derive(Debug)]
pub struct NetWatcher {
    task: JoinHandle<()>,
}

impl NetWatcher {
    /// Starts watching; every change sends `()` to `changed` (a full queue means the daemon
    /// already knows it must look).
    pub fn start(changed: mpsc::Sender<()>) -> std::io::Result<Self> {
        Ok(Self { task: platform::spawn(changed)? })
    }

    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

#[cfg(any(target_os = "linux", target_os = "macos"))]
mod platform {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    use tokio::io::unix::AsyncFd;
    use tokio::sync::mpsc;
    use tokio::task::JoinHandle;

    /// The routing socket: every message on it is an address, route or interface change.
    #[cfg(target_os = "macos")]
    #[allow(unsafe_code)]
    fn subscribe() -> io::Result<OwnedFd> {
        // SAFETY: socket() takes no pointers; the descriptor it returns is owned at once.
        let fd = unsafe { libc::socket(libc::PF_ROUTE, libc::SOCK_RAW, libc::AF_UNSPEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: fcntl on a descriptor we own, no pointers.
        let configured = unsafe {
            let flags = libc::fcntl(owned.as_raw_fd(), libc::F_GETFL);
            let nonblocking = libc::fcntl(owned.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
            let cloexec = libc::fcntl(owned.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC);
            nonblocking.min(cloexec)
        };
        if configured < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(owned)
    }

    /// A netlink route socket subscribed to the groups whose messages mean "addresses or
    /// routes changed": IPv4 and IPv6 addresses, IPv4 routes, links.
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    fn subscribe() -> io::Result<OwnedFd> {
        // SAFETY: socket() takes no pointers; the descriptor it returns is owned at once.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; zeroed is its documented initial state.
        let mut address: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        address.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        address.nl_groups = (libc::RTMGRP_IPV4_IFADDR
            | libc::RTMGRP_IPV6_IFADDR
            | libc::RTMGRP_IPV4_ROUTE
            | libc::RTMGRP_LINK) as u32;
        // SAFETY: the pointer and length describe `address`, alive for the call.
        let bound = unsafe {
            libc::bind(
                owned.as_raw_fd(),
                std::ptr::from_ref(&address).cast::<libc::sockaddr>(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if bound < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(owned)
    }

    pub(super) fn spawn(changed: mpsc::Sender<()>) -> io::Result<JoinHandle<()>> {
        #[allow(unsafe_code)]
        // SAFETY: the OwnedFd is moved into the AsyncFd, which owns it until dropped: the
        // descriptor stays open and the same for the AsyncFd's whole life.
        let socket = unsafe { AsyncFd::register(subscribe()?) }.map_err(io::Error::from)?;
        Ok(tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let Ok(mut ready) = socket.readable().await else { return };
                // The messages themselves do not matter (the daemon reads the addresses
                // itself), only that some arrived; read until the socket is empty.
                let mut any = false;
                loop {
                    #[allow(unsafe_code)]
                    // SAFETY: buf is valid for buf.len() bytes for the call.
                    let n = unsafe {
                        libc::recv(socket.get_ref().as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0)
                    };
                    if n > 0 {
                        any = true;
                        continue;
                    }
                    let error = io::Error::last_os_error();
                    if n < 0 && error.kind() == io::ErrorKind::WouldBlock {
                        ready.clear_ready();
                        break;
                    }
                    if n < 0 && error.raw_os_error() == Some(libc::ENOBUFS) && cfg!(target_os = "linux") {
                        // The kernel dropped messages: something changed.
                        any = true;
                        continue;
                    }
                    tracing::warn!(%error, "the address watcher stopped");
                    return;
                }
                if any && changed.try_send(()).is_err() && changed.is_closed() {
                    return;
                }
            }
        }))
    }
}

#[cfg(windows)]
mod platform {
    use std::ffi::c_void;

    use tokio::sync::mpsc;
    use tokio::task::JoinHandle;
    use windows_sys::Win32::Foundation::{HANDLE, NO_ERROR};
    use windows_sys::Win32::NetworkManagement::IpHelper::{
        CancelMibChangeNotify2, NotifyIpInterfaceChange, NotifyUnicastIpAddressChange, MIB_IPINTERFACE_ROW,
        MIB_NOTIFICATION_TYPE, MIB_UNICASTIPADDRESS_ROW,
    };
    use windows_sys::Win32::Networking::WinSock::AF_UNSPEC;

    /// The two registrations and the sender their callbacks use; cancelling waits for a
    /// running callback (CancelMibChangeNotify2), so the sender is freed only after.
    struct Registrations {
        handles: Vec<HANDLE>,
        sender: *mut mpsc::Sender<()>,
    }

    // SAFETY: the handles are only passed to CancelMibChangeNotify2, and the sender is a
    // Send type reached only through the callbacks and Drop.
    #[allow(unsafe_code)]
    unsafe impl Send for Registrations {}

    #[allow(unsafe_code)]
    impl Drop for Registrations {
        fn drop(&mut self) {
            for handle in self.handles.drain(..) {
                // SAFETY: a handle NotifyXxxChange returned, cancelled once.
                unsafe { CancelMibChangeNotify2(handle) };
            }
            // SAFETY: made by Box::into_raw below; no callback runs any more.
            drop(unsafe { Box::from_raw(self.sender) });
        }
    }

    /// The callback of both registrations (`Row` is the kind of row each reports, which
    /// does not matter: the daemon reads the addresses itself).
    #[allow(unsafe_code)]
    unsafe extern "system" fn on_change<Row>(
        context: *const c_void,
        _row: *const Row,
        _kind: MIB_NOTIFICATION_TYPE,
    ) {
        // SAFETY: the context is the sender, alive until the registrations are cancelled.
        let sender = unsafe { &*context.cast::<mpsc::Sender<()>>() };
        let _ = sender.try_send(());
    }

    #[allow(unsafe_code)]
    pub(super) fn spawn(changed: mpsc::Sender<()>) -> std::io::Result<JoinHandle<()>> {
        let mut registrations =
            Registrations { handles: Vec::new(), sender: Box::into_raw(Box::new(changed)) };
        let context = registrations.sender.cast::<c_void>().cast_const();
        let mut handle: HANDLE = std::ptr::null_mut();
        // SAFETY: the callback and context stay valid until cancelled in Drop; handle is
        // a valid out pointer.
        let status = unsafe {
            NotifyUnicastIpAddressChange(
                AF_UNSPEC,
                Some(on_change::<MIB_UNICASTIPADDRESS_ROW>),
                context,
                false,
                &mut handle,
            )
        };
        if status != NO_ERROR {
            return Err(std::io::Error::from_raw_os_error(status as i32));
        }
        registrations.handles.push(handle);
        let mut handle: HANDLE = std::ptr::null_mut();
        // SAFETY: as above.
        let status = unsafe {
            NotifyIpInterfaceChange(
                AF_UNSPEC,
                Some(on_change::<MIB_IPINTERFACE_ROW>),
                context,
                false,
                &mut handle,
            )
        };
        if status != NO_ERROR {
            return Err(std::io::Error::from_raw_os_error(status as i32));
        }
        registrations.handles.push(handle);
        // The task only keeps the registrations alive; aborting it cancels them.
        Ok(tokio::spawn(async move {
            let _registrations = registrations;
            std::future::pending::<()>().await;
        }))
    }
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
mod platform {
    use tokio::sync::mpsc;
    use tokio::task::JoinHandle;

    fn addresses() -> Vec<std::net::IpAddr> {
        let mut found: Vec<_> =
            if_addrs::get_if_addrs().unwrap_or_default().into_iter().map(|i| i.ip()).collect();
        found.sort();
        found
    }

    pub(super) fn spawn(changed: mpsc::Sender<()>) -> std::io::Result<JoinHandle<()>> {
        Ok(tokio::spawn(async move {
            let mut last = addresses();
            let mut every = tokio::time::interval(super::POLL_EVERY);
            loop {
                every.tick().await;
                let now = addresses();
                if now != last {
                    last = now;
                    if changed.try_send(()).is_err() && changed.is_closed() {
                        return;
                    }
                }
            }
        }))
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The kernel's own announcement reaches the watcher: an address added to a dummy
    /// interface in a namespace of this test's own.
    #[test]
    fn an_address_change_is_announced() {
        if !crate::daemon::tests_support::privileged("the address watcher test") {
            return;
        }
        crate::daemon::tests_support::in_own_network_namespace(|| async {
            let (tx, mut rx) = mpsc::channel(4);
            let watcher = NetWatcher::start(tx).unwrap();
            let ip = |args: &[&str]| {
                let status = std::process::Command::new("ip").args(args).status().unwrap();
                assert!(status.success(), "ip {args:?}");
            };
            ip(&["link", "set", "lo", "up"]);
            ip(&["addr", "add", "192.0.2.5/24", "dev", "lo"]);
            let heard = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
            assert_eq!(heard.expect("no announcement within 10 s"), Some(()));
            watcher.stop().await;
        });
    }
}
