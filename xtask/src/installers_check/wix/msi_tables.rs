//! The throwaway MSI's tables (read with `msiinfo export`) compared with the fragment: each
//! directory, component, file, service, service control, custom action and sequenced action
//! of the fragment must be in the MSI with the values the fragment gives it, as Windows
//! Installer encodes them (a service's start type as 2, a custom action's flags as bits).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use roxmltree::Node;

use crate::installers_check::Findings;

/// Elements that only hold others: nothing of their own to find in a table.
const CONTAINERS: &[&str] = &["Wix", "Fragment", "DirectoryRef", "InstallExecuteSequence"];

/// Compares the fragment's elements that wixl compiled (`compiled`) with the MSI's tables.
pub fn compare(
    msi: &Path,
    doc: &roxmltree::Document<'_>,
    compiled: &dyn Fn(Node<'_, '_>) -> bool,
) -> Result<Findings> {
    let mut tables = Tables { msi, cache: HashMap::new() };
    let mut problems = Vec::new();
    let mut compared: BTreeMap<&str, usize> = BTreeMap::new();
    let mut not_compared = Vec::new();
    let mut placement = Vec::new();

    for node in doc.descendants().filter(|n| n.is_element() && compiled(*n)) {
        let name = node.tag_name().name();
        let line = doc.text_pos_at(node.range().start).row;
        let mut expect = Expect { problems: &mut problems, what: format!("{name} at line {line}") };
        match name {
            "Directory" => directory(&mut tables, node, &mut expect)?,
            "Component" => component(&mut tables, node, &mut expect)?,
            "File" => file(&mut tables, node, &mut expect)?,
            "ServiceInstall" => service_install(&mut tables, node, &mut expect)?,
            "ServiceControl" => service_control(&mut tables, node, &mut expect)?,
            "CustomAction" => custom_action(&mut tables, node, &mut expect)?,
            "Custom" => placement.extend(custom(&mut tables, node, &mut expect)?),
            _ if CONTAINERS.contains(&name) => continue,
            _ => {
                not_compared.push(format!("{name} (line {line})"));
                continue;
            }
        }
        *compared.entry(name).or_default() += 1;
    }
    if !problems.is_empty() {
        bail!("the MSI wixl built does not hold what the fragment says:\n    {}", problems.join("\n    "));
    }
    let counts: Vec<String> = compared.iter().map(|(name, n)| format!("{n} {name}")).collect();
    let mut findings = Findings::default();
    findings.checked.push(format!("msiinfo: the MSI's tables hold the fragment's {}", counts.join(", ")));
    if !not_compared.is_empty() {
        findings.not_validated.push(format!(
            "compiled by wixl but not compared with the MSI's tables: {}",
            not_compared.join(", ")
        ));
    }
    findings.not_validated.extend(placement);
    Ok(findings)
}

fn directory(tables: &mut Tables<'_>, node: Node<'_, '_>, expect: &mut Expect<'_>) -> Result<()> {
    let Some(row) = tables.row(expect, "Directory", "Directory", node.attribute("Id"))? else {
        return Ok(());
    };
    expect.eq("Directory_Parent", row.get("Directory_Parent"), parent_directory(node).unwrap_or(""));
    if let Some(name) = node.attribute("Name") {
        expect.eq("DefaultDir (long name)", long_name(row.get("DefaultDir")), name);
    }
    Ok(())
}

fn component(tables: &mut Tables<'_>, node: Node<'_, '_>, expect: &mut Expect<'_>) -> Result<()> {
    let Some(row) = tables.row(expect, "Component", "Component", node.attribute("Id"))? else {
        return Ok(());
    };
    expect.eq("Directory_", row.get("Directory_"), parent_directory(node).unwrap_or(""));
    if let Some(guid) = node.attribute("Guid").filter(|g| *g != "*") {
        expect.eq("ComponentId", row.get("ComponentId"), &format!("{{{}}}", guid.to_ascii_uppercase()));
    }
    // msidbComponentAttributes64bit
    let win64 = node.attribute("Win64") == Some("yes");
    expect.flag("Attributes", row.get("Attributes"), 0x100, win64);
    let key_file = node
        .children()
        .find(|c| c.is_element() && c.attribute("KeyPath") == Some("yes"))
        .and_then(|c| c.attribute("Id"));
    if let Some(key) = key_file {
        expect.eq("KeyPath", row.get("KeyPath"), key);
    }
    Ok(())
}

