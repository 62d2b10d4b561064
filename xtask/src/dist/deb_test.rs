//! The .deb on a real system: install it with dpkg, check what it put where, run the helper
//! the way its unit does, check who may control it, upgrade, remove and purge.
//!
//! systemd is not PID 1 on our build machines, so the service itself is not started:
//! the helper runs with the unit's `ExecStart`, inside the unit's capability bounding set
//! and umask, in a network namespace made for the test, with the directories systemd would
//! create (`RuntimeDirectory=`, `StateDirectory=`); with a signal server from the
//! end-to-end build in the same namespace, it also makes its TUN device there. Everything
//! the test adds (package, users, group, namespace, directories) is removed at the end,
//! pass or fail. It refuses to run where Trellis is installed or has state.

use std::io::Read as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::system;

const GROUP: &str = "trellis";
/// Added to the group by the package's postinst (as the user behind `pkexec`).
const MEMBER: &str = "trellis-t-member";
/// Never in the group: must be refused.
const OUTSIDER: &str = "trellis-t-outsider";
const NAMESPACE: &str = "trellis-deb-test";
const STATE_DIR: &str = "/var/lib/trellis";
const RUN_DIR: &str = "/run/trellis";
const SOCKET: &str = "/run/trellis/trellisd.sock";
const UNIT: &str = "/usr/lib/systemd/system/trellisd.service";
/// Written by the postinst for the installing user (TRELLIS_OWNER_UID).
const OWNER_DROP_IN: &str = "/etc/systemd/system/trellisd.service.d/owner.conf";
/// What the package must install, with owner root and these modes.
pub(super) const FILES: &[(&str, u32)] = &[
    ("/usr/bin/trellisd", 0o755),
    ("/usr/bin/trellis", 0o755),
    ("/usr/bin/trellis-app", 0o755),
    (UNIT, 0o644),
];
/// How long the helper may take to listen, and to exit after SIGTERM.
const HELPER_DEADLINE: Duration = Duration::from_secs(30);

pub fn run(deb: &Path) -> Result<()> {
    let started = Instant::now();
    system::require_root_and_tun("the package test")?;
    system::ensure_packages(&["dpkg", "systemd", "util-linux", "passwd", "iproute2"])?;
    let deb = deb.canonicalize().with_context(|| format!("no package at {}", deb.display()))?;
    let package = deb_field(&deb, "Package")?;
    refuse_to_clobber(&package)?;
    println!("==> testing {} (package {package})", deb.display());
    let mut machine = Leftovers {
        package,
        installed: false,
        users: Vec::new(),
        group_existed: group_gid(GROUP).is_some(),
        netns: false,
        helper: None,
        signal: None,
        run_dir_ours: false,
        state_dir_ours: false,
    };
    let result = test(&deb, &mut machine);
    drop(machine); // removes everything, pass or fail
    match &result {
        Ok(()) => println!("==> the package passed ({} s)", started.elapsed().as_secs()),
        Err(_) => println!("==> the package FAILED ({} s)", started.elapsed().as_secs()),
    }
    result
}

