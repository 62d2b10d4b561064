//! The real app where the helper is not installed but the app carries one (as the
//! AppImage does): the window says what installing will do, installs it through pkexec,
//! shows what was done, and connects once the service runs. Its own test binary, so it
//! never runs beside the other app test (two apps under Xvfb on two cores).
//!
//! polkit's pkexec needs a polkit agent to ask for a password, which a test machine lacks;
//! a stand-in `pkexec` first on PATH records its arguments and runs the command into a
//! staging root (`trellisd install-service --root`), so the machine is not changed. The
//! test then starts the helper, as systemd would after `enable --now`.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use trellis_e2e::desktop::{print_logs_on_failure, DrivenApp};
use trellis_e2e::topology::{Nat, World};
use trellis_e2e::{binaries, privileged_or_explain, wait_for, workspace_root};

#[test]
fn the_app_installs_the_helper_it_carries_after_saying_what_that_does() {
    if !privileged_or_explain("the desktop app's helper-setup test") {
        return;
    }
    let mut world = World::new("setup");
    world.start_server();
    let alice = world.add_home("alice", Nat::Easy);

    // The pkexec stand-in.
    let dir = world.dir.path().to_path_buf();
    let fake_bin = dir.join("fake-bin");
    let staging = dir.join("staging");
    let record = dir.join("pkexec-args");
    std::fs::create_dir_all(&fake_bin).unwrap();
    let pkexec = fake_bin.join("pkexec");
    std::fs::write(
        &pkexec,
        format!(
            "#!/bin/sh\n# pkexec stand-in (see e2e/tests/app_setup.rs)\nprintf '%s\\n' \"$@\" > '{}'\nexec \"$@\" --root '{}'\n",
            record.display(),
            staging.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&pkexec, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", fake_bin.display(), std::env::var("PATH").unwrap_or_default());
    let carried = binaries().join("trellisd");

    let server = world.server_url();
    let driven = DrivenApp::start(
        &dir,
        &[
            ("PATH", path.as_ref()),
            ("USER", "root".as_ref()),
            ("TRELLIS_BUNDLED_HELPER", carried.as_os_str()),
            ("TRELLIS_SOCKET", world.homes[alice].socket.as_os_str()),
            ("TRELLIS_DEFAULT_SERVER", server.as_ref()),
        ],
    );
    let (app, desktop) = (&driven.session, &driven.desktop);
    let on_failure = print_logs_on_failure(&dir);

    // Not installed, but carried: the offer, with what it will do, before any prompt.
    app.find("[data-testid=install-helper-card]");
    let explanation = app.text("[data-testid=install-helper-explanation]");
    for words in ["administrator", "system service", "/var/lib/trellis", "trellis"] {
        assert!(explanation.contains(words), "the explanation does not mention {words:?}: {explanation}");
    }
    assert!(!record.exists(), "pkexec ran before the person asked");
    desktop.screenshot("Trellis", &workspace_root().join("target/screenshots/helper-setup.png"));

    app.click("[data-testid=install-helper]");
    let output = app
        .wait_text("[data-testid=install-output]", "what the install did", |t| t.contains("Installed into"));
    assert!(output.contains("trellisd.service"), "the output names the unit: {output}");

    // pkexec ran a copy of the carried helper (root cannot read an AppImage's mount), for
    // this user; the copy is gone afterwards.
    let args: Vec<String> = std::fs::read_to_string(&record).unwrap().lines().map(str::to_string).collect();
    assert_eq!(args[1..], ["install-service", "--for-user", "root"], "pkexec got {args:?}");
    let staged = PathBuf::from(&args[0]);
    assert_ne!(staged, carried, "pkexec was given the carried helper itself");
    assert_eq!(staged.file_name().unwrap(), "trellisd");
    assert!(!staged.exists(), "the staged copy {} outlived the install", staged.display());
    let installed = staging.join("usr/local/bin/trellisd");
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        std::fs::read(&carried).unwrap(),
        "installed a different helper"
    );
    assert!(staging.join("etc/systemd/system/trellisd.service").is_file());

    // The service starts (systemd's part); the app finds it by itself and goes on to first run.
    world.start_helper(alice);
    app.find("[data-testid=first-run]");
    wait_for("the problem screen to go", || {
        app.find_all("[data-testid=helper-problem]").is_empty().then_some(())
    });

    drop(on_failure);
}