fn file(tables: &mut Tables<'_>, node: Node<'_, '_>, expect: &mut Expect<'_>) -> Result<()> {
    let Some(row) = tables.row(expect, "File", "File", node.attribute("Id"))? else { return Ok(()) };
    expect.eq(
        "Component_",
        row.get("Component_"),
        node.parent_element().and_then(|p| p.attribute("Id")).unwrap_or(""),
    );
    if let Some(name) = node.attribute("Name") {
        expect.eq("FileName (long name)", long_name(row.get("FileName")), name);
    }
    Ok(())
}

fn service_install(tables: &mut Tables<'_>, node: Node<'_, '_>, expect: &mut Expect<'_>) -> Result<()> {
    let Some(row) = tables.row(expect, "ServiceInstall", "ServiceInstall", node.attribute("Id"))? else {
        return Ok(());
    };
    for (column, attribute) in [
        ("Name", "Name"),
        ("DisplayName", "DisplayName"),
        ("Description", "Description"),
        ("StartName", "Account"),
        ("Arguments", "Arguments"),
    ] {
        if let Some(value) = node.attribute(attribute) {
            expect.eq(column, row.get(column), value);
        }
    }
    expect.eq(
        "Component_",
        row.get("Component_"),
        node.parent_element().and_then(|p| p.attribute("Id")).unwrap_or(""),
    );
    let service_type = match node.attribute("Type") {
        Some("ownProcess") => 0x10,
        Some("shareProcess") => 0x20,
        Some("kernelDriver") => 0x1,
        Some("systemDriver") => 0x2,
        other => return unknown(expect, "Type", other),
    } | if node.attribute("Interactive") == Some("yes") { 0x100 } else { 0 };
    expect.eq("ServiceType", row.get("ServiceType"), &service_type.to_string());
    let start = match node.attribute("Start") {
        Some("boot") => 0,
        Some("system") => 1,
        Some("auto") => 2,
        Some("demand") => 3,
        Some("disabled") => 4,
        other => return unknown(expect, "Start", other),
    };
    expect.eq("StartType", row.get("StartType"), &start.to_string());
    let error_control = match node.attribute("ErrorControl") {
        Some("ignore") => 0,
        Some("normal") => 1,
        Some("critical") => 3,
        other => return unknown(expect, "ErrorControl", other),
    };
    expect.eq("ErrorControl", row.get("ErrorControl"), &error_control.to_string());
    Ok(())
}

fn service_control(tables: &mut Tables<'_>, node: Node<'_, '_>, expect: &mut Expect<'_>) -> Result<()> {
    let Some(row) = tables.row(expect, "ServiceControl", "ServiceControl", node.attribute("Id"))? else {
        return Ok(());
    };
    expect.eq("Name", row.get("Name"), node.attribute("Name").unwrap_or(""));
    expect.eq(
        "Component_",
        row.get("Component_"),
        node.parent_element().and_then(|p| p.attribute("Id")).unwrap_or(""),
    );
    // msidbServiceControlEvent*: Start 0x1, Stop 0x2, Delete 0x8 on install; 0x10, 0x20,
    // 0x80 on uninstall.
    let mut event = 0;
    for (attribute, on_install) in [("Start", 0x1), ("Stop", 0x2), ("Remove", 0x8)] {
        event |= match node.attribute(attribute) {
            None => 0,
            Some("install") => on_install,
            Some("uninstall") => on_install << 4,
            Some("both") => on_install | on_install << 4,
            other => return unknown(expect, attribute, other),
        };
    }
    expect.eq("Event", row.get("Event"), &event.to_string());
    if let Some(wait) = node.attribute("Wait") {
        expect.eq("Wait", row.get("Wait"), if wait == "yes" { "1" } else { "0" });
    }
    Ok(())
}