fn test(deb: &Path, machine: &mut Leftovers) -> Result<()> {
    println!("==> [1/9] two throwaway users: {MEMBER} (the installing user) and {OUTSIDER}");
    for user in [MEMBER, OUTSIDER] {
        run_ok("useradd", &["--no-create-home", "--shell", "/usr/sbin/nologin", user])?;
        machine.users.push(user);
    }
    let member_uid = text(&run_ok("id", &["-u", MEMBER])?);

    println!("==> [2/9] dpkg -i, as if {MEMBER} installed it through pkexec (PKEXEC_UID={member_uid})");
    machine.installed = true;
    machine.state_dir_ours = true;
    dpkg(&["-i"], deb, &[("PKEXEC_UID", member_uid.as_str())])?;
    let groups = text(&run_ok("id", &["-nG", MEMBER])?);
    ensure!(
        groups.split_whitespace().any(|g| g == GROUP),
        "the postinst did not add {MEMBER} to {GROUP} (its groups: {groups})"
    );
    let gid = group_gid(GROUP).context("the postinst did not create the group trellis")?;
    let drop_in = std::fs::read_to_string(OWNER_DROP_IN).context("the postinst wrote no owner drop-in")?;
    let owner_env = format!("TRELLIS_OWNER_UID={member_uid}");
    ensure!(
        drop_in.lines().any(|l| l == format!("Environment={owner_env}")),
        "{OWNER_DROP_IN} does not name {MEMBER} ({member_uid}):\n{drop_in}"
    );

    println!("==> [3/9] files, owners and modes");
    for (path, mode) in FILES {
        check_file(path, *mode)?;
    }
    let listed = text(&run_ok("dpkg", &["-L", &machine.package])?);
    let desktop = listed
        .lines()
        .find(|l| l.starts_with("/usr/share/applications/") && l.ends_with(".desktop"))
        .context("the package has no desktop entry in /usr/share/applications")?;
    check_file(desktop, 0o644)?;
    let entry = std::fs::read_to_string(desktop)?;
    ensure!(entry.lines().any(|l| l == "Exec=trellis-app"), "{desktop} does not start trellis-app:\n{entry}");
    let icons = listed.lines().filter(|l| l.starts_with("/usr/share/icons/hicolor/") && l.ends_with(".png"));
    ensure!(icons.count() > 0, "the package has no icons in /usr/share/icons/hicolor");
    println!("      {} programs and the unit as expected, desktop entry {desktop}, icons", FILES.len() - 1);

    println!("==> [4/9] systemd-analyze verify {UNIT}");
    let verify = Command::new("systemd-analyze").args(["verify", UNIT]).output()?;
    let complaints = String::from_utf8_lossy(&verify.stderr).trim().to_string();
    // verify exits 0 on unknown keys and bad values too, and only says so on stderr.
    ensure!(verify.status.success() && complaints.is_empty(), "systemd-analyze verify {UNIT}: {complaints}");

    println!("==> [5/9] trellisd as the unit starts it, in network namespace {NAMESPACE}");
    let unit = std::fs::read_to_string(UNIT)?;
    let exec_start: Vec<String> =
        unit_value(&unit, "ExecStart")?.split_whitespace().map(str::to_string).collect();
    ensure!(
        exec_start[0] == "/usr/bin/trellisd",
        "the unit starts {} instead of /usr/bin/trellisd",
        exec_start[0]
    );
    let bounding_set = unit_value(&unit, "CapabilityBoundingSet")?
        .split_whitespace()
        .map(|cap| format!("+{}", cap.trim_start_matches("CAP_").to_lowercase()))
        .collect::<Vec<_>>()
        .join(",");
    let umask = unit_value(&unit, "UMask")?;
    // What systemd creates before the start: RuntimeDirectory= (0755) and StateDirectory=
    // (0700; dpkg made none, and refuse_to_clobber saw none before).
    machine.run_dir_ours = !Path::new(RUN_DIR).exists();
    make_dir(RUN_DIR, 0o755)?;
    make_dir(STATE_DIR, 0o700)?;
    machine.netns = true;
    run_ok("ip", &["netns", "add", NAMESPACE])?;
    run_ok("ip", &["-n", NAMESPACE, "link", "set", "lo", "up"])?;
    let log_path = std::env::temp_dir().join("trellis-deb-test-trellisd.log");
    let log = std::fs::File::create(&log_path)?;
    // ip, setpriv and sh each exec the next, so the child's pid is trellisd's.
    // The environment systemd adds from the postinst's drop-in.
    let (owner_key, owner_uid) = owner_env.split_once('=').unwrap();
    let helper = Command::new("ip")
        .args(["netns", "exec", NAMESPACE, "setpriv", "--bounding-set", &format!("-all,{bounding_set}")])
        .args(["--no-new-privs", "--", "sh", "-c", &format!("umask {umask} && exec \"$@\""), "sh"])
        .args(&exec_start)
        .env(owner_key, owner_uid)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start trellisd")?;
    machine.helper = Some(helper);
    println!(
        "      {} (bounding set {bounding_set}, umask {umask}; log {})",
        exec_start.join(" "),
        log_path.display()
    );
    let helper_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    wait_until("trellisd to listen on its socket", || {
        if let Some(status) = machine.helper.as_mut().unwrap().try_wait()? {
            bail!("trellisd exited ({status}):\n{}", helper_log());
        }
        Ok(Path::new(SOCKET).exists())
    })?;
    let socket = std::fs::metadata(SOCKET)?;
    ensure!(
        socket.mode() & 0o777 == 0o660 && socket.gid() == gid,
        "{SOCKET} has mode {:o} and gid {}, not 0660 and {GROUP} ({gid})",
        socket.mode() & 0o777,
        socket.gid()
    );
    check_file(&format!("{STATE_DIR}/device.key"), 0o600)?;
    let pid = machine.helper.as_ref().unwrap().id();
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let caps: Vec<&str> =
        proc_status.lines().filter(|l| l.starts_with("CapEff:") || l.starts_with("CapBnd:")).collect();
    println!("      trellisd's capabilities: {}", caps.join(", ").replace('\t', " "));

    println!("==> [6/9] trellis status: answered for {MEMBER}, refused for {OUTSIDER}");
    let member = as_user(MEMBER, &["/usr/bin/trellis", "status"])?;
    ensure!(
        member.status.success(),
        "`trellis status` as {MEMBER} failed ({}): {}{}\n{}",
        member.status,
        text(&member),
        String::from_utf8_lossy(&member.stderr),
        helper_log()
    );
    for line in text(&member).lines() {
        println!("      | {line}");
    }
    // As right after the install: the member's session does not have the group yet, and
    // the helper lets them in by uid.
    let before_login = Command::new("setpriv")
        .args(["--reuid", MEMBER, "--regid", MEMBER, "--clear-groups", "--", "/usr/bin/trellis", "status"])
        .output()
        .context("cannot run setpriv")?;
    ensure!(
        before_login.status.success(),
        "`trellis status` as {MEMBER} without the group (before logging in again) failed ({}): {}",
        before_login.status,
        String::from_utf8_lossy(&before_login.stderr)
    );
    let outsider = as_user(OUTSIDER, &["/usr/bin/trellis", "status"])?;
    ensure!(
        outsider.status.code() == Some(4),
        "`trellis status` as {OUTSIDER} should be refused with exit code 4, got {}: {}{}",
        outsider.status,
        text(&outsider),
        String::from_utf8_lossy(&outsider.stderr)
    );
    println!("      {OUTSIDER}: {}", String::from_utf8_lossy(&outsider.stderr).trim());
    check_tun(machine, &helper_log)?;
    let key = std::fs::read(format!("{STATE_DIR}/device.key"))?;
    stop_helper(machine, &helper_log)?;

    println!("==> [8/9] dpkg -i again (an upgrade): the device key stays");
    dpkg(&["-i"], deb, &[])?;
    ensure!(std::fs::read(format!("{STATE_DIR}/device.key"))? == key, "the upgrade changed the device key");
    for (path, mode) in FILES {
        check_file(path, *mode)?;
    }

    println!("==> [9/9] dpkg -r: the programs go, the state stays; dpkg -P: the state goes");
    dpkg(&["-r"], Path::new(&machine.package), &[])?;
    for (path, _) in FILES {
        ensure!(!Path::new(path).exists(), "{path} is still there after dpkg -r");
    }
    ensure!(
        std::fs::read(format!("{STATE_DIR}/device.key"))? == key,
        "dpkg -r changed or removed the device key"
    );
    dpkg(&["-P"], Path::new(&machine.package), &[])?;
    machine.installed = false;
    ensure!(!Path::new(STATE_DIR).exists(), "{STATE_DIR} is still there after dpkg -P");
    ensure!(!Path::new(OWNER_DROP_IN).exists(), "{OWNER_DROP_IN} is still there after dpkg -P");
    Ok(())
}

