//! Windows test binaries run under wine 8.0, cargo's runner for `x86_64-pc-windows-gnu`.
//!
//! Rust's std imports `ProcessPrng` from `bcryptprimitives.dll`, which wine 8.0 lacks, so no
//! Rust program starts there. A stand-in DLL, built here with mingw, exports it by calling
//! `BCryptGenRandom` (which wine has), and sits in the test prefix's system32. It exists
//! only in this test prefix under the target directory: never beside a shipped binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};

/// Debian packages: the linker and wine.
pub const PACKAGES: &[&str] = &["gcc-mingw-w64-x86-64", "binutils-mingw-w64-x86-64", "wine64"];

/// Debian's wine64 installs its loader here, not on PATH.
const WINE: &str = "/usr/lib/wine/wine64";
const MINGW_GCC: &str = "x86_64-w64-mingw32-gcc";

const PROCESS_PRNG_C: &str = r#"/* Test-only stand-in: wine 8.0 has no bcryptprimitives.dll, from which Rust's std
   imports ProcessPrng. Never shipped. */
#include <windows.h>
#include <bcrypt.h>
BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    return BCryptGenRandom(NULL, data, (ULONG)len, BCRYPT_USE_SYSTEM_PREFERRED_RNG) == 0;
}
"#;
const PROCESS_PRNG_DEF: &str = "LIBRARY bcryptprimitives.dll\nEXPORTS\nProcessPrng\n";

/// A wine prefix for the tests, with the stand-in in place.
#[derive(Debug)]
pub struct WinePrefix {
    pub dir: PathBuf,
}

impl WinePrefix {
    /// Makes (or reuses) the prefix under `tools_dir` and puts the stand-in DLL into it.
    pub fn prepare(tools_dir: &Path) -> Result<Self> {
        let dir = tools_dir.join("wine-prefix");
        let prefix = Self { dir };
        let system32 = prefix.dir.join("drive_c/windows/system32");
        if !system32.join("kernel32.dll").exists() {
            // wineboot makes the prefix; a first run without it prints noise and races.
            let status = prefix
                .command("wineboot")
                .arg("--init")
                .status()
                .context("could not start wine (Debian's wine64 is /usr/lib/wine/wine64)")?;
            ensure!(status.success(), "wineboot --init failed ({status})");
        }
        let dll = build_process_prng(tools_dir)?;
        std::fs::copy(&dll, system32.join("bcryptprimitives.dll"))
            .with_context(|| format!("copying the ProcessPrng stand-in into {}", system32.display()))?;
        Ok(prefix)
    }

    /// The environment that makes cargo run Windows binaries through wine in this prefix.
    pub fn runner_env(&self) -> Vec<(String, String)> {
        let mut env = vec![("CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER".to_string(), WINE.to_string())];
        env.extend(self.wine_env());
        env
    }

    fn wine_env(&self) -> Vec<(String, String)> {
        vec![
            ("WINEPREFIX".into(), self.dir.display().to_string()),
            // No debug channels: their lines would mix with the tests' output.
            ("WINEDEBUG".into(), "-all".into()),
            // No Mono or Gecko installer prompts; nothing here needs .NET or HTML.
            ("WINEDLLOVERRIDES".into(), "mscoree,mshtml=".into()),
        ]
    }

    /// `wine PROGRAM` in this prefix.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(WINE);
        command.arg(program);
        command.envs(self.wine_env());
        command
    }
}

/// Builds the stand-in `bcryptprimitives.dll` with mingw, once.
fn build_process_prng(tools_dir: &Path) -> Result<PathBuf> {
    let dir = tools_dir.join("process-prng");
    let dll = dir.join("bcryptprimitives.dll");
    if dll.exists() {
        return Ok(dll);
    }
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("process_prng.c"), PROCESS_PRNG_C)?;
    std::fs::write(dir.join("bcryptprimitives.def"), PROCESS_PRNG_DEF)?;
    let status = Command::new(MINGW_GCC)
        .args(["-shared", "-O2", "-o"])
        .arg(&dll)
        .arg(dir.join("process_prng.c"))
        .arg(dir.join("bcryptprimitives.def"))
        .arg("-lbcrypt")
        .status()
        .with_context(|| format!("could not start {MINGW_GCC}"))?;
    ensure!(status.success(), "building the ProcessPrng stand-in failed ({status})");
    Ok(dll)
}
