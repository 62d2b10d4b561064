//! `trellisd install-service` and `uninstall-service` on Linux, into a staging root
//! (`--root`), so that the machine running the tests is not changed: the files, their
//! modes, the unit (the packages' unit starting /usr/local/bin/trellisd), refusals that
//! change nothing, and removal with and without --purge. The packages' unit itself is
//! checked by `cargo xtask test-deb` (systemd-analyze verify, the helper as it runs it).
#![cfg(target_os = "linux")]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

const TRELLISD: &str = env!("CARGO_BIN_EXE_trellisd");
const PACKAGED_UNIT: &str = include_str!("../../installers/linux/trellisd.service");

fn trellisd(args: &[&str]) -> Output {
    Command::new(TRELLISD).args(args).output().expect("trellisd runs")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode()
        & 0o7777
}

fn files_under(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                found.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    found
}

#[test]
fn installs_the_programs_and_the_unit_then_removes_them() {
    let root = tempfile::tempdir().unwrap();
    let root_arg = root.path().to_str().unwrap();
    let out = trellisd(&["install-service", "--root", root_arg, "--for-user", "nobody"]);
    assert!(out.status.success(), "install-service failed: {}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("nothing was started"), "install-service said:\n{said}");

    // cargo puts `trellis` next to `trellisd`, as the packages and the AppImage do.
    assert_eq!(
        files_under(root.path()),
        [
            "etc/systemd/system/trellisd.service",
            "etc/systemd/system/trellisd.service.d/owner.conf",
            "usr/local/bin/trellis",
            "usr/local/bin/trellisd"
        ]
    );
    // The installing user may control the helper by uid before their new group counts.
    let drop_in =
        std::fs::read_to_string(root.path().join("etc/systemd/system/trellisd.service.d/owner.conf"))
            .unwrap();
    let nobody_uid =
        String::from_utf8(Command::new("id").args(["-u", "nobody"]).output().unwrap().stdout).unwrap();
    assert!(
        drop_in.contains(&format!("[Service]\nEnvironment=TRELLIS_OWNER_UID={}\n", nobody_uid.trim())),
        "{drop_in}"
    );
    let helper = root.path().join("usr/local/bin/trellisd");
    assert_eq!(mode(&helper), 0o755);
    assert_eq!(
        std::fs::read(&helper).unwrap(),
        std::fs::read(TRELLISD).unwrap(),
        "the copy is not this trellisd"
    );
    let unit_path = root.path().join("etc/systemd/system/trellisd.service");
    assert_eq!(mode(&unit_path), 0o644);
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    let exec_start: Vec<&str> = unit.lines().filter(|l| l.starts_with("ExecStart=")).collect();
    assert_eq!(
        exec_start,
        ["ExecStart=/usr/local/bin/trellisd --state-dir /var/lib/trellis --socket /run/trellis/trellisd.sock"]
    );
    // Apart from its first comment line and the helper's path, it is the packages' unit:
    // the same sandbox and capabilities.
    let body = unit.split_once('\n').unwrap().1;
    assert_eq!(body, PACKAGED_UNIT.replace("/usr/bin/trellisd", "/usr/local/bin/trellisd"));

    // Installing again replaces the files in place.
    let again = trellisd(&["install-service", "--root", root_arg]);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));

    // The device key stays on uninstall unless --purge.
    let state = root.path().join("var/lib/trellis");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("device.key"), b"key").unwrap();
    let out = trellisd(&["uninstall-service", "--root", root_arg]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(files_under(root.path()), ["var/lib/trellis/device.key"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("kept the device key"));

    // Nothing left to remove: a clear error, and still nothing changed.
    let out = trellisd(&["uninstall-service", "--root", root_arg, "--purge"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing was changed"));
    assert_eq!(files_under(root.path()), ["var/lib/trellis/device.key"]);

    trellisd(&["install-service", "--root", root_arg]);
    let out = trellisd(&["uninstall-service", "--root", root_arg, "--purge"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(files_under(root.path()).is_empty(), "left: {:?}", files_under(root.path()));
}

#[test]
fn refuses_where_a_package_installed_the_helper_and_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let packaged = root.path().join("usr/lib/systemd/system/trellisd.service");
    std::fs::create_dir_all(packaged.parent().unwrap()).unwrap();
    std::fs::write(&packaged, PACKAGED_UNIT).unwrap();
    let out = trellisd(&["install-service", "--root", root.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("already installed by a package") && said.contains("nothing was changed"),
        "{said}"
    );
    assert_eq!(files_under(root.path()), ["usr/lib/systemd/system/trellisd.service"]);
}
