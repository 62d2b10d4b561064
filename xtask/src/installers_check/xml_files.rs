//! Every XML and plist file of the repository parsed with a strict parser: the WiX
//! fragment, the launchd plist, and whatever XML joins them (SVG icons, manifests,
//! entitlements). A file that does not parse fails the check with its path and the
//! parser's message, line and column.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::Findings;

/// File names ending in one of these are XML. The rest are found by content: a file
/// starting with an XML declaration is XML whatever its name.
const XML_EXTENSIONS: &[&str] = &[
    "xml",
    "wxs",
    "wxi",
    "wxl",
    "plist",
    "svg",
    "entitlements",
    "manifest",
    "xaml",
    "policy",
    "storyboard",
    "xib",
];

/// Of those, property lists, which are also read as plists: Apple's tools take a file
/// that is well-formed XML but not a valid plist no better than a broken one.
const PLIST_EXTENSIONS: &[&str] = &["plist", "entitlements"];

pub fn check(root: &Path) -> Result<Findings> {
    let files = xml_files(root)?;
    anyhow::ensure!(!files.is_empty(), "found no XML files in {} (git ls-files)", root.display());
    let mut problems = Vec::new();
    let mut checked = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(root).unwrap_or(file).display().to_string();
        match check_file(file) {
            Ok(kind) => checked.push(format!("{relative} ({kind})")),
            Err(err) => problems.push(format!("{relative}: {err:#}")),
        }
    }
    if !problems.is_empty() {
        bail!("{} of {} file(s) do not parse:\n    {}", problems.len(), files.len(), problems.join("\n    "));
    }
    Ok(Findings { checked, not_validated: Vec::new() })
}

/// Parses one file as XML and, for a plist, as a plist; says which.
pub fn check_file(path: &Path) -> Result<&'static str> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let text = std::str::from_utf8(&bytes).context("not UTF-8")?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // roxmltree: well-formedness as the XML spec has it (e.g. `--` inside a comment is an
    // error, which lenient parsers let through and WiX's candle does not).
    let options = roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() };
    roxmltree::Document::parse_with_options(text, options)
        .map_err(|err| anyhow::anyhow!("not well-formed XML: {err}"))?;
    if !is_plist(path) {
        return Ok("XML");
    }
    plist::Value::from_reader_xml(bytes.as_slice())
        .map_err(|err| anyhow::anyhow!("not a valid plist: {err}"))?;
    Ok("XML, plist")
}

fn is_plist(path: &Path) -> bool {
    path.extension().and_then(|ext| ext.to_str()).is_some_and(|ext| PLIST_EXTENSIONS.contains(&ext))
}

/// The repository's XML files: tracked, or new and not ignored (a file someone is adding
/// is checked before it is committed).
fn xml_files(root: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("git")
        .args(["ls-files", "-z", "--cached", "--others", "--exclude-standard"])
        .current_dir(root)
        .output()
        .context("could not start git to list the repository's files")?;
    anyhow::ensure!(out.status.success(), "git ls-files failed in {}: {}", root.display(), out.status);
    let mut files: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout)
        .split('\0')
        .filter(|name| !name.is_empty())
        .map(|name| root.join(name))
        // A tracked file deleted in the worktree is no longer shipped.
        .filter(|path| path.is_file())
        .filter(|path| is_xml(path))
        .collect();
    files.sort();
    files.dedup();
    Ok(files)
}

fn is_xml(path: &Path) -> bool {
    let by_name = path
        .extension()
        .and_then(|ext| ext.to_str())
        .is_some_and(|ext| XML_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()));
    by_name || starts_with_xml_declaration(path)
}

fn starts_with_xml_declaration(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 8];
    let Ok(mut file) = std::fs::File::open(path) else {
        return false;
    };
    let n = file.read(&mut head).unwrap_or(0);
    let head = &head[..n];
    let head = head.strip_prefix(b"\xef\xbb\xbf".as_slice()).unwrap_or(head);
    head.starts_with(b"<?xml")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The requirement: every XML and plist file we ship parses.
    #[test]
    fn every_xml_and_plist_file_in_the_repository_parses() {
        let root = crate::workspace_root();
        let findings = check(&root).unwrap_or_else(|err| panic!("{err:#}"));
        for shipped in ["installers/windows/trellisd.wxs", "installers/macos/org.trellis.trellisd.plist"] {
            assert!(
                findings.checked.iter().any(|line| line.starts_with(shipped)),
                "{shipped} was not among the files checked: {:?}",
                findings.checked
            );
        }
    }

    #[test]
    fn a_broken_file_fails_with_the_parsers_position() {
        let dir = tempfile::tempdir().unwrap();
        let wxs = dir.path().join("bad.wxs");
        std::fs::write(&wxs, "<?xml version=\"1.0\"?>\n<!-- run `x --y` -->\n<Wix/>\n").unwrap();
        let err = format!("{:#}", check_file(&wxs).unwrap_err());
        assert!(err.contains("not well-formed XML") && err.contains("2:"), "{err}");

        let plist = dir.path().join("bad.plist");
        // Well-formed XML, but a <dict> whose key has no value is no plist.
        std::fs::write(
            &plist,
            "<?xml version=\"1.0\"?>\n<plist version=\"1.0\"><dict><key>Label</key></dict></plist>\n",
        )
        .unwrap();
        let err = format!("{:#}", check_file(&plist).unwrap_err());
        assert!(err.contains("not a valid plist"), "{err}");

        let good = dir.path().join("good.plist");
        std::fs::write(
            &good,
            "<?xml version=\"1.0\"?>\n<plist version=\"1.0\"><dict><key>Label</key><string>x</string></dict></plist>\n",
        )
        .unwrap();
        assert_eq!(check_file(&good).unwrap(), "XML, plist");
    }

    #[test]
    fn xml_is_found_by_name_or_by_declaration() {
        let dir = tempfile::tempdir().unwrap();
        let by_content = dir.path().join("app.rc");
        std::fs::write(&by_content, "<?xml version=\"1.0\"?><a/>").unwrap();
        let not_xml = dir.path().join("index.html");
        std::fs::write(&not_xml, "<!doctype html><p>").unwrap();
        assert!(is_xml(&by_content));
        assert!(is_xml(Path::new("icons/tray.SVG")));
        assert!(!is_xml(&not_xml));
    }
}