fn custom_action(tables: &mut Tables<'_>, node: Node<'_, '_>, expect: &mut Expect<'_>) -> Result<()> {
    let Some(row) = tables.row(expect, "CustomAction", "Action", node.attribute("Id"))? else {
        return Ok(());
    };
    let type_bits = row.get("Type");
    if let (Some(file), Some(command)) = (node.attribute("FileKey"), node.attribute("ExeCommand")) {
        // msidbCustomActionTypeExe (2) + msidbCustomActionTypeSourceFile (0x10).
        expect.masked("Type (an exe of the package)", type_bits, 0x3F, 18);
        expect.eq("Source", row.get("Source"), file);
        expect.eq("Target", row.get("Target"), command);
    }
    // msidbCustomActionTypeInScript 0x400, with Rollback 0x100 or Commit 0x200.
    let (mask, bits) = match node.attribute("Execute") {
        None | Some("immediate") => (0x700, 0),
        Some("deferred") => (0x700, 0x400),
        Some("rollback") => (0x700, 0x500),
        Some("commit") => (0x700, 0x600),
        other => return unknown(expect, "Execute", other),
    };
    expect.masked("Type (Execute)", type_bits, mask, bits);
    // msidbCustomActionTypeNoImpersonate
    expect.flag("Type (Impersonate=\"no\")", type_bits, 0x800, node.attribute("Impersonate") == Some("no"));
    // msidbCustomActionTypeContinue 0x40, msidbCustomActionTypeAsync 0x80.
    let returns = match node.attribute("Return") {
        None | Some("check") => 0,
        Some("ignore") => 0x40,
        Some("asyncWait") => 0x80,
        Some("asyncNoWait") => 0xC0,
        other => return unknown(expect, "Return", other),
    };
    expect.masked("Type (Return)", type_bits, 0xC0, returns);
    Ok(())
}

/// A custom action's entry in its sequence; returns a note on its place, which wixl does
/// not decide as WiX's light does.
fn custom(tables: &mut Tables<'_>, node: Node<'_, '_>, expect: &mut Expect<'_>) -> Result<Option<String>> {
    let Some(sequence) = node.parent_element().map(|p| p.tag_name().name()) else { return Ok(None) };
    let action = node.attribute("Action");
    let Some(row) = tables.row(expect, sequence, "Action", action)? else { return Ok(None) };
    expect.eq("Condition", row.get("Condition").trim(), node.text().unwrap_or("").trim());
    let number = row.get("Sequence").to_string();
    let Some((relation, anchor)) = node
        .attribute("After")
        .map(|a| ("after", a))
        .or_else(|| node.attribute("Before").map(|b| ("before", b)))
    else {
        return Ok(None);
    };
    let table = tables.table(sequence)?;
    let number_of =
        |action: &str| table.find("Action", action).and_then(|r| r.get("Sequence").parse::<u32>().ok());
    let anchor_number = number_of(anchor).map_or("not in the table".to_string(), |n| n.to_string());
    // wixl 0.101 orders custom actions after every standard one, whatever After or Before says.
    let past_finalize = match (number.parse::<u32>().ok(), number_of("InstallFinalize")) {
        (Some(n), Some(finalize)) if n > finalize => format!(", after InstallFinalize ({finalize})"),
        _ => String::new(),
    };
    Ok(Some(format!(
        "the place of {sequence}/Custom {}: WiX's light puts it right {relation} {anchor} ({anchor_number}); wixl \
         0.101 numbered it {number}{past_finalize}",
        action.unwrap_or("?")
    )))
}

fn unknown<T: Default>(expect: &mut Expect<'_>, attribute: &str, value: Option<&str>) -> Result<T> {
    expect.problems.push(format!("{}: {attribute}={value:?} is not a value this check knows", expect.what));
    Ok(T::default())
}

/// The nearest enclosing Directory's or DirectoryRef's Id.
fn parent_directory<'a>(node: Node<'a, '_>) -> Option<&'a str> {
    node.ancestors()
        .skip(1)
        .find(|a| a.has_tag_name("Directory") || a.has_tag_name("DirectoryRef"))
        .and_then(|a| a.attribute("Id"))
}

/// The long name of a `short|long` file or directory name (`target:source` for a directory).
fn long_name(value: &str) -> &str {
    let target = value.split(':').next().unwrap_or(value);
    target.rsplit('|').next().unwrap_or(target)
}

/// Collects mismatches for one element.
struct Expect<'p> {
    problems: &'p mut Vec<String>,
    what: String,
}

impl Expect<'_> {
    fn eq(&mut self, column: &str, got: &str, want: &str) {
        if got != want {
            self.problems
                .push(format!("{}: {column} is {got:?} in the MSI, the fragment says {want:?}", self.what));
        }
    }

    fn masked(&mut self, column: &str, got: &str, mask: u32, want: u32) {
        match got.parse::<u32>() {
            Ok(value) if value & mask == want => {}
            _ => self.problems.push(format!(
                "{}: {column}: {got} in the MSI, the fragment says {want:#x} under mask {mask:#x}",
                self.what
            )),
        }
    }

    fn flag(&mut self, column: &str, got: &str, bit: u32, set: bool) {
        self.masked(column, got, bit, if set { bit } else { 0 });
    }
}

