//! The real desktop app, built and run under Xvfb against real helpers and the real
//! signal server, driven by WebDriver (tauri-driver over Debian's WebKitWebDriver):
//! first run, create a network, make an invite, watch a friend who joins with it appear,
//! see a precise error for a bad code, and a clear screen when the helper stops.
//!
//! Screenshots of each screen go to target/screenshots/; with
//! `TRELLIS_UPDATE_SCREENSHOTS=1` also to docs/screenshots/ (what README shows).

use std::path::PathBuf;

use trellis_e2e::desktop::{print_logs_on_failure, Desktop, DrivenApp};
use trellis_e2e::topology::{Nat, World};
use trellis_e2e::{privileged_or_explain, workspace_root};

struct Screenshots {
    dirs: Vec<PathBuf>,
}

impl Screenshots {
    fn new() -> Self {
        let mut dirs = vec![workspace_root().join("target/screenshots")];
        if std::env::var("TRELLIS_UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
            dirs.push(workspace_root().join("docs/screenshots"));
        }
        Self { dirs }
    }

    fn take(&self, desktop: &Desktop, name: &str) {
        for dir in &self.dirs {
            desktop.screenshot("Trellis", &dir.join(format!("{name}.png")));
        }
    }
}

#[test]
fn the_real_app_creates_a_network_invites_a_friend_and_shows_them_join() {
    if !privileged_or_explain("the desktop app's WebDriver test") {
        return;
    }
    let mut world = World::new("app");
    world.start_server();
    let alice = world.add_home("alice", Nat::Easy);
    let bob = world.add_home("bob", Nat::Easy);
    world.start_helper(alice);
    world.start_helper(bob);

    let server = world.server_url();
    let driven = DrivenApp::start(
        world.dir.path(),
        &[
            ("TRELLIS_SOCKET", world.homes[alice].socket.as_os_str()),
            ("TRELLIS_DEFAULT_SERVER", server.as_ref()),
        ],
    );
    let (app, desktop) = (&driven.session, &driven.desktop);
    let shots = Screenshots::new();
    let on_failure = print_logs_on_failure(world.dir.path());

    // First run: the installed default server is filled in; create a network.
    app.find("[data-testid=first-run]");
    let server = app.property("[data-testid=server-input]", "value");
    assert_eq!(server, world.server_url(), "the server field starts with the installed default");
    shots.take(desktop, "first-run");

    // A mistyped code is caught before anything is sent, with the exact reason.
    app.click("[data-testid=choose-join]");
    app.clear_and_type("[data-testid=join-input]", "K7QF-3M9T-WX2C-HN4U");
    let error = app.wait_text("[data-testid=join-error]", "a format error", |t| t.contains("19"));
    assert!(error.contains("'U'"), "the error names the character: {error}");
    shots.take(desktop, "join");
    app.click("[data-testid=choose-create]");
    app.clear_and_type("[data-testid=network-name]", "home");
    app.click("[data-testid=create-network]");

    let state =
        app.wait_text("[data-testid=state-label]", "the app to say Connected", |t| t.contains("Connected"));
    assert!(!state.contains("Disconnected"), "{state}");
    let status = world.trellis(alice, &["status"]).json()["status"].clone();
    assert_eq!(status["network"]["name"], "home", "the helper made the network: {status}");
    let my_ip = status["network"]["my_ip"].as_str().unwrap().to_string();
    let shown_ip = app.wait_text("[data-testid=my-address]", "my address", |t| !t.trim().is_empty());
    assert!(shown_ip.contains(&my_ip), "the app shows {shown_ip:?}, the helper says {my_ip}");

    // An invite, shown as a code and a QR code.
    app.click("[data-testid=nav-invite]");
    app.click("[data-testid=create-invite]");
    let code = app.wait_text("[data-testid=invite-code]", "an invite code", |t| t.trim().len() >= 19);
    app.find("[data-testid=invite-qr]");
    shots.take(desktop, "invite");

    // Bob joins with it from his own machine; Alice's app shows him arrive and connect.
    let joined = world.trellis(bob, &["join", code.trim()]);
    assert!(joined.ok(), "bob could not join with {code:?}: {joined:?}");
    app.click("[data-testid=nav-main]");
    let bob_row = "[data-testid=peer-row][data-peer-name=bob]";
    app.find(bob_row);
    app.wait_text(bob_row, "bob to be connected directly", |t| t.contains("direct"));
    let bob_status = world.trellis(bob, &["status"]).json()["status"].clone();
    let bob_ip = bob_status["network"]["my_ip"].as_str().unwrap().to_string();
    let row = app.text(bob_row);
    assert!(row.contains(&bob_ip), "bob's row {row:?} shows his address {bob_ip}");
    shots.take(desktop, "main");

    // Already in a network: the join panel explains instead of offering a second one.
    app.click("[data-testid=nav-join]");
    app.find("[data-testid=join-in-network]");

    // The settings show both versions.
    app.click("[data-testid=nav-settings]");
    app.wait_text("[data-testid=helper-version]", "the helper's version", |t| {
        t.contains(env!("CARGO_PKG_VERSION"))
    });
    shots.take(desktop, "settings");

    // The helper stops: a clear screen saying what to do, then back when it returns.
    world.stop_helper(alice);
    let problem = app.wait_text("[data-testid=helper-problem]", "the helper-stopped screen", |t| {
        t.contains("not running")
    });
    assert!(problem.contains("start"), "the screen says how to start the helper: {problem}");
    shots.take(desktop, "helper-stopped");
    world.start_helper(alice);
    app.wait_text("[data-testid=state-label]", "the app to recover", |t| t.contains("Connected"));

    drop(on_failure);
}