/// The helper makes its TUN device inside the unit's limits: a signal server from the
/// end-to-end build (`cargo xtask test` makes it; not built here) runs in the namespace,
/// and the group member creates a network on it.
fn check_tun(machine: &mut Leftovers, helper_log: &dyn Fn() -> String) -> Result<()> {
    let signal = crate::e2e_bin_dir().join("trellis-signal");
    if !signal.is_file() {
        println!(
            "==> [7/9] SKIPPED: no {} (`cargo xtask test` builds it): the TUN device is not checked",
            signal.display()
        );
        return Ok(());
    }
    println!("==> [7/9] the TUN device: {MEMBER} creates a network on a signal server in {NAMESPACE}");
    let data = tempfile::tempdir()?;
    let server = Command::new("ip")
        .args(["netns", "exec", NAMESPACE])
        .arg(&signal)
        .args(["--listen", "127.0.0.1:8443", "--relay-listen", "127.0.0.1:3478", "--data-dir"])
        .arg(data.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", signal.display()))?;
    machine.signal = Some(server);
    wait_until("the signal server to listen", || {
        let out = run_ok("ip", &["netns", "exec", NAMESPACE, "ss", "-Htln", "sport = :8443"])?;
        Ok(!text(&out).is_empty())
    })?;
    let created =
        as_user(MEMBER, &["/usr/bin/trellis", "create", "home", "--server", "ws://127.0.0.1:8443"])?;
    ensure!(
        created.status.success(),
        "`trellis create` as {MEMBER} failed ({}): {}{}\n{}",
        created.status,
        text(&created),
        String::from_utf8_lossy(&created.stderr),
        helper_log()
    );
    let mut address = String::new();
    wait_until("the helper's TUN device trellis0 with an address", || {
        let out = Command::new("ip")
            .args(["-n", NAMESPACE, "-o", "-4", "addr", "show", "dev", "trellis0"])
            .output()?;
        address = text(&out);
        Ok(out.status.success() && address.contains("inet "))
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", helper_log()))?;
    println!("      | {}", address.split_whitespace().collect::<Vec<_>>().join(" "));
    if let Some(mut server) = machine.signal.take() {
        let _ = server.kill();
        let _ = server.wait();
    }
    Ok(())
}

/// Refuses to run where a real installation or its state could be touched.
fn refuse_to_clobber(package: &str) -> Result<()> {
    let status = Command::new("dpkg-query").args(["-W", "-f=${Status}", package]).output()?;
    // "install ok installed"; a package dpkg merely remembers is "… not-installed".
    if String::from_utf8_lossy(&status.stdout).split_whitespace().last() == Some("installed") {
        bail!("the package {package} is installed on this machine; the test would remove it: dpkg -P {package} first");
    }
    if Path::new(STATE_DIR).exists() {
        bail!("{STATE_DIR} exists (a device key?); the test would purge it: move it away first");
    }
    if Path::new(OWNER_DROP_IN).exists() {
        bail!("{OWNER_DROP_IN} exists (left by an earlier install?); the test would purge it: move it away first");
    }
    if Path::new(SOCKET).exists() {
        bail!("{SOCKET} exists: a trellisd may be running here; stop it first");
    }
    for user in [MEMBER, OUTSIDER] {
        if Command::new("getent").args(["passwd", user]).output()?.status.success() {
            bail!("the user {user} exists (left by an interrupted test?): userdel {user} first");
        }
    }
    if Command::new("ip").args(["netns", "pids", NAMESPACE]).output()?.status.success() {
        bail!("the network namespace {NAMESPACE} exists (left by an interrupted test?): ip netns del {NAMESPACE}");
    }
    Ok(())
}

/// What the test added to the machine; `drop` removes it.
struct Leftovers {
    package: String,
    installed: bool,
    users: Vec<&'static str>,
    group_existed: bool,
    netns: bool,
    helper: Option<Child>,
    signal: Option<Child>,
    run_dir_ours: bool,
    state_dir_ours: bool,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        for mut process in [self.helper.take(), self.signal.take()].into_iter().flatten() {
            let _ = process.kill();
            let _ = process.wait();
        }
        if self.netns {
            let _ = Command::new("ip").args(["netns", "del", NAMESPACE]).output();
        }
        if self.installed {
            let _ = Command::new("dpkg").args(["-P", &self.package]).output();
        }
        for user in &self.users {
            let _ = Command::new("userdel").arg(user).output();
        }
        if !self.group_existed {
            let _ = Command::new("groupdel").arg(GROUP).output();
        }
        if self.run_dir_ours {
            let _ = std::fs::remove_dir_all(RUN_DIR);
        }
        if self.state_dir_ours {
            let _ = std::fs::remove_dir_all(STATE_DIR);
        }
        println!("==> cleaned up: package, users, group, namespace and directories are gone");
    }
}

fn stop_helper(machine: &mut Leftovers, helper_log: &dyn Fn() -> String) -> Result<()> {
    let mut helper = machine.helper.take().context("trellisd is not running")?;
    run_ok("kill", &["-TERM", &helper.id().to_string()])?;
    let deadline = Instant::now() + HELPER_DEADLINE;
    let status = loop {
        if let Some(status) = helper.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = helper.kill();
            bail!("trellisd did not exit within {HELPER_DEADLINE:?} of SIGTERM:\n{}", helper_log());
        }
        std::thread::sleep(Duration::from_millis(100)); // polling interval
    };
    ensure!(status.success(), "trellisd exited with {status} on SIGTERM:\n{}", helper_log());
    ensure!(!Path::new(SOCKET).exists(), "trellisd left {SOCKET} behind");
    Ok(())
}

/// Runs `argv` as `user` with the groups /etc/group gives them (as a login would).
fn as_user(user: &str, argv: &[&str]) -> Result<Output> {
    Command::new("setpriv")
        .args(["--reuid", user, "--regid", user, "--init-groups", "--"])
        .args(argv)
        .output()
        .context("cannot run setpriv")
}

fn dpkg(action: &[&str], target: &Path, env: &[(&str, &str)]) -> Result<()> {
    let mut command = Command::new("dpkg");
    command.args(action).arg(target).env_remove("SUDO_USER").env_remove("PKEXEC_UID");
    command.envs(env.iter().copied());
    let out = command.output().context("cannot run dpkg")?;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    for line in said.lines() {
        println!("      | {line}");
    }
    ensure!(out.status.success(), "`dpkg {} {}` failed ({})", action.join(" "), target.display(), out.status);
    Ok(())
}

fn check_file(path: &str, mode: u32) -> Result<()> {
    let meta = std::fs::metadata(path).with_context(|| format!("{path} is missing"))?;
    let actual = meta.permissions().mode() & 0o7777;
    ensure!(actual == mode, "{path} has mode {actual:o}, not {mode:o}");
    ensure!(meta.uid() == 0 && meta.gid() == 0, "{path} belongs to {}:{}, not root", meta.uid(), meta.gid());
    Ok(())
}

fn make_dir(path: &str, mode: u32) -> Result<()> {
    std::fs::create_dir_all(path).with_context(|| format!("cannot create {path}"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {path}"))
}

/// The value of the first `key=` line of a unit file.
fn unit_value<'a>(unit: &'a str, key: &str) -> Result<&'a str> {
    unit.lines()
        .find_map(|line| line.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
        .map(str::trim)
        .with_context(|| format!("the unit has no {key}="))
}

fn deb_field(deb: &Path, field: &str) -> Result<String> {
    let out = run_ok("dpkg-deb", &["--field", deb.to_str().context("a non-UTF-8 path")?, field])?;
    Ok(text(&out))
}

fn group_gid(name: &str) -> Option<u32> {
    let mut etc_group = String::new();
    std::fs::File::open("/etc/group").ok()?.read_to_string(&mut etc_group).ok()?;
    etc_group.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name).then(|| fields.nth(1)?.parse().ok()).flatten()
    })
}

fn wait_until(what: &str, mut done: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + HELPER_DEADLINE;
    while !done()? {
        if Instant::now() > deadline {
            bail!("timed out after {HELPER_DEADLINE:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100)); // polling interval
    }
    Ok(())
}

fn run_ok(program: &str, args: &[&str]) -> Result<Output> {
    let out = Command::new(program).args(args).output().with_context(|| format!("cannot run {program}"))?;
    ensure!(
        out.status.success(),
        "`{program} {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(out)
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
