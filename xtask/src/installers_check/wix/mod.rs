//! The MSI's WiX fragment (installers/windows/trellisd.wxs) compiled with wixl 0.101, the
//! msitools' WiX compiler, into a throwaway MSI whose tables are then compared with the
//! fragment (`msi_tables`). The real MSI is built by WiX 3 (candle, light) inside the Tauri
//! bundler on the release workflow's Windows runner; this catches what can be caught here.
//!
//! wixl takes less than WiX 3, so the check compiles a copy of the fragment:
//! * Fragment children that wixl takes only in a Product (`CustomAction`,
//!   `InstallExecuteSequence`, ...) move into a stand-in Product, where they are compiled;
//! * elements and attributes of WiX extensions (other namespaces, e.g. the firewall
//!   extension), and custom actions of kinds wixl cannot compile (an exe run in a
//!   Directory), are split out. They are listed as not validated;
//! * the `@NAME@` paths that `cargo xtask dist` fills in, and any `$(var.NAME)`, point to
//!   stand-in files.
//!
//! The stand-in Product mirrors what the fragment needs from the bundler's main.wxs: its
//! directories (TARGETDIR, ProgramFiles64Folder, INSTALLDIR, ...) and a feature holding the
//! components `dist.rs` names in `componentRefs`.
//!
//! `plan` makes the copy; `source` checks what needs no compiler (dist.rs's placeholders and
//! component references, file references in formatted strings); `msi_tables` reads the MSI.

mod msi_tables;
mod plan;
mod source;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::Findings;
use plan::Plan;
use source::{check_against_dist, check_file_references, placeholders, PlaceholderKind};

/// The fragment, from the workspace root.
pub const WXS: &str = "installers/windows/trellisd.wxs";

const WIX_NS: &str = "http://schemas.microsoft.com/wix/2006/wi";

/// Checks the fragment under `root`, building in `work`/wix (cleared first).
pub fn check(root: &Path, work: &Path) -> Result<Findings> {
    let path = root.join(WXS);
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let options = roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() };
    let doc = roxmltree::Document::parse_with_options(&text, options)
        .map_err(|err| anyhow::anyhow!("{WXS} is not well-formed XML: {err}"))?;
    if let Some(at) = text.find("{{") {
        bail!(
            "{WXS} line {}: the Tauri bundler renders fragments as Handlebars templates, so `{{{{` would be \
             replaced; write `\\{{{{` for a literal one",
            doc.text_pos_at(at).row
        );
    }

    let plan = Plan::new(&doc, &text)?;
    let placeholders = placeholders(&text);
    let component_refs = check_against_dist(&doc, &placeholders)?;
    let file_references = check_file_references(&doc)?;

    let dir = work.join("wix");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir.join("standins"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let mut fragment = plan.fragment.clone();
    let mut moved = plan.moved.join("\n");
    let mut defines = Vec::new();
    for placeholder in &placeholders {
        let standin = format!("standins/{}", placeholder.name);
        std::fs::write(dir.join(&standin), format!("stand-in for {}\n", placeholder.name))?;
        match placeholder.kind {
            PlaceholderKind::Dist => {
                let token = format!("@{}@", placeholder.name);
                fragment = fragment.replace(&token, &standin);
                moved = moved.replace(&token, &standin);
            }
            PlaceholderKind::Var => defines.push(format!("{}={standin}", placeholder.name)),
        }
    }
    std::fs::write(dir.join("fragment.wxs"), &fragment)?;
    std::fs::write(dir.join("product.wxs"), standin_product(&component_refs, &moved))?;

    // x64, as the release workflow's runner builds. Relative paths: wixl 0.101 cannot open
    // an absolute Source.
    let mut wixl = Command::new("wixl");
    wixl.args(["--arch", "x64", "--output", "check.msi"]);
    for define in &defines {
        wixl.args(["--define", define]);
    }
    wixl.args(["product.wxs", "fragment.wxs"]).current_dir(&dir);
    let out = wixl.output().context("could not start wixl (Debian package wixl)")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!(
            "wixl could not compile the fragment ({}; its input is in {}):\n{}",
            out.status,
            dir.display(),
            stderr.trim_end()
        );
    }
    // wixl exits 0 after some assertion failures (a custom action it cannot compile is
    // dropped with "CRITICAL **: ... assertion 'Source != NULL' failed"): the MSI is then
    // missing what the fragment has.
    if let Some(critical) = stderr.lines().find(|line| line.contains("CRITICAL")) {
        bail!(
            "wixl failed an assertion while compiling the fragment (its input is in {}): {}",
            dir.display(),
            critical.trim()
        );
    }
    let msi = dir.join("check.msi");
    let size = std::fs::metadata(&msi).map(|m| m.len()).unwrap_or(0);

    let mut findings = Findings::default();
    findings.checked.push(format!(
        "{WXS}: well-formed; wixl compiled it into {} ({size} bytes) with {}",
        msi.strip_prefix(root).unwrap_or(&msi).display(),
        if plan.moved_names.is_empty() {
            "nothing moved".to_string()
        } else {
            format!("{} moved from the Fragment into the stand-in Product", plan.moved_names.join(", "))
        }
    ));
    findings.checked.push(format!(
        "the placeholders ({}) are the ones dist.rs fills in; its componentRefs ({}) are the fragment's components",
        placeholders.iter().map(|p| p.token()).collect::<Vec<_>>().join(", "),
        component_refs.join(", ")
    ));
    if !file_references.is_empty() {
        findings.checked.push(format!(
            "the file references in attribute values ({}) name files of the fragment",
            file_references.join(", ")
        ));
    }
    let tables = msi_tables::compare(&msi, &doc, &|node| plan.compiles(node))?;
    findings.checked.extend(tables.checked);

    findings.not_validated.extend(plan.split_out);
    findings.not_validated.extend(ignored_attributes(&stderr));
    let other: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.contains("has no property named"))
        .collect();
    if !other.is_empty() {
        findings.not_validated.push(format!("wixl also said: {}", other.join(" | ")));
    }
    findings.not_validated.extend(tables.not_validated);
    findings.not_validated.push(
        "the bundler's own main.wxs (replaced by a stand-in Product), linking with WiX 3's light, ICE validation, \
         and the MSI on Windows"
            .into(),
    );
    Ok(findings)
}

