//! What the real build needs of the fragment's source, checked without wixl: the
//! placeholders `cargo xtask dist` fills in, the components it hands the bundler, and the
//! files that formatted strings refer to.

use std::collections::BTreeSet;

use anyhow::{bail, Context, Result};

use super::{WIX_NS, WXS};

/// What `cargo xtask dist` does with the fragment (the placeholders it fills, the component
/// references it gives the bundler), read so the check and the build cannot drift apart.
const DIST_RS: &str = include_str!("../../dist.rs");

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum PlaceholderKind {
    /// `@NAME@`, which `cargo xtask dist` replaces.
    Dist,
    /// `$(var.NAME)`, a WiX preprocessor variable.
    Var,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Placeholder {
    pub(super) kind: PlaceholderKind,
    pub(super) name: String,
}

impl Placeholder {
    pub(super) fn token(&self) -> String {
        match self.kind {
            PlaceholderKind::Dist => format!("@{}@", self.name),
            PlaceholderKind::Var => format!("$(var.{})", self.name),
        }
    }
}

/// The `@NAME@` and `$(var.NAME)` in the fragment (NAME: capitals, digits, `_`; so the
/// comment's "@…@" is none).
pub(super) fn placeholders(text: &str) -> BTreeSet<Placeholder> {
    let is_name = |s: &str| {
        !s.is_empty() && s.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    };
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find('@') {
        let after = &rest[at + 1..];
        match after.find('@') {
            Some(end) if is_name(&after[..end]) => {
                found.insert(Placeholder { kind: PlaceholderKind::Dist, name: after[..end].to_string() });
                rest = &after[end + 1..];
            }
            _ => rest = after,
        }
    }
    let mut rest = text;
    while let Some(at) = rest.find("$(var.") {
        let after = &rest[at + "$(var.".len()..];
        if let Some(end) = after.find(')') {
            found.insert(Placeholder { kind: PlaceholderKind::Var, name: after[..end].to_string() });
        }
        rest = after;
    }
    found
}

/// Each `@NAME@` is one dist.rs fills in (one it does not would reach candle as a file name),
/// and dist.rs's componentRefs are the fragment's components; returns those.
pub(super) fn check_against_dist(
    doc: &roxmltree::Document<'_>,
    placeholders: &BTreeSet<Placeholder>,
) -> Result<Vec<String>> {
    for placeholder in placeholders.iter().filter(|p| p.kind == PlaceholderKind::Dist) {
        if !DIST_RS.contains(&format!("\"{}\"", placeholder.token())) {
            bail!("{WXS} uses {} but xtask/src/dist.rs does not fill it in", placeholder.token());
        }
    }
    // Every component must be in a feature, or light fails the MSI (ICE21); the bundler puts
    // those named in componentRefs into its "External" feature.
    let refs = dist_component_refs()?;
    let components: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name((WIX_NS, "Component")))
        .filter_map(|n| n.attribute("Id"))
        .collect();
    for component in &components {
        if !refs.iter().any(|r| r == component) {
            bail!("{WXS}: component {component} is not in dist.rs's componentRefs, so it would belong to no feature");
        }
    }
    for reference in &refs {
        if !components.contains(&reference.as_str()) {
            bail!("dist.rs's componentRefs names {reference}, which {WXS} does not define");
        }
    }
    Ok(refs)
}

/// Every `[#FileId]` or `[!FileId]` in an attribute value (a file's installed path, in
/// Windows Installer's formatted strings) names a File of the fragment or the app's own exe
/// ("Path" in the bundler's main.wxs). Checked here because it also covers what wixl does
/// not see, such as a firewall rule's Program. Returns the references.
pub(super) fn check_file_references(doc: &roxmltree::Document<'_>) -> Result<Vec<String>> {
    let files: BTreeSet<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name((WIX_NS, "File")))
        .filter_map(|n| n.attribute("Id"))
        .chain(["Path"])
        .collect();
    let mut found = BTreeSet::new();
    for node in doc.descendants().filter(|n| n.is_element()) {
        for attr in node.attributes() {
            let mut rest = attr.value();
            while let Some(at) = rest.find('[') {
                let after = &rest[at + 1..];
                rest = after;
                let Some(reference) = after.strip_prefix('#').or_else(|| after.strip_prefix('!')) else {
                    continue;
                };
                let Some(end) = reference.find(']') else { continue };
                let id = &reference[..end];
                if !files.contains(id) {
                    bail!(
                        "{WXS} line {}: {}=\"{}\" refers to file {id}, which the fragment does not define",
                        doc.text_pos_at(attr.range().start).row,
                        attr.name(),
                        attr.value()
                    );
                }
                found.insert(format!("[{}{id}]", &after[..1]));
            }
        }
    }
    Ok(found.into_iter().collect())
}

/// The component IDs in dist.rs's `"componentRefs": [...]`.
fn dist_component_refs() -> Result<Vec<String>> {
    let start = DIST_RS.find("\"componentRefs\": [").context(
        "xtask/src/dist.rs has no `\"componentRefs\": [` any more: update installers_check/wix.rs",
    )?;
    let list = &DIST_RS[start + "\"componentRefs\": [".len()..];
    let list = &list[..list.find(']').context("dist.rs's componentRefs list does not end")?];
    Ok(list
        .split(',')
        .map(|item| item.trim().trim_matches('"').to_string())
        .filter(|s| !s.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::installers_check::wix::plan::tests::SAMPLE;

    #[test]
    fn file_references_must_name_files() {
        let doc = roxmltree::Document::parse(SAMPLE).unwrap();
        assert_eq!(check_file_references(&doc).unwrap(), ["[#AExe]"]);
        let text = SAMPLE.replace("[#AExe]", "[!AExee]");
        let doc = roxmltree::Document::parse(&text).unwrap();
        let err = check_file_references(&doc).unwrap_err().to_string();
        assert!(err.contains("line 7") && err.contains("AExee"), "{err}");
    }

    #[test]
    fn placeholders_are_found_and_the_comments_ellipsis_is_not_one() {
        let found = placeholders(
            "<!-- the three @…@ paths --> a=\"@A_EXE@\" b=\"$(var.Wintun)\" c=\"x@y.z\" d=\"@B@\"",
        );
        let tokens: Vec<String> = found.iter().map(Placeholder::token).collect();
        assert_eq!(tokens, ["@A_EXE@", "@B@", "$(var.Wintun)"]);
    }

    #[test]
    fn dist_rs_names_the_component_refs() {
        let refs = dist_component_refs().unwrap();
        assert!(!refs.is_empty() && refs.iter().all(|r| !r.contains('"') && !r.contains(' ')), "{refs:?}");
    }
}
