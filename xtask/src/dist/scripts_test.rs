//! The maintainer scripts of installers/linux/ run for each deb and rpm situation, against
//! a scratch root (`DPKG_ROOT`) and stand-ins for systemctl, groupadd, usermod, getent and
//! id that record their calls: which systemctl calls each situation makes, and what the
//! scripts leave in the root. `test-deb` installs the real package, but without systemd
//! running and only as a first install, upgrade, remove and purge.

use std::path::{Path, PathBuf};
use std::process::Command;

struct Machine {
    dir: tempfile::TempDir,
}

impl Machine {
    /// A root with systemd "running" (/run/systemd/system exists) when `systemd`.
    fn new(systemd: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let stubs = dir.path().join("stubs");
        std::fs::create_dir_all(&stubs).unwrap();
        let calls = dir.path().join("calls");
        let stub = |name: &str, body: &str| {
            let path = stubs.join(name);
            std::fs::write(
                &path,
                format!("#!/bin/sh\necho \"{name} $*\" >> '{}'\n{body}\n", calls.display()),
            )
            .unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        stub("systemctl", "exit 0");
        stub("groupadd", "exit 0");
        stub("usermod", "exit 0");
        // The group does not exist yet; alice is uid 1000 and in no group but her own.
        stub(
            "getent",
            r#"case "$1" in group) exit 2 ;; passwd) echo "alice:x:1000:1000::/home/alice:/bin/sh" ;; esac"#,
        );
        stub("id", r#"case "$1" in -nG) echo alice ;; -u) echo 1000 ;; esac"#);
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        if systemd {
            std::fs::create_dir_all(root.join("run/systemd/system")).unwrap();
        }
        Self { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Runs installers/linux/`script` with `args` (and SUDO_USER=alice when `by_alice`);
    /// returns the systemctl calls it made.
    fn run(&self, script: &str, args: &[&str], by_alice: bool) -> Vec<String> {
        let calls = self.dir.path().join("calls");
        let _ = std::fs::remove_file(&calls);
        let path = format!("{}:/usr/bin:/bin", self.dir.path().join("stubs").display());
        let mut command = Command::new("sh");
        command
            .arg(crate::workspace_root().join("installers/linux").join(script))
            .args(args)
            .env_clear()
            .env("PATH", path)
            .env("DPKG_ROOT", self.root());
        if by_alice {
            command.env("SUDO_USER", "alice");
        }
        let out = command.output().unwrap();
        assert!(out.status.success(), "{script} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        std::fs::read_to_string(&calls)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("systemctl "))
            .map(str::to_string)
            .collect()
    }

    fn exists(&self, path: &str) -> bool {
        self.root().join(path).exists()
    }
}

const ENABLE: [&str; 3] =
    ["systemctl daemon-reload", "systemctl enable trellisd.service", "systemctl restart trellisd.service"];
const TRY_RESTART: [&str; 2] = ["systemctl daemon-reload", "systemctl try-restart trellisd.service"];
const DISABLE: [&str; 1] = ["systemctl disable --now trellisd.service"];
const OWNER_DROP_IN: &str = "etc/systemd/system/trellisd.service.d/owner.conf";

#[test]
fn deb_first_install_enables_the_service_and_lets_the_installer_in() {
    let machine = Machine::new(true);
    assert_eq!(machine.run("postinst", &["configure", ""], true), ENABLE);
    let drop_in = std::fs::read_to_string(machine.root().join(OWNER_DROP_IN)).unwrap();
    assert!(drop_in.contains("[Service]\nEnvironment=TRELLIS_OWNER_UID=1000\n"), "{drop_in}");
}

#[test]
fn deb_upgrade_restarts_a_running_service_and_keeps_the_owner() {
    let machine = Machine::new(true);
    machine.run("postinst", &["configure", ""], true);
    let drop_in = std::fs::read_to_string(machine.root().join(OWNER_DROP_IN)).unwrap();
    assert_eq!(machine.run("prerm", &["upgrade", "0.1.1"], false), Vec::<String>::new());
    assert_eq!(machine.run("postinst", &["configure", "0.1.0"], false), TRY_RESTART);
    assert_eq!(std::fs::read_to_string(machine.root().join(OWNER_DROP_IN)).unwrap(), drop_in);
}

#[test]
fn deb_reinstall_after_remove_enables_the_service_again() {
    let machine = Machine::new(true);
    machine.run("postinst", &["configure", ""], true);
    assert_eq!(machine.run("prerm", &["remove"], false), DISABLE);
    assert_eq!(machine.run("postrm", &["remove"], false), ["systemctl daemon-reload"]);
    // dpkg passes the version that was configured before the removal.
    assert_eq!(machine.run("postinst", &["configure", "0.1.0"], false), ENABLE);
    assert!(!machine.exists("var/lib/trellis/.removed"), "the marker outlived the reinstall");
}

#[test]
fn deb_failed_removal_enables_the_service_again() {
    let machine = Machine::new(true);
    assert_eq!(machine.run("prerm", &["remove"], false), DISABLE);
    assert_eq!(machine.run("postinst", &["abort-remove"], false), ENABLE);
}

#[test]
fn deb_purge_deletes_the_state_and_the_owner() {
    let machine = Machine::new(true);
    machine.run("postinst", &["configure", ""], true);
    std::fs::create_dir_all(machine.root().join("var/lib/trellis")).unwrap();
    std::fs::write(machine.root().join("var/lib/trellis/device.key"), "key").unwrap();
    machine.run("prerm", &["remove"], false);
    machine.run("postrm", &["remove"], false);
    assert!(machine.exists("var/lib/trellis/device.key"), "dpkg -r deleted the key");
    assert!(machine.exists(OWNER_DROP_IN));
    assert_eq!(machine.run("postrm", &["purge"], false), Vec::<String>::new());
    assert!(!machine.exists("var/lib/trellis"));
    assert!(!machine.exists("etc/systemd/system/trellisd.service.d"));
}

#[test]
fn rpm_install_upgrade_and_erase() {
    let machine = Machine::new(true);
    assert_eq!(machine.run("postinst", &["1"], true), ENABLE);
    // An upgrade: the new package's %post 2, then the old one's %preun 1 and %postun 1.
    assert_eq!(machine.run("postinst", &["2"], false), TRY_RESTART);
    assert_eq!(machine.run("prerm", &["1"], false), Vec::<String>::new());
    assert_eq!(machine.run("postrm", &["1"], false), Vec::<String>::new());
    // Erase, then install again.
    assert_eq!(machine.run("prerm", &["0"], false), DISABLE);
    assert_eq!(machine.run("postrm", &["0"], false), ["systemctl daemon-reload"]);
    assert!(machine.exists(OWNER_DROP_IN), "erasing is not purging");
    assert_eq!(machine.run("postinst", &["1"], false), ENABLE);
}

#[test]
fn the_package_takes_over_from_install_service() {
    let machine = Machine::new(true);
    let unit = machine.root().join("etc/systemd/system/trellisd.service");
    std::fs::create_dir_all(unit.parent().unwrap()).unwrap();
    std::fs::write(
        &unit,
        "# Installed by `trellisd install-service`; `trellisd uninstall-service` removes it.\n",
    )
    .unwrap();
    let bin = machine.root().join("usr/local/bin");
    std::fs::create_dir_all(&bin).unwrap();
    for name in ["trellisd", "trellis"] {
        std::fs::write(bin.join(name), "old").unwrap();
    }
    // Even as an "upgrade" (the package was installed before too), it starts its own helper.
    assert_eq!(machine.run("postinst", &["configure", "0.1.0"], false), ENABLE);
    for gone in ["etc/systemd/system/trellisd.service", "usr/local/bin/trellisd", "usr/local/bin/trellis"] {
        assert!(!machine.exists(gone), "{gone} is still there");
    }
}

#[test]
fn a_unit_written_by_hand_is_left_alone() {
    let machine = Machine::new(true);
    let unit = machine.root().join("etc/systemd/system/trellisd.service");
    std::fs::create_dir_all(unit.parent().unwrap()).unwrap();
    std::fs::write(&unit, "[Service]\nExecStart=/opt/trellisd\n").unwrap();
    machine.run("postinst", &["configure", ""], false);
    assert!(unit.exists(), "the postinst deleted an administrator's own unit");
}

#[test]
fn without_systemd_nothing_is_started() {
    let machine = Machine::new(false);
    assert_eq!(machine.run("postinst", &["configure", ""], true), Vec::<String>::new());
    assert_eq!(machine.run("prerm", &["remove"], false), Vec::<String>::new());
    assert!(Path::new(&machine.root().join(OWNER_DROP_IN)).exists(), "the owner is written anyway");
}
