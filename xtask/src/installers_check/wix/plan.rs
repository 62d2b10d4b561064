//! The copy of the fragment that wixl 0.101 can take: Fragment children it takes only in a
//! Product move into the stand-in Product; WiX extensions' elements and attributes, and
//! custom actions of kinds wixl cannot compile, are split out and reported.

use std::ops::Range;

use anyhow::{bail, Result};

use super::{MAIN_WXS_DIRECTORIES, WIX_NS, WXS};

/// Fragment children that wixl 0.101 takes only inside a Product (its tools/wixl/wix.vala:
/// a Fragment holds Directory, DirectoryRef and ComponentGroup), while WiX 3 takes them in a
/// Fragment too. The check compiles them in its stand-in Product.
const PRODUCT_ONLY: &[&str] = &[
    "CustomAction",
    "InstallExecuteSequence",
    "InstallUISequence",
    "AdminExecuteSequence",
    "AdminUISequence",
    "AdvertiseExecuteSequence",
    "Property",
    "Binary",
    "Condition",
    "Icon",
    "Media",
    "MediaTemplate",
    "Upgrade",
    "MajorUpgrade",
    "Feature",
];

/// The WiX 3 extensions (WiX 3.14's binaries, which the Tauri bundler downloads). The bundler
/// loads `Wix<Name>.dll` for each namespace `http://schemas.microsoft.com/wix/<Name>` a
/// fragment declares, so a namespace outside this list breaks the real build.
const WIX3_EXTENSIONS: &[&str] = &[
    "BalExtension",
    "ComPlusExtension",
    "DependencyExtension",
    "DifxAppExtension",
    "DirectXExtension",
    "FirewallExtension",
    "GamingExtension",
    "HttpExtension",
    "IIsExtension",
    "LuxExtension",
    "MsmqExtension",
    "NetFxExtension",
    "PSExtension",
    "SqlExtension",
    "TagExtension",
    "UIExtension",
    "UtilExtension",
    "VSExtension",
];

/// The copy of the fragment wixl is given, and what it leaves out.
#[derive(Debug)]
pub(super) struct Plan {
    /// The fragment without the moved and split-out parts.
    pub(super) fragment: String,
    /// The moved elements' source text, for the stand-in Product.
    pub(super) moved: Vec<String>,
    /// "CustomAction TrellisSetUpHelper", ...
    pub(super) moved_names: Vec<String>,
    /// What was split out, one line each, to be reported as not validated.
    pub(super) split_out: Vec<String>,
    /// The source ranges split out.
    cuts: Vec<Range<usize>>,
}

impl Plan {
    pub(super) fn new(doc: &roxmltree::Document<'_>, text: &str) -> Result<Self> {
        let root = doc.root_element();
        if !root.has_tag_name((WIX_NS, "Wix")) {
            bail!("{WXS}: the root element is not WiX 3's <Wix xmlns=\"{WIX_NS}\">");
        }
        let line = |pos: usize| doc.text_pos_at(pos).row;

        let mut cuts = Vec::new();
        let mut split_out = Vec::new();
        for node in root.descendants().filter(|n| n.is_element()) {
            let outermost_foreign = node.tag_name().namespace() != Some(WIX_NS)
                && node.parent_element().is_some_and(|p| p.tag_name().namespace() == Some(WIX_NS));
            if outermost_foreign {
                let extension = extension_of(node.tag_name().namespace(), line(node.range().start))?;
                cuts.push(node.range());
                split_out.push(format!(
                    "<{} Id=\"{}\"> at line {}: an element of {extension}; wixl has no extensions",
                    qualified_name(text, node.range().start),
                    node.attribute("Id").unwrap_or("-"),
                    line(node.range().start)
                ));
                continue;
            }
            if node.tag_name().namespace() != Some(WIX_NS) {
                continue;
            }
            for attr in node.attributes() {
                let Some(ns) = attr.namespace().filter(|ns| *ns != WIX_NS) else { continue };
                let extension = extension_of(Some(ns), line(attr.range().start))?;
                cuts.push(attr.range());
                split_out.push(format!(
                    "attribute {} of <{}> at line {}: {extension}; wixl has no extensions",
                    &text[attr.range_qname()],
                    node.tag_name().name(),
                    line(attr.range().start)
                ));
            }
        }

        let mut moves = Vec::new();
        let mut moved_names = Vec::new();
        for fragment in root.children().filter(|n| n.is_element()) {
            if !fragment.has_tag_name((WIX_NS, "Fragment")) {
                bail!(
                    "{WXS} line {}: <{}> under <Wix>; the bundler takes Fragments only",
                    line(fragment.range().start),
                    fragment.tag_name().name()
                );
            }
            for child in
                fragment.children().filter(|n| n.is_element() && n.tag_name().namespace() == Some(WIX_NS))
            {
                let name = child.tag_name().name();
                if name == "CustomAction" && !wixl_compiles(child) {
                    split_out.push(uncompiled_custom_action(doc, child)?);
                    cuts.push(child.range());
                } else if PRODUCT_ONLY.contains(&name) {
                    moves.push(child.range());
                    moved_names.push(match child.attribute("Id") {
                        Some(id) => format!("{name} {id}"),
                        None => name.to_string(),
                    });
                }
            }
        }

        let all: Vec<Range<usize>> = moves.iter().chain(&cuts).cloned().collect();
        Ok(Plan {
            fragment: cut(text, 0..text.len(), &all),
            moved: moves.iter().map(|range| cut(text, range.clone(), &cuts)).collect(),
            moved_names,
            split_out,
            cuts,
        })
    }

