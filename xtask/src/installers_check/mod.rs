//! `cargo xtask check-installers`: the installers' sources checked as far as Debian's tools
//! reach, since the MSI and the DMG themselves are built only by the release workflow.
//!
//! * every XML and plist file of the repository parses (`xml_files`);
//! * the WiX fragment of the MSI goes through wixl, the msitools' WiX compiler, into a
//!   throwaway MSI whose tables are compared with the fragment (`wix`);
//! * the GitHub workflows pass actionlint (with shellcheck on their scripts) and zizmor
//!   (`workflows`), both pinned and installed in a venv under the target directory (`tools`).
//!
//! Each check prints PASS or FAIL with what it covered and, for the WiX fragment, what it
//! could not validate; every check runs even when an earlier one failed.

mod tools;
mod wix;
mod workflows;
mod xml_files;

use std::time::Instant;

use anyhow::{bail, Result};

use crate::system;

/// Debian packages the checks need: wixl (the WiX compiler) and msitools (msiinfo, to read
/// the MSI back), python3-venv for the linters' venv, shellcheck for actionlint to check
/// the workflows' shell scripts with.
pub const PACKAGES: &[&str] = &["wixl", "msitools", "python3-venv", "shellcheck"];

/// What a check found besides passing: what it covered, and what it could not validate.
#[derive(Debug, Default)]
struct Findings {
    checked: Vec<String>,
    not_validated: Vec<String>,
}

pub fn run() -> Result<()> {
    let started = Instant::now();
    system::ensure_packages(PACKAGES)?;
    let root = crate::workspace_root();
    let target = crate::target_dir();
    println!("==> check-installers");

    let mut failed = Vec::new();
    let mut report = |name: &str, result: Result<Findings>| match result {
        Ok(findings) => {
            println!("  PASS  {name}");
            for line in &findings.checked {
                println!("          {line}");
            }
            if !findings.not_validated.is_empty() {
                println!("        not validated here:");
                for line in &findings.not_validated {
                    println!("          - {line}");
                }
            }
        }
        Err(err) => {
            println!("  FAIL  {name}: {err:#}");
            failed.push(name.to_string());
        }
    };

    report("XML and plist files parse", xml_files::check(&root));
    report("WiX fragment through wixl and msiinfo", wix::check(&root, &target.join("check-installers")));
    match tools::ensure(&target.join("tools")) {
        Ok(tools) => {
            report("workflows: actionlint", workflows::actionlint(&root, &tools));
            report("workflows: zizmor", workflows::zizmor(&root, &tools));
        }
        Err(err) => report("workflow linters installed", Err(err)),
    }

    let secs = started.elapsed().as_secs_f64();
    if failed.is_empty() {
        println!("==> installer checks passed ({secs:.1} s)");
        Ok(())
    } else {
        bail!("{} installer check(s) failed ({secs:.1} s): {}", failed.len(), failed.join("; "))
    }
}