/// The MSI's tables, each read once.
struct Tables<'a> {
    msi: &'a Path,
    cache: HashMap<String, Table>,
}

impl Tables<'_> {
    fn table(&mut self, name: &str) -> Result<&Table> {
        if !self.cache.contains_key(name) {
            let table = Table::export(self.msi, name)?;
            self.cache.insert(name.to_string(), table);
        }
        Ok(&self.cache[name])
    }

    /// The row of `table` whose `column` is `key`; a missing one is a problem.
    fn row<'t>(
        &'t mut self,
        expect: &mut Expect<'_>,
        table: &str,
        column: &str,
        key: Option<&str>,
    ) -> Result<Option<Row<'t>>> {
        let Some(key) = key else {
            expect.problems.push(format!("{}: no Id", expect.what));
            return Ok(None);
        };
        let row = self.table(table)?.find(column, key);
        if row.is_none() {
            expect.problems.push(format!("{}: no row {key} in the MSI's {table} table", expect.what));
        }
        Ok(row)
    }
}

/// A table as `msiinfo export` prints it (IDT): column names, column types, the table's
/// name and keys, then one tab-separated row a line.
#[derive(Debug)]
struct Table {
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn export(msi: &Path, name: &str) -> Result<Table> {
        let out = Command::new("msiinfo")
            .arg("export")
            .arg(msi)
            .arg(name)
            .output()
            .context("could not start msiinfo (Debian package msitools)")?;
        if !out.status.success() {
            bail!(
                "msiinfo export {} {name} failed: {}",
                msi.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(Table::parse(&String::from_utf8_lossy(&out.stdout)))
    }

    fn parse(idt: &str) -> Table {
        let mut lines = idt.lines();
        let columns = lines.next().unwrap_or("").split('\t').map(String::from).collect();
        let rows = lines.skip(2).map(|line| line.split('\t').map(String::from).collect()).collect();
        Table { columns, rows }
    }

    fn find(&self, column: &str, value: &str) -> Option<Row<'_>> {
        let index = self.columns.iter().position(|c| c == column)?;
        self.rows
            .iter()
            .find(|row| row.get(index).map(String::as_str) == Some(value))
            .map(|values| Row { table: self, values })
    }
}

#[derive(Debug, Clone, Copy)]
struct Row<'t> {
    table: &'t Table,
    values: &'t [String],
}

impl Row<'_> {
    /// The value in `column`; "" for a column the table does not have.
    fn get(&self, column: &str) -> &str {
        self.table
            .columns
            .iter()
            .position(|c| c == column)
            .and_then(|i| self.values.get(i))
            .map_or("", String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idt_rows_are_read_by_column() {
        let table = Table::parse(
            "Action\tType\tSource\tTarget\tExtendedType\ns72\ti2\tS72\tS255\tI4\nCustomAction\tAction\n\
             Setup\t3090\tTrellisdExe\tinstall-service --for-user \"[LogonUser]\"\t\n",
        );
        let row = table.find("Action", "Setup").unwrap();
        assert_eq!(row.get("Type"), "3090");
        assert_eq!(row.get("Target"), "install-service --for-user \"[LogonUser]\"");
        assert_eq!(row.get("ExtendedType"), "");
        assert_eq!(row.get("NoSuchColumn"), "");
        assert!(table.find("Action", "CustomAction").is_none(), "the key line is not a row");
    }

    #[test]
    fn long_names() {
        assert_eq!(long_name("TRELLI~1|Trellis Helper"), "Trellis Helper");
        assert_eq!(long_name("Trellis Helper"), "Trellis Helper");
        assert_eq!(long_name("."), ".");
    }

    #[test]
    fn flags_and_masks_report_mismatches() {
        let mut problems = Vec::new();
        let mut expect = Expect { problems: &mut problems, what: "CustomAction at line 1".into() };
        // 3090 = 18 | 0x400 (deferred) | 0x800 (no impersonation).
        expect.masked("Type", "3090", 0x3F, 18);
        expect.masked("Type", "3090", 0x700, 0x400);
        expect.flag("Type", "3090", 0x800, true);
        expect.masked("Type", "3090", 0xC0, 0);
        assert!(problems.is_empty(), "{problems:?}");
        let mut expect = Expect { problems: &mut problems, what: "CustomAction at line 1".into() };
        expect.flag("Type", "3090", 0x800, false);
        expect.masked("Type", "not a number", 0x3F, 18);
        assert_eq!(problems.len(), 2, "{problems:?}");
    }
}
