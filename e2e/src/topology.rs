//! A small internet in namespaces: the signal server on 203.0.113.1, and homes, each a
//! device behind its own NAT router, whose LANs all use 198.51.100.0/24 like real homes.
//!
//! ```text
//!   [device ns] 198.51.100.2 --lan-- 198.51.100.1 [router ns] 203.0.113.1x --wan--+
//!                                                                                  | bridge in
//!   [device ns] 198.51.100.2 --lan-- 198.51.100.1 [router ns] 203.0.113.1y --wan--+ the internet ns,
//!                                                                                  | with the server
//!                                                              203.0.113.1 (trellis-signal)
//! ```
//! Routers masquerade (nft) and, like home routers, drop unsolicited traffic from the
//! internet in INPUT as well as FORWARD (see DESIGN.md for why that matters).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::netns::{run, Netns};
use crate::process::{binaries, wait_for, Process};

pub const SERVER_IP: &str = "203.0.113.1";
pub const API_PORT: u16 = 8443;
pub const RELAY_PORT: u16 = 3478;
/// Every home's router on its LAN, and the address its device gets by default.
pub const LAN_ROUTER_IP: &str = "198.51.100.1";
pub const LAN_DEVICE_IP: &str = "198.51.100.2";

/// How a home's router translates and filters.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Nat {
    /// Endpoint-independent mapping (`masquerade`): hole punching works.
    Easy,
    /// A new port per destination (`masquerade random,fully-random`): only a relay works.
    Symmetric,
    /// Easy NAT, but UDP may only go to the server: direct paths are blocked.
    UdpOnlyToServer,
    /// No router at all: the device sits on the internet's switch with its public address,
    /// like a server (or a bench that wants the shortest path between two devices).
    Public,
}

#[derive(Debug)]
pub struct Home {
    pub name: String,
    /// None for [`Nat::Public`].
    pub router: Option<Netns>,
    pub device: Netns,
    pub wan_ip: String,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub helper: Option<Process>,
}

/// The output of one `trellis` command.
#[derive(Debug)]
pub struct Cli {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Cli {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }
}

/// Everything of one test; dropped in reverse order of creation, so processes end before
/// their namespaces go.
#[derive(Debug)]
pub struct World {
    pub homes: Vec<Home>,
    pub server: Option<Process>,
    pub internet: Netns,
    prefix: String,
    pub dir: tempfile::TempDir,
}

/// Where the routers' public addresses go when they change ([`World::rebind_nat`]): above
/// the ones [`World::add_home`] hands out (203.0.113.11 up).
const FRESH_WAN_IPS: std::ops::RangeInclusive<u8> = 101..=254;

impl World {
    /// The internet namespace with its bridge; `tag` keeps names unique per test.
    pub fn new(tag: &str) -> Self {
        Self::with_prefix(format!("t{}{tag}", std::process::id() % 10_000))
    }

    /// A world whose namespaces all start with `prefix` (short: interface names are made
    /// from it and may have 15 characters).
    pub fn with_prefix(prefix: String) -> Self {
        let internet = Netns::new(format!("{prefix}i"));
        internet.exec_ok(&["ip", "link", "add", "br0", "type", "bridge"]);
        internet.exec_ok(&["ip", "addr", "add", &format!("{SERVER_IP}/24"), "dev", "br0"]);
        internet.exec_ok(&["ip", "link", "set", "br0", "up"]);
        // The internet is a plain switch: where br_netfilter is loaded (Docker hosts),
        // bridged packets would otherwise pass this namespace's conntrack and iptables.
        for table in ["iptables", "ip6tables", "arptables"] {
            let _ = internet.exec(&["sysctl", "-qw", &format!("net.bridge.bridge-nf-call-{table}=0")]);
        }
        Self { homes: Vec::new(), server: None, internet, prefix, dir: tempfile::tempdir().unwrap() }
    }