/// The directories the bundler's main.wxs defines (for x64), which the stand-in Product
/// defines too.
const MAIN_WXS_DIRECTORIES: &[&str] = &[
    "TARGETDIR",
    "DesktopFolder",
    "ProgramFiles64Folder",
    "INSTALLDIR",
    "ProgramMenuFolder",
    "ApplicationProgramsFolder",
];

/// The stand-in for the bundler's main.wxs: the same directories (x64), one feature with the
/// fragment's components (the bundler's "External"), and the parts moved out of the fragment.
fn standin_product(component_refs: &[String], moved: &str) -> String {
    let refs: String =
        component_refs.iter().map(|id| format!("      <ComponentRef Id=\"{id}\" />\n")).collect();
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<!-- Written by `cargo xtask check-installers` for wixl: a stand-in for the Tauri bundler's
     main.wxs around {WXS}. -->
<Wix xmlns="{WIX_NS}">
  <Product Id="*" Name="Trellis installer check" Language="1033" Version="0.0.1" Manufacturer="Trellis"
           UpgradeCode="6f9a4a3e-5b0c-4d51-9b7e-3c1f1d3b2a10">
    <Package InstallerVersion="450" Compressed="yes" InstallScope="perMachine" />
    <Media Id="1" Cabinet="app.cab" EmbedCab="yes" />
    <Directory Id="TARGETDIR" Name="SourceDir">
      <Directory Id="DesktopFolder" Name="Desktop" />
      <Directory Id="ProgramFiles64Folder" Name="PFiles">
        <Directory Id="INSTALLDIR" Name="Trellis" />
      </Directory>
      <Directory Id="ProgramMenuFolder">
        <Directory Id="ApplicationProgramsFolder" Name="Trellis" />
      </Directory>
    </Directory>
    <Feature Id="External" Level="1">
{refs}    </Feature>
{moved}
  </Product>
</Wix>
"#
    )
}

/// wixl's warnings about attributes it does not know ("object class 'WixlWixFile' has no
/// property named 'Checksum'"), as "File/@Checksum: ..." lines.
fn ignored_attributes(stderr: &str) -> Vec<String> {
    let mut found = BTreeSet::new();
    for line in stderr.lines().filter(|l| l.contains("has no property named")) {
        let quoted: Vec<&str> = line.split('\'').skip(1).step_by(2).collect();
        if let [class, property, ..] = quoted.as_slice() {
            let element = class.strip_prefix("WixlWix").unwrap_or(class);
            found.insert(format!("{element}/@{property}: ignored by wixl 0.101 (it has no such attribute)"));
        }
    }
    found.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standin_product_defines_the_main_wxs_directories() {
        let product = standin_product(&["A".to_string()], "");
        let doc = roxmltree::Document::parse(&product).unwrap();
        for dir in MAIN_WXS_DIRECTORIES {
            assert!(
                doc.descendants()
                    .any(|n| n.has_tag_name((WIX_NS, "Directory")) && n.attribute("Id") == Some(*dir)),
                "{dir}"
            );
        }
    }

    #[test]
    fn wixl_warnings_become_attribute_notes() {
        let stderr = "\n(wixl:1): GLib-GObject-WARNING **: 22:55:18.296: g_object_set_is_valid_property: object class \
                      'WixlWixFile' has no property named 'Checksum'\n(same again)\n(wixl:1): GLib-GObject-WARNING **: \
                      object class 'WixlWixFile' has no property named 'Checksum'\n";
        assert_eq!(
            ignored_attributes(stderr),
            ["File/@Checksum: ignored by wixl 0.101 (it has no such attribute)"]
        );
    }
}
