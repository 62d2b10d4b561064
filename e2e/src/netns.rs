//! Network namespaces and veth links, removed when dropped.

use std::process::{Command, Output};

pub(crate) fn run(program: &str, args: &[&str]) -> Output {
    let out =
        Command::new(program).args(args).output().unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A unique short prefix for this test process's namespaces and links.
pub fn unique(tag: &str) -> String {
    format!("tr{}{}", std::process::id() % 100_000, tag)
}

/// A network namespace, deleted when dropped.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
    kept: bool,
}

impl Netns {
    pub fn new(name: String) -> Self {
        let _ = Command::new("ip").args(["netns", "del", &name]).output(); // a leftover of a killed run
        run("ip", &["netns", "add", &name]);
        let ns = Self { name, kept: false };
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    pub fn exec(&self, args: &[&str]) -> Output {
        self.command(args[0]).args(&args[1..]).output().expect("ip netns exec runs")
    }

    pub fn exec_ok(&self, args: &[&str]) -> Output {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "`{}` in {} failed: {}{}",
            args.join(" "),
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

/// Kills every process in the namespace `name`, then deletes it: what a crashed or
/// interrupted run leaves behind is removed by its name alone.
pub fn remove_namespace(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).output();
        }
    }
    let _ = Command::new("ip").args(["netns", "del", name]).output();
}

/// The namespaces whose names start with `prefix`.
pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().map(|o| o.stdout).unwrap_or_default();
    String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

impl Netns {
    /// Leaves the namespace in place when this value is dropped.
    pub fn keep(&mut self) {
        self.kept = true;
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        // Deleting the namespace removes its veth ends and TUN devices too.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// Connects `a` and `b` with a veth pair and gives each end an address (CIDR form).
pub fn veth(a: &Netns, a_addr: &str, b: &Netns, b_addr: &str) {
    let (a_if, b_if) = (format!("{}v", a.name), format!("{}v", b.name));
    run(
        "ip",
        &["link", "add", &a_if, "netns", &a.name, "type", "veth", "peer", "name", &b_if, "netns", &b.name],
    );
    a.exec_ok(&["ip", "addr", "add", a_addr, "dev", &a_if]);
    a.exec_ok(&["ip", "link", "set", &a_if, "up"]);
    b.exec_ok(&["ip", "addr", "add", b_addr, "dev", &b_if]);
    b.exec_ok(&["ip", "link", "set", &b_if, "up"]);
}