    pub fn server_url(&self) -> String {
        format!("ws://{SERVER_IP}:{API_PORT}")
    }

    pub fn server_data(&self) -> PathBuf {
        self.dir.path().join("server-data")
    }

    pub fn start_server(&mut self) {
        let data = self.server_data();
        // The relay's default 2 MiB/s per allocation would make relayed transfers slow
        // to test; the quota itself is tested in the signal server's own tests.
        let config = self.dir.path().join("signal.toml");
        std::fs::write(&config, "[relay_quotas]\nbytes_per_second_per_allocation = 104857600\n").unwrap();
        let process = Process::spawn(
            &self.internet,
            "trellis-signal",
            &binaries().join("trellis-signal"),
            &[
                "--listen",
                &format!("{SERVER_IP}:{API_PORT}"),
                "--relay-listen",
                &format!("{SERVER_IP}:{RELAY_PORT}"),
                "--data-dir",
                data.to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
            ],
            self.dir.path(),
        );
        self.server = Some(process);
        let internet = &self.internet;
        wait_for("the signal server to listen", || {
            let out = internet.exec(&["ss", "-Htln", &format!("sport = :{API_PORT}")]);
            (!String::from_utf8_lossy(&out.stdout).trim().is_empty()).then_some(())
        });
    }

    /// Kills the server with SIGKILL (nothing flushed on the way out).
    pub fn kill_server(&mut self) {
        self.server.take();
    }

    /// Adds a home behind a router of kind `nat`; returns its index.
    pub fn add_home(&mut self, name: &str, nat: Nat) -> usize {
        self.add_home_with(name, nat, true)
    }

    /// Adds a home whose device's interface is up but has no address and no route yet,
    /// like a machine whose DHCP lease has not come; [`World::set_lan_address`] gives one.
    pub fn add_home_without_address(&mut self, name: &str, nat: Nat) -> usize {
        self.add_home_with(name, nat, false)
    }

    fn add_home_with(&mut self, name: &str, nat: Nat, addressed: bool) -> usize {
        let index = self.homes.len();
        let wan_ip = format!("203.0.113.{}", 11 + index);
        let state_dir = self.dir.path().join(format!("{name}-state"));
        let socket = self.dir.path().join(format!("{name}.sock"));
        if nat == Nat::Public {
            let device = Netns::new(format!("{}d{index}", self.prefix));
            let eth = format!("{}e{index}", self.prefix);
            self.plug_into_internet(&device, &eth, index);
            if addressed {
                device.exec_ok(&["ip", "addr", "add", &format!("{wan_ip}/24"), "dev", &eth]);
            }
            device.exec_ok(&["ip", "link", "set", &eth, "up"]);
            let home =
                Home { name: name.into(), router: None, device, wan_ip, state_dir, socket, helper: None };
            self.homes.push(home);
            return index;
        }
        let router = Netns::new(format!("{}r{index}", self.prefix));
        let device = Netns::new(format!("{}d{index}", self.prefix));
        // WAN: router <-> internet bridge.
        let wan = format!("{}w{index}", self.prefix);
        self.plug_into_internet(&router, &wan, index);
        router.exec_ok(&["ip", "addr", "add", &format!("{wan_ip}/24"), "dev", &wan]);
        router.exec_ok(&["ip", "link", "set", &wan, "up"]);
        // LAN: device <-> router.
        let (lan, eth) = (format!("{}l{index}", self.prefix), format!("{}e{index}", self.prefix));
        run(
            "ip",
            &[
                "link",
                "add",
                &lan,
                "netns",
                &router.name,
                "type",
                "veth",
                "peer",
                "name",
                &eth,
                "netns",
                &device.name,
            ],
        );
        router.exec_ok(&["ip", "addr", "add", &format!("{LAN_ROUTER_IP}/24"), "dev", &lan]);
        router.exec_ok(&["ip", "link", "set", &lan, "up"]);
        device.exec_ok(&["ip", "link", "set", &eth, "up"]);
        if addressed {
            device.exec_ok(&["ip", "addr", "add", &format!("{LAN_DEVICE_IP}/24"), "dev", &eth]);
            device.exec_ok(&["ip", "route", "add", "default", "via", LAN_ROUTER_IP]);
        }
        router.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        load_nft(&router, &router_rules(&wan, &lan, nat));

        let home =
            Home { name: name.into(), router: Some(router), device, wan_ip, state_dir, socket, helper: None };
        self.homes.push(home);
        index
    }

