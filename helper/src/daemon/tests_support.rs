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

/// Moves the calling thread (only it, and the threads and processes it starts) into a
/// network namespace of its own, which the kernel removes with its last thread.
#[allow(unsafe_code)]
pub(crate) fn own_network_namespace() {
    // SAFETY: unshare takes no pointers; CLONE_NEWNET changes only this thread's network
    // namespace.
    let result = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(result, 0, "unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
}
