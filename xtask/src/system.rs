//! The machine around the tasks: Debian packages the tests need, and running commands.

use std::process::Command;

use anyhow::{bail, Context, Result};

/// Debian packages the test suite needs beyond the Rust toolchain.
/// openssl: the signal server's TLS test makes a throwaway certificate with it.
/// iproute2 and iputils-ping: the helper's namespace smoke test builds its network and pings across it.
/// nftables: the end-to-end tests' NAT routers.
/// conntrack: the end-to-end tests make a NAT router forget its mappings (`conntrack -F`).
pub const TEST_PACKAGES: &[&str] = &["openssl", "iproute2", "iputils-ping", "nftables", "conntrack"];

/// Debian packages `cargo xtask bench` needs beyond [`TEST_PACKAGES`]: iperf3 for throughput,
/// and wireguard-go with wg (wireguard-tools) as the userspace WireGuard to compare with.
pub const BENCH_PACKAGES: &[&str] = &["iperf3", "wireguard-go", "wireguard-tools"];

/// Installs the Debian packages among `packages` that are missing (needs root and apt).
pub fn ensure_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !is_installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("==> installing Debian packages: {}", missing.join(" "));
    run("apt-get", &["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(&missing);
    run("apt-get", &args).context("installing packages failed; run `cargo xtask` as root on Debian 12")
}

fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Runs a command with inherited output and fails with its name if it fails.
pub fn run(program: &str, args: &[&str]) -> Result<()> {
    let status =
        Command::new(program).args(args).status().with_context(|| format!("could not start `{program}`"))?;
    if !status.success() {
        bail!("`{program} {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Fails with a clear sentence unless this runs as root with /dev/net/tun.
pub fn require_root_and_tun(what: &str) -> Result<()> {
    let (root, tun) = trellis_e2e::root_and_tun();
    if !root {
        bail!("{what} makes network namespaces and TUN devices: run it as root (sudo -E cargo xtask ...)");
    }
    if !tun {
        bail!("{what} needs /dev/net/tun (load the tun module: modprobe tun)");
    }
    Ok(())
}

/// The free space on the file system holding `path`, as `df -h` prints it ("14G"), or
/// "unknown" if `df` cannot tell. A build that fills the disk fails in the linker with a
/// bare exit status, so the test task names the free space beside any failure.
pub fn free_space(path: &std::path::Path) -> String {
    let out = Command::new("df").args(["-h", "--output=avail"]).arg(path).output();
    let text = match &out {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout),
        _ => return "unknown".into(),
    };
    text.lines().nth(1).map_or_else(|| "unknown".into(), |line| line.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_reads_df_or_says_unknown() {
        let here = free_space(std::path::Path::new("/"));
        assert!(here.chars().next().is_some_and(|c| c.is_ascii_digit()), "df's figure, got {here:?}");
        assert_eq!(free_space(std::path::Path::new("/no/such/dir")), "unknown");
    }
}