    /// A veth from `ns` (named `inside` there) to a port of the internet's bridge.
    fn plug_into_internet(&self, ns: &Netns, inside: &str, index: usize) {
        let port = format!("{}p{index}", self.prefix);
        run(
            "ip",
            &[
                "link",
                "add",
                inside,
                "netns",
                &ns.name,
                "type",
                "veth",
                "peer",
                "name",
                &port,
                "netns",
                &self.internet.name,
            ],
        );
        self.internet.exec_ok(&["ip", "link", "set", &port, "master", "br0"]);
        self.internet.exec_ok(&["ip", "link", "set", &port, "up"]);
    }

    /// Starts (or restarts) the home's `trellisd` and waits for its socket.
    pub fn start_helper(&mut self, home: usize) {
        let dir = self.dir.path().to_path_buf();
        let h = &mut self.homes[home];
        h.helper.take();
        let _ = std::fs::remove_file(&h.socket);
        let process = Process::spawn(
            &h.device,
            &h.name,
            &binaries().join("trellisd"),
            &[
                "--state-dir",
                h.state_dir.to_str().unwrap(),
                "--socket",
                h.socket.to_str().unwrap(),
                "--tun",
                "trellis0",
                "--name",
                &h.name,
            ],
            &dir,
        );
        h.helper = Some(process);
        let socket = h.socket.clone();
        wait_for("the helper's socket", || socket.exists().then_some(()));
    }

    pub fn stop_helper(&mut self, home: usize) {
        self.homes[home].helper.take();
    }

    /// Runs `trellis --json ARGS` in the home's device namespace.
    pub fn trellis(&self, home: usize, args: &[&str]) -> Cli {
        let mut with_json = vec!["--json"];
        with_json.extend_from_slice(args);
        self.trellis_human(home, &with_json)
    }

    /// Runs `trellis ARGS` in the home's device namespace (human output).
    pub fn trellis_human(&self, home: usize, args: &[&str]) -> Cli {
        let out = self.trellis_command(home).args(args).output().expect("trellis runs");
        Cli {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `trellis --socket …` for the home, ready for arguments; also what to tell a person.
    pub fn trellis_command(&self, home: usize) -> Command {
        let h = &self.homes[home];
        let mut command = h.device.command(binaries().join("trellis").to_str().unwrap());
        command.args(["--socket", h.socket.to_str().unwrap()]);
        command
    }

    /// Runs a command in the home's device namespace.
    pub fn exec(&self, home: usize, args: &[&str]) -> std::process::Output {
        self.homes[home].device.exec(args)
    }

    /// Drops UDP between the two homes' routers (both directions), or restores it.
    pub fn cut_direct(&self, a: usize, b: usize, cut: bool) {
        let (wa, wb) = (&self.homes[a].wan_ip, &self.homes[b].wan_ip);
        if cut {
            let rules = format!(
                "table bridge cut {{
                   chain forward {{
                     type filter hook forward priority 0;
                     ip saddr {wa} ip daddr {wb} meta l4proto udp drop
                     ip saddr {wb} ip daddr {wa} meta l4proto udp drop
                   }}
                 }}\n"
            );
            load_nft(&self.internet, &rules);
        } else {
            let _ = self.internet.exec(&["nft", "delete", "table", "bridge", "cut"]);
        }
    }

