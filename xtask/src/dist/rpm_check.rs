//! The .rpm's contents, read with `rpm -qp` (Debian's `rpm` package): it cannot be installed
//! on our Debian build machines, so this checks what it would install and run instead of
//! installing it: the same programs and unit with the same modes as the .deb, owned by
//! root, the desktop entry and icons, and the same maintainer scripts as scriptlets.

use std::path::Path;

use anyhow::{ensure, Context, Result};

use super::deb_test::FILES;
use crate::system;

/// The scriptlets the package must carry, and a line each must contain: the maintainer
/// scripts of `installers/linux/`.
const SCRIPTLETS: &[(&str, &str)] = &[
    ("postinstall scriptlet", "groupadd --system \"$GROUP\""),
    ("preuninstall scriptlet", "systemctl"),
    ("postuninstall scriptlet", "/var/lib/trellis"),
];

pub fn run(rpm: &Path) -> Result<()> {
    system::ensure_packages(&["rpm"])?;
    println!("==> checking {} (rpm -qp)", rpm.display());
    let listing = query(
        rpm,
        &["--queryformat", "[%{FILENAMES} %{FILEMODES:octal} %{FILEUSERNAME}:%{FILEGROUPNAME}\n]"],
    )?;
    let files: Vec<(&str, &str, &str)> = listing
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            Some((fields.next()?, fields.next()?, fields.next()?))
        })
        .collect();
    for (path, mode) in FILES {
        let (_, listed_mode, owner) = files
            .iter()
            .find(|(listed, _, _)| listed == path)
            .with_context(|| format!("the .rpm has no {path}; it lists:\n{listing}"))?;
        // rpm prints the file type too: 100755 is a regular file with mode 0755.
        ensure!(
            *listed_mode == format!("100{mode:o}"),
            "{path} has mode {listed_mode} in the .rpm, not 100{mode:o}"
        );
        ensure!(*owner == "root:root", "{path} belongs to {owner} in the .rpm, not root:root");
    }
    ensure!(
        files
            .iter()
            .any(|(path, _, _)| path.starts_with("/usr/share/applications/") && path.ends_with(".desktop")),
        "the .rpm has no desktop entry in /usr/share/applications:\n{listing}"
    );
    ensure!(
        files
            .iter()
            .any(|(path, _, _)| path.starts_with("/usr/share/icons/hicolor/") && path.ends_with(".png")),
        "the .rpm has no icons in /usr/share/icons/hicolor:\n{listing}"
    );

    let scripts = query(rpm, &["--scripts"])?;
    for (scriptlet, must_contain) in SCRIPTLETS {
        let body = scripts
            .split_once(scriptlet)
            .map(|(_, rest)| rest.split(" scriptlet").next().unwrap_or(rest))
            .with_context(|| format!("the .rpm has no {scriptlet}"))?;
        ensure!(body.contains(must_contain), "the .rpm's {scriptlet} lacks `{must_contain}`:\n{body}");
    }
    let requires = query(rpm, &["--requires"])?;
    ensure!(
        requires.lines().any(|r| r.starts_with("libwebkit2gtk-4.1")),
        "the .rpm does not require WebKitGTK 4.1:\n{requires}"
    );
    println!(
        "      {} files (programs, unit, desktop entry, icons) and 3 scriptlets as expected",
        files.len()
    );
    Ok(())
}

fn query(rpm: &Path, args: &[&str]) -> Result<String> {
    let out = std::process::Command::new("rpm")
        .arg("-qp")
        .args(args)
        .arg(rpm)
        .output()
        .context("cannot run rpm")?;
    ensure!(
        out.status.success(),
        "rpm -qp {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
