//! A tiny harness for tests that run the real binaries in Linux network namespaces:
//! namespaces, veth links and processes that are always torn down (on pass, failure or
//! panic), and binaries built once per test run without test-only features.
//!
//! Addresses are documentation ranges only (198.51.100.0/24, 203.0.113.0/24,
//! 192.0.2.0/24) inside namespaces the harness made; nothing is routed out of the machine.

use std::path::Path;

pub mod desktop;
mod netns;
mod process;
pub mod scenario;
pub mod topology;
pub mod webdriver;

pub use netns::{namespaces_with_prefix, remove_namespace, unique, veth, Netns};
pub use process::{binaries, wait_for, wait_for_within, workspace_root, Process, DEADLINE};

/// Whether this process runs as root, and whether /dev/net/tun exists: what namespaces and
/// TUN devices need.
pub fn root_and_tun() -> (bool, bool) {
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false);
    (root, Path::new("/dev/net/tun").exists())
}

/// Whether the test may run: root is needed for namespaces and TUN devices. Under
/// CI=true a missing privilege fails the test; elsewhere it says loudly that it skips.
pub fn privileged_or_explain(test: &str) -> bool {
    let (root, tun) = root_and_tun();
    if root && tun {
        return true;
    }
    let why = format!("{test} needs root and /dev/net/tun (root: {root}, /dev/net/tun: {tun})");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why}; CI must run it");
    }
    eprintln!("SKIPPED (not silently): {why}");
    false
}