    /// The namespaces of this world, for instructions and emergency cleanup.
    pub fn namespaces(&self) -> Vec<String> {
        let mut names = vec![self.internet.name.clone()];
        for home in &self.homes {
            names.extend(home.router.as_ref().map(|r| r.name.clone()));
            names.push(home.device.name.clone());
        }
        names
    }

    /// Leaves the world running after this value is gone (`cargo xtask demo --keep`).
    pub fn keep(mut self) {
        for home in &mut self.homes {
            if let Some(router) = &mut home.router {
                router.keep();
            }
            home.device.keep();
            if let Some(helper) = home.helper.take() {
                helper.detach();
            }
        }
        if let Some(server) = self.server.take() {
            server.detach();
        }
        self.internet.keep();
        let _ = self.dir.keep();
    }

    pub fn log_dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Roaming: a device's address changes, its NAT rebinds and forgets, its helper sleeps.
impl World {
    /// The device's interface: to its router, or to the internet's switch for [`Nat::Public`].
    pub fn device_interface(&self, home: usize) -> String {
        format!("{}e{home}", self.prefix)
    }

    /// The IPv4 addresses (without prefix length) on the device's interface.
    pub fn lan_addresses(&self, home: usize) -> Vec<String> {
        let eth = self.device_interface(home);
        let out = self.homes[home].device.exec_ok(&["ip", "-4", "-o", "addr", "show", "dev", &eth]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace().skip_while(|w| *w != "inet").skip(1);
                words.next().and_then(|cidr| cidr.split('/').next()).map(str::to_string)
            })
            .collect()
    }

    /// Gives the device `ip` in place of whatever address it had, as a new DHCP lease does:
    /// the old address goes (the kernel drops the default route with it), the new one
    /// comes, then the default route again. For a [`Nat::Public`] home `ip` is its public
    /// address, on the internet's /24.
    pub fn set_lan_address(&mut self, home: usize, ip: &str) {
        self.remove_lan_address(home);
        let eth = self.device_interface(home);
        let h = &mut self.homes[home];
        h.device.exec_ok(&["ip", "addr", "add", &format!("{ip}/24"), "dev", &eth]);
        if h.router.is_some() {
            h.device.exec_ok(&["ip", "route", "replace", "default", "via", LAN_ROUTER_IP]);
        } else {
            h.wan_ip = ip.to_string();
        }
    }

    /// Takes the device's addresses away (and with them its default route): a lost lease,
    /// or a machine booting before DHCP answers.
    pub fn remove_lan_address(&self, home: usize) {
        let eth = self.device_interface(home);
        self.homes[home].device.exec_ok(&["ip", "-4", "addr", "flush", "dev", &eth, "scope", "global"]);
    }

    /// The home's router gets a new public address and forgets every mapping, as when an
    /// ISP hands out a new lease or a carrier-grade NAT restarts: the old address goes
    /// (the kernel drops the masquerade mappings made with it), a free one of
    /// 203.0.113.0/24 comes (masquerade takes whatever address the interface has), and
    /// the connection tracking table is flushed. Returns the new address.
    pub fn rebind_nat(&mut self, home: usize) -> String {
        let in_use: Vec<String> =
            self.homes.iter().map(|h| h.wan_ip.clone()).chain([SERVER_IP.to_string()]).collect();
        let fresh = FRESH_WAN_IPS
            .map(|n| format!("203.0.113.{n}"))
            .find(|ip| !in_use.contains(ip))
            .expect("a free address in 203.0.113.0/24");
        let wan = format!("{}w{home}", self.prefix);
        let h = &mut self.homes[home];
        let router = h.router.as_ref().unwrap_or_else(|| panic!("{} has no router to rebind", h.name));
        // Old first, then new: an address added beside the old one would be a secondary,
        // and deleting the primary takes its secondaries with it.
        router.exec_ok(&["ip", "addr", "del", &format!("{}/24", h.wan_ip), "dev", &wan]);
        router.exec_ok(&["ip", "addr", "add", &format!("{fresh}/24"), "dev", &wan]);
        h.wan_ip = fresh.clone();
        self.flush_nat(home);
        fresh
    }

