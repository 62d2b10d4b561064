//! What the daemon's privileged tests share.

/// Root and /dev/net/tun, or a loud skip (a failure under CI=true).
pub(crate) fn privileged(what: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    let tun = std::path::Path::new("/dev/net/tun").exists();
    if root && tun {
        return true;
    }
    let why = format!("{what} needs root and /dev/net/tun (root: {root}, /dev/net/tun: {tun})");
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}; CI must run it");
    eprintln!("SKIPPED (not silently): {why}");
    false
}

/// Runs `test` on a thread of its own, in a network namespace of its own (removed by the
/// kernel with the thread), on a current-thread runtime; a panic fails the caller.
pub(crate) fn in_own_network_namespace<F>(test: impl FnOnce() -> F + Send + 'static)
where
    F: std::future::Future<Output = ()>,
{
    let inside = std::thread::spawn(|| {
        own_network_namespace();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(test());
    });
    inside.join().unwrap();
}

/// Waits until the interface `name` has no address any more (it is gone), or fails with
/// `what` after 10 s. Not at once: a child process that another test forks in that moment
/// holds a copy of a TUN descriptor until its `exec`, and the interface goes with the last
/// copy.
pub(crate) fn wait_until_interface_gone(name: &str, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while if_addrs::get_if_addrs().unwrap().iter().any(|i| i.name == name) {
        assert!(std::time::Instant::now() < deadline, "{what}: {name} still there after 10 s");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Moves the calling thread (only it, and the threads and processes it starts) into a
/// network namespace of its own, which the kernel removes with its last thread.
#[allow(unsafe_code)]
fn own_network_namespace() {
    // SAFETY: unshare takes no pointers; CLONE_NEWNET changes only this thread's network
    // namespace.
    let result = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(result, 0, "unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
}