    /// Whether wixl compiled this element: it was not split out, nor inside what was.
    pub(super) fn compiles(&self, node: roxmltree::Node<'_, '_>) -> bool {
        let range = node.range();
        !self.cuts.iter().any(|cut| cut.start <= range.start && range.end <= cut.end)
    }
}

/// Whether wixl 0.101 compiles this custom action as WiX 3 would. Its builder.vala knows a
/// DLL or JScript in a Binary, an exe among the package's files (FileKey) or named by a
/// property, and setting a property; anything else it takes for a property's exe with no
/// property, and drops with an assertion failure.
fn wixl_compiles(action: roxmltree::Node<'_, '_>) -> bool {
    let has = |attribute| action.attribute(attribute).is_some();
    ((has("DllEntry") || has("JScriptCall")) && has("BinaryKey"))
        || (has("ExeCommand") && (has("FileKey") || has("Property")))
        || (has("Property") && has("Value") && !has("ExeCommand"))
}

/// The note for a custom action wixl cannot compile, after checking what can be checked
/// without it: the directory it runs in exists.
fn uncompiled_custom_action(
    doc: &roxmltree::Document<'_>,
    action: roxmltree::Node<'_, '_>,
) -> Result<String> {
    let id = action.attribute("Id").unwrap_or("-");
    let line = doc.text_pos_at(action.range().start).row;
    let mut checked = String::new();
    if let Some(dir) = action.attribute("Directory") {
        let defined = MAIN_WXS_DIRECTORIES.contains(&dir)
            || doc
                .descendants()
                .any(|n| n.has_tag_name((WIX_NS, "Directory")) && n.attribute("Id") == Some(dir));
        if !defined {
            bail!("{WXS} line {line}: CustomAction {id} runs in Directory {dir}, which neither the fragment nor the bundler's main.wxs defines");
        }
        checked = format!("; checked here: the Directory it runs in, {dir}, is defined");
    }
    Ok(format!(
        "<CustomAction Id=\"{id}\"> at line {line}: wixl 0.101 compiles only FileKey, Property and BinaryKey custom \
         actions{checked}; its sequence entry is compiled"
    ))
}

/// `text[range]` without the `cuts` inside it (cuts may nest; the outer one wins).
fn cut(text: &str, range: Range<usize>, cuts: &[Range<usize>]) -> String {
    let mut inside: Vec<&Range<usize>> =
        cuts.iter().filter(|c| c.start >= range.start && c.end <= range.end).collect();
    inside.sort_by_key(|c| c.start);
    let mut out = String::new();
    let mut pos = range.start;
    for c in inside {
        if c.start < pos {
            continue;
        }
        out.push_str(&text[pos..c.start]);
        pos = c.end;
    }
    out.push_str(&text[pos..range.end]);
    out
}

/// The element's name as written (`fw:FirewallException`), from its start tag.
fn qualified_name(text: &str, start: usize) -> &str {
    let rest = &text[start + 1..];
    let end = rest.find(|c: char| c.is_whitespace() || c == '/' || c == '>').unwrap_or(rest.len());
    &rest[..end]
}