    /// Empties the home router's connection tracking table: every NAT mapping and every
    /// "established" entry that let replies in is forgotten.
    pub fn flush_nat(&self, home: usize) {
        let out = self.router(home).exec(&["conntrack", "-F"]);
        assert!(
            out.status.success(),
            "`conntrack -F` in {} failed (the conntrack package is in xtask's TEST_PACKAGES): {}",
            self.router(home).name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The UDP flows the home's router tracks (its UDP mappings), one `conntrack -L` line each.
    pub fn nat_udp_flows(&self, home: usize) -> Vec<String> {
        let out = self.router(home).exec(&["conntrack", "-L", "-p", "udp"]);
        assert!(out.status.success(), "conntrack -L: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("udp"))
            .map(str::to_string)
            .collect()
    }

    /// Sets how long the home's router keeps a UDP mapping without traffic: `unreplied`
    /// for one that never saw a reply, `replied` for one that did. These sysctls are per
    /// network namespace, so only this router changes.
    pub fn set_nat_udp_timeouts(&self, home: usize, unreplied: Duration, replied: Duration) {
        self.router(home).exec_ok(&[
            "sysctl",
            "-qw",
            &format!("net.netfilter.nf_conntrack_udp_timeout={}", unreplied.as_secs().max(1)),
            &format!("net.netfilter.nf_conntrack_udp_timeout_stream={}", replied.as_secs().max(1)),
        ]);
    }

    /// Sends `signal` ("STOP", "CONT", ...) to the home's `trellisd`; a helper left
    /// stopped is continued and killed when the world is dropped.
    pub fn signal_helper(&mut self, home: usize, signal: &str) {
        let h = &mut self.homes[home];
        h.helper.as_mut().unwrap_or_else(|| panic!("{} runs no helper", h.name)).signal(signal);
    }

    /// The home's running `trellisd`.
    pub fn helper(&self, home: usize) -> &Process {
        let h = &self.homes[home];
        h.helper.as_ref().unwrap_or_else(|| panic!("{} runs no helper", h.name))
    }

    fn router(&self, home: usize) -> &Netns {
        let h = &self.homes[home];
        h.router.as_ref().unwrap_or_else(|| panic!("{} has no router", h.name))
    }
}

fn router_rules(wan: &str, lan: &str, nat: Nat) -> String {
    let masquerade = match nat {
        Nat::Symmetric => "masquerade random,fully-random",
        Nat::Easy | Nat::UdpOnlyToServer => "masquerade",
        Nat::Public => unreachable!("a home with a public address has no router"),
    };
    let udp_block = match nat {
        Nat::UdpOnlyToServer => format!("iifname \"{lan}\" ip daddr != {SERVER_IP} meta l4proto udp drop"),
        _ => String::new(),
    };
    format!(
        "table ip nat {{
           chain postrouting {{
             type nat hook postrouting priority 100;
             oifname \"{wan}\" {masquerade}
           }}
         }}
         table inet filter {{
           chain input {{
             type filter hook input priority 0; policy accept;
             iifname \"{wan}\" ct state established,related accept
             iifname \"{wan}\" drop
           }}
           chain forward {{
             type filter hook forward priority 0; policy drop;
             {udp_block}
             iifname \"{lan}\" oifname \"{wan}\" accept
             iifname \"{wan}\" oifname \"{lan}\" ct state established,related accept
           }}
         }}\n"
    )
}

fn load_nft(ns: &Netns, rules: &str) {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("nft runs");
    child.stdin.take().unwrap().write_all(rules.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "nft rules failed: {}\n{rules}", String::from_utf8_lossy(&out.stderr));
}
