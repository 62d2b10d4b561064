//! The GitHub workflows linted: actionlint (syntax, expressions, action inputs, deprecated
//! action runtimes, and shellcheck on `run:` scripts) and zizmor (security: unpinned
//! actions, cache poisoning, permissions, credentials left in checkouts). Any finding fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::tools::Tools;
use super::Findings;

/// Debian's shellcheck (in [`super::PACKAGES`]), named explicitly: actionlint silently
/// skips the scripts when it finds no shellcheck.
const SHELLCHECK: &str = "/usr/bin/shellcheck";

pub fn actionlint(root: &Path, tools: &Tools) -> Result<Findings> {
    let workflows = workflow_files(root)?;
    anyhow::ensure!(Path::new(SHELLCHECK).is_file(), "{SHELLCHECK} is missing (Debian package shellcheck)");
    let mut command = Command::new(&tools.actionlint);
    // No files named: actionlint lints every workflow of the repository it runs in. No
    // pyflakes: no step runs Python.
    command.args(["-no-color", "-oneline", "-shellcheck", SHELLCHECK, "-pyflakes="]).current_dir(root);
    let output = run_linter(command, "actionlint")?;
    let mut findings = Findings::default();
    findings.checked.push(format!(
        "actionlint {} with shellcheck: {}: {}",
        tools.actionlint_version,
        list(&workflows, root),
        output
    ));
    Ok(findings)
}

pub fn zizmor(root: &Path, tools: &Tools) -> Result<Findings> {
    let workflows = workflow_files(root)?;
    let mut command = Command::new(&tools.zizmor);
    // Offline: no GitHub API here (and none wanted in a test); the online audits (known
    // vulnerable action versions, impostor commits, stale refs) are left out.
    // The repository root as input: every workflow and composite action in it, minus what
    // .gitignore excludes.
    command.args(["--offline", "--no-progress", "--color=never", "--format=plain", "."]).current_dir(root);
    let output = run_linter(command, "zizmor")?;
    let mut findings = Findings::default();
    findings.checked.push(format!(
        "zizmor {} (offline audits, default persona): {}: {}",
        tools.zizmor_version,
        list(&workflows, root),
        output
    ));
    findings.not_validated.push(
        "zizmor's online audits (known-vulnerable actions, impostor commits, stale refs): no GitHub API"
            .into(),
    );
    Ok(findings)
}

/// Runs a linter and fails with its output unless it exits 0; returns a one-line summary.
fn run_linter(mut command: Command, name: &str) -> Result<String> {
    let out = command.output().with_context(|| format!("could not start {name}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("{name} found problems ({}):\n{}{}", out.status, stdout.trim_end(), indent_nonempty(&stderr));
    }
    // zizmor says "No findings to report. Good job!" on stdout; actionlint says nothing.
    Ok(stdout.lines().find(|line| !line.trim().is_empty()).unwrap_or("no findings").trim().to_string())
}

fn indent_nonempty(text: &str) -> String {
    if text.trim().is_empty() {
        String::new()
    } else {
        format!("\n{}", text.trim_end())
    }
}

/// The workflow files, which the linters find themselves; listed so the report names them
/// and an empty folder is an error rather than a silent pass.
fn workflow_files(root: &Path) -> Result<Vec<PathBuf>> {
    let dir = root.join(".github/workflows");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "yml" || ext == "yaml"))
        .collect();
    files.sort();
    anyhow::ensure!(!files.is_empty(), "no workflows in {}", dir.display());
    Ok(files)
}

fn list(files: &[PathBuf], root: &Path) -> String {
    files
        .iter()
        .map(|f| f.strip_prefix(root).unwrap_or(f).display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
