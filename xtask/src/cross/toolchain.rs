//! Debian's Rust toolchain (`rustc-web`, `cargo-web`, `rust-web-clippy`, `rust-web-src`) as
//! the cross compiler: rustup has only the Linux target here and cannot fetch others, while
//! Debian's toolchain ships the standard library's source, so `-Zbuild-std` builds std for
//! any target it knows. rustup's toolchain stays the default for everything else.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian's cargo and rustc; rustup's proxies in ~/.cargo/bin come first on PATH, so these
/// are always called by their full path.
const CARGO: &str = "/usr/bin/cargo";
const RUSTC: &str = "/usr/bin/rustc";
/// Called directly: `cargo clippy` would look in $CARGO_HOME/bin first and find rustup's.
const CARGO_CLIPPY: &str = "/usr/bin/cargo-clippy";
const CLIPPY_DRIVER: &str = "/usr/bin/clippy-driver";

/// The workspace's profile for these builds (Cargo.toml: no optimization, no debug info).
const PROFILE: &str = "cross";

/// Debian packages of the toolchain (bookworm-security).
pub const PACKAGES: &[&str] = &["rustc-web", "cargo-web", "rust-web-clippy", "rust-web-src"];

/// Variables that rustup's proxies and the outer `cargo xtask` set for *their* toolchain;
/// inherited, they would send Debian's cargo back to rustup's rustc and std sources.
const INHERITED_TOOLCHAIN_VARS: &[&str] = &[
    "RUSTUP_TOOLCHAIN",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTDOC",
    "CARGO_BUILD_RUSTC",
    "CARGO_MAKEFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTFLAGS",
    "CLIPPY_ARGS",
];

/// How one `cargo` run of the cross toolchain is set up.
#[derive(Debug, Clone)]
pub struct CrossCargo {
    /// The Rust target triple.
    pub target: &'static str,
    /// Its own target directory: Debian's rustc cannot reuse rustup's artifacts anyway.
    pub target_dir: PathBuf,
    /// Extra environment (C compiler, runner) for this target.
    pub env: Vec<(String, String)>,
}

impl CrossCargo {
    /// `cargo clippy` (check only, lints as errors) of `packages`, all their targets.
    pub fn clippy(&self, packages: &[&str]) -> Command {
        let mut command = self.base(CARGO_CLIPPY);
        command.arg("clippy");
        self.common_args(&mut command, packages);
        command.args(["--all-targets", "--", "-D", "warnings"]);
        command
    }

    /// A cargo command (`build`, `test`, …) whose workspace crates are compiled by
    /// clippy-driver with `-D warnings`: clippy's lints run while the real artifacts are
    /// made, so nothing is compiled twice (what `cargo clippy` does, minus its check-only
    /// mode). Dependencies are compiled by plain rustc, as under `cargo clippy`.
    pub fn linted(&self, subcommand: &str, packages: &[&str]) -> Command {
        let mut command = self.base(CARGO);
        command.arg(subcommand);
        self.common_args(&mut command, packages);
        command.env("RUSTC_WORKSPACE_WRAPPER", CLIPPY_DRIVER);
        // cargo-clippy's way of passing lint flags to clippy-driver.
        command.env("CLIPPY_ARGS", ["-D", "warnings"].join("__CLIPPY_HACKERY__") + "__CLIPPY_HACKERY__");
        command
    }

    fn base(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        for var in INHERITED_TOOLCHAIN_VARS {
            command.env_remove(var);
        }
        // The outer cargo's CARGO points at rustup's; build scripts and cargo-clippy use it.
        command.env("CARGO", CARGO).env("RUSTC", RUSTC);
        // Nightly-only `-Zbuild-std` on a stable toolchain.
        command.env("RUSTC_BOOTSTRAP", "1");
        command.env("CARGO_TARGET_DIR", &self.target_dir);
        command.env("PATH", path_with_debian_first());
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command.current_dir(crate::workspace_root());
        command
    }

    fn common_args(&self, command: &mut Command, packages: &[&str]) {
        command.args(["-Zbuild-std=std,panic_abort", "--target", self.target, "--locked"]);
        // One profile for every step and both targets, so that build scripts and proc
        // macros (host artifacts) are compiled once for all of them.
        command.args(["--profile", PROFILE]);
        for package in packages {
            command.args(["-p", package]);
        }
    }

    /// Where cargo puts this target's artifacts.
    pub fn artifact_dir(&self) -> PathBuf {
        self.target_dir.join(self.target).join(PROFILE)
    }
}

/// PATH with /usr/bin before rustup's ~/.cargo/bin: build scripts that call `rustc` or
/// `cargo` by name must get Debian's.
fn path_with_debian_first() -> String {
    let rest = std::env::var("PATH").unwrap_or_default();
    format!("/usr/bin:/bin:/usr/sbin:/sbin:{rest}")
}

/// Whether Debian's toolchain is where [`CrossCargo`] expects it.
pub fn installed() -> bool {
    [CARGO, RUSTC, CARGO_CLIPPY, CLIPPY_DRIVER].iter().all(|tool| Path::new(tool).exists())
}

/// `rustc --version` of Debian's toolchain, for the report.
pub fn version() -> String {
    Command::new(RUSTC)
        .arg("--version")
        .output()
        .ok()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}
