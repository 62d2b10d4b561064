//! Processes in namespaces, waiting on conditions, and the binaries under test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::netns::Netns;

/// Every wait ends here: generous for a loaded 2-core CI machine.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A process in a namespace, its output going to a log file; killed when dropped.
#[derive(Debug)]
pub struct Process {
    pub name: String,
    child: Child,
    pub log: PathBuf,
    /// Stopped by SIGSTOP and not continued yet: continued before it is killed on drop.
    stopped: bool,
}

/// What the helpers and the server log: `TRELLIS_E2E_LOG` when set (to chase a failure
/// with more detail, e.g. `info,trellis_helper=debug,rtc_ice=debug`), else signalling and
/// the daemon's events.
fn log_filter() -> String {
    std::env::var("TRELLIS_E2E_LOG")
        .unwrap_or_else(|_| "info,trellis_helper::signal=debug,trellis_helper::daemon=debug".into())
}

impl Process {
    pub fn spawn(ns: &Netns, name: &str, program: &Path, args: &[&str], logs: &Path) -> Self {
        let log = logs.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = ns
            .command(program.to_str().unwrap())
            .args(args)
            .env("RUST_LOG", log_filter())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self { name: name.into(), child, log, stopped: false }
    }

    /// Runs a prepared command outside any namespace (e.g. the desktop app, which only
    /// talks to a helper's socket, a display and a bus).
    pub fn spawn_command(name: &str, mut command: Command, logs: &Path) -> Self {
        let log = logs.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self { name: name.into(), child, log, stopped: false }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails with the log if the process died.
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("{} exited ({status}):\n{}", self.name, self.log_text());
        }
    }
}

impl Process {
    /// The process id (`ip netns exec` execs the program, so this is the program itself).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` ("STOP", "CONT", "TERM", ...) with kill(1). A stopped process is
    /// remembered, so that dropping it continues it first.
    pub fn signal(&mut self, signal: &str) {
        let pid = self.pid().to_string();
        let out = Command::new("kill").args(["-s", signal, &pid]).output().expect("kill runs");
        assert!(
            out.status.success(),
            "kill -s {signal} {} ({pid}) failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        match signal {
            "STOP" => self.stopped = true,
            "CONT" => self.stopped = false,
            _ => {}
        }
    }

    /// The process's state letter from /proc/PID/stat: 'T' while stopped by a signal.
    pub fn state(&self) -> char {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .unwrap_or_else(|e| panic!("cannot read the state of {}: {e}", self.name));
        // "PID (COMM) STATE ...": COMM may hold spaces and parentheses, STATE follows the last ')'.
        stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()).unwrap_or('?')
    }

    /// How many file descriptors the process holds (/proc/PID/fd).
    pub fn open_fds(&self) -> usize {
        proc_entries(self.pid(), "fd")
    }

    /// How many threads the process runs (/proc/PID/task).
    pub fn threads(&self) -> usize {
        proc_entries(self.pid(), "task")
    }
}

fn proc_entries(pid: u32, dir: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/{dir}"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/{dir}: {e}"))
        .count()
}

impl Process {
    /// Lets the process run on after this value is gone.
    pub fn detach(self) {
        std::mem::forget(self);
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too; continuing it first is for certainty that no
        // frozen helper outlives a test that failed while it was stopped.
        if self.stopped {
            let _ = Command::new("kill").args(["-s", "CONT", &self.pid().to_string()]).output();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failing test shows every process's log; TRELLIS_E2E_PRINT_LOGS shows them for
        // passing ones too, to compare a slow run with a quick one.
        if std::thread::panicking() || std::env::var_os("TRELLIS_E2E_PRINT_LOGS").is_some() {
            eprintln!("----- {} log -----\n{}", self.name, self.log_text());
        }
    }
}

/// Waits until `check` returns `Some`, polling; panics with `what` at the deadline.
pub fn wait_for<T>(what: &str, check: impl FnMut() -> Option<T>) -> T {
    wait_for_within(what, DEADLINE, check)
}

/// [`wait_for`] with its own deadline.
pub fn wait_for_within<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100)); // polling interval, not synchronization
    }
}

/// Where the real binaries are: `TRELLIS_E2E_BIN_DIR` (set by `cargo xtask test`, which
/// builds them first), else built here once per test run. Either way they come from their
/// own `cargo build` in the `e2e` profile: `cargo test` compiles the helper with a
/// test-only mock clock for WireGuard that must never reach a binary carrying traffic.
/// The nested build uses its own target directory, whose lock the outer `cargo test`
/// does not hold.
pub fn binaries() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("TRELLIS_E2E_BIN_DIR") {
            return PathBuf::from(dir);
        }
        let root = workspace_root();
        let target = root.join("target").join("e2e-build");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(&root)
            .args(["build", "--profile", "e2e", "-p", "trellis-helper", "-p", "trellis-signal", "--bins"])
            .arg("--target-dir")
            .arg(&target)
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the e2e binaries failed");
        target.join("e2e")
    })
}

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("e2e sits in the workspace").to_path_buf()
}