/// "WixFirewallExtension" for its namespace; an error for a namespace that names no WiX 3
/// extension (the bundler would not load one, and candle would reject the element).
fn extension_of(namespace: Option<&str>, line: u32) -> Result<String> {
    let ns = namespace.unwrap_or("no namespace");
    let name =
        ns.strip_prefix("http://schemas.microsoft.com/wix/").filter(|name| WIX3_EXTENSIONS.contains(name));
    match name {
        Some(name) => Ok(format!("Wix{name} (which the bundler loads for its namespace)")),
        None => bail!(
            "{WXS} line {line}: namespace {ns} is not a WiX 3 extension's (http://schemas.microsoft.com/wix/<Name>, \
             <Name> one of {})",
            WIX3_EXTENSIONS.join(", ")
        ),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::installers_check::wix) const SAMPLE: &str = r#"<?xml version="1.0"?>
<Wix xmlns="http://schemas.microsoft.com/wix/2006/wi" xmlns:fw="http://schemas.microsoft.com/wix/FirewallExtension">
  <Fragment>
    <DirectoryRef Id="ProgramFiles64Folder">
      <Component Id="A" Guid="03e8ca0e-4dc3-4a7c-95fb-daf9c2668997" fw:Note="x">
        <File Id="AExe" Name="a.exe" Source="@A_EXE@" KeyPath="yes" />
        <fw:FirewallException Id="AIn" Name="A" Program="[#AExe]"><fw:RemoteAddress>*</fw:RemoteAddress></fw:FirewallException>
      </Component>
    </DirectoryRef>
    <CustomAction Id="Setup" FileKey="AExe" ExeCommand="go" Execute="deferred" />
    <CustomAction Id="Netsh" Directory="INSTALLDIR" ExeCommand="netsh" Execute="deferred" />
    <InstallExecuteSequence><Custom Action="Setup" After="InstallFiles">NOT REMOVE</Custom></InstallExecuteSequence>
  </Fragment>
</Wix>
"#;

    #[test]
    fn the_plan_moves_what_wixl_takes_only_in_a_product_and_splits_out_extensions() {
        let doc = roxmltree::Document::parse(SAMPLE).unwrap();
        let plan = Plan::new(&doc, SAMPLE).unwrap();
        assert_eq!(plan.moved_names, ["CustomAction Setup", "InstallExecuteSequence"]);
        assert!(plan.moved[0].starts_with("<CustomAction Id=\"Setup\""), "{}", plan.moved[0]);
        assert!(plan.moved[1].contains("<Custom Action=\"Setup\""), "{}", plan.moved[1]);
        assert!(!plan.fragment.contains("CustomAction") && !plan.fragment.contains("InstallExecuteSequence"));
        assert!(!plan.fragment.contains("FirewallException") && !plan.fragment.contains("fw:Note"));
        assert!(plan.fragment.contains("<File Id=\"AExe\""));
        // What is left is still well-formed, and the WiX elements are all there.
        let left = roxmltree::Document::parse(&plan.fragment).unwrap();
        assert!(left.descendants().any(|n| n.has_tag_name((WIX_NS, "File"))));
        assert!(!plan.fragment.contains("Netsh") && !plan.moved.iter().any(|m| m.contains("Netsh")));
        assert_eq!(plan.split_out.len(), 3, "{:?}", plan.split_out);
        assert!(plan
            .split_out
            .iter()
            .any(|l| l.contains("\"Netsh\"> at line 11") && l.contains("INSTALLDIR, is defined")));
        assert!(plan.split_out.iter().any(|l| l.contains("<fw:FirewallException Id=\"AIn\"> at line 7")));
        assert!(plan.split_out.iter().any(|l| l.contains("fw:Note") && l.contains("WixFirewallExtension")));
        let compiled: Vec<&str> = doc
            .descendants()
            .filter(|n| n.is_element() && plan.compiles(*n))
            .map(|n| n.tag_name().name())
            .collect();
        assert_eq!(
            compiled,
            [
                "Wix",
                "Fragment",
                "DirectoryRef",
                "Component",
                "File",
                "CustomAction",
                "InstallExecuteSequence",
                "Custom"
            ]
        );
    }

    #[test]
    fn a_custom_action_in_an_unknown_directory_fails() {
        let text = SAMPLE.replace("Directory=\"INSTALLDIR\"", "Directory=\"NoSuchDir\"");
        let doc = roxmltree::Document::parse(&text).unwrap();
        let err = Plan::new(&doc, &text).unwrap_err().to_string();
        assert!(err.contains("Netsh runs in Directory NoSuchDir"), "{err}");
    }

    #[test]
    fn an_unknown_extension_namespace_fails() {
        let text = SAMPLE.replace("wix/FirewallExtension", "wix/FirewalExtension");
        let doc = roxmltree::Document::parse(&text).unwrap();
        let err = Plan::new(&doc, &text).unwrap_err().to_string();
        assert!(err.contains("FirewalExtension") && err.contains("line 5"), "{err}");
    }

    #[test]
    fn cuts_nest_and_keep_the_rest() {
        let text = "0123456789";
        assert_eq!(cut(text, 0..10, &[2..6, 3..4, 8..9]), "01679");
        assert_eq!(cut(text, 2..8, &[0..3, 4..5]), "23567");
    }
}
