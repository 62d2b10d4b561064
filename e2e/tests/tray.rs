//! The real app's tray through its real D-Bus interfaces (StatusNotifierItem and
//! dbusmenu) on a private session bus, where this test plays the panel: it is the
//! StatusNotifierWatcher the app registers with, reads the menu the way a panel does, and
//! clicks Connect. The helper behind the app is a real `trellisd` in a namespace.

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use trellis_e2e::desktop::{app_binary, Desktop};
use trellis_e2e::topology::{Nat, World};
use trellis_e2e::{privileged_or_explain, Process};
use zbus::zvariant::{OwnedValue, Structure, Value};

/// Stands in for the panel's StatusNotifierWatcher; remembers who registered.
#[derive(Clone, Default)]
struct Watcher {
    items: Arc<Mutex<Vec<(String, String)>>>,
}

#[zbus::interface(name = "org.kde.StatusNotifierWatcher")]
impl Watcher {
    fn register_status_notifier_item(
        &self,
        service: &str,
        #[zbus(header)] header: zbus::message::Header<'_>,
    ) {
        let sender = header.sender().map(|s| s.to_string()).unwrap_or_default();
        self.items.lock().unwrap().push((sender, service.to_string()));
    }

    fn register_status_notifier_host(&self, _service: &str) {}

    #[zbus(property)]
    fn is_status_notifier_host_registered(&self) -> bool {
        true
    }

    #[zbus(property)]
    fn registered_status_notifier_items(&self) -> Vec<String> {
        self.items.lock().unwrap().iter().map(|(_, s)| s.clone()).collect()
    }

    #[zbus(property)]
    fn protocol_version(&self) -> i32 {
        0
    }
}

/// Stands in for the desktop's notification daemon; remembers what it was asked to show.
#[derive(Clone, Default)]
struct Notifications {
    shown: Arc<Mutex<Vec<(String, String)>>>,
}

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl Notifications {
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        _app_name: &str,
        _replaces_id: u32,
        _app_icon: &str,
        summary: &str,
        body: &str,
        _actions: Vec<String>,
        _hints: HashMap<String, OwnedValue>,
        _expire_timeout: i32,
    ) -> u32 {
        let mut shown = self.shown.lock().unwrap();
        shown.push((summary.to_string(), body.to_string()));
        shown.len() as u32
    }

    fn get_capabilities(&self) -> Vec<String> {
        vec!["body".into()]
    }

    fn get_server_information(&self) -> (String, String, String, String) {
        ("test".into(), "trellis".into(), "1".into(), "1.2".into())
    }

    fn close_notification(&self, _id: u32) {}
}

/// One menu item as dbusmenu describes it.
#[derive(Debug, Clone)]
struct MenuItem {
    id: i32,
    label: String,
    enabled: bool,
    children: Vec<MenuItem>,
}

impl MenuItem {
    fn flatten(&self) -> Vec<MenuItem> {
        let mut all = vec![self.clone()];
        for child in &self.children {
            all.extend(child.flatten());
        }
        all
    }
}

fn parse_item(value: &Value<'_>) -> MenuItem {
    let structure: &Structure<'_> = match value {
        Value::Structure(s) => s,
        Value::Value(inner) => return parse_item(inner),
        other => panic!("a menu item is a struct, not {other:?}"),
    };
    let fields = structure.fields();
    let id = i32::try_from(&fields[0]).expect("item id");
    let properties: HashMap<String, OwnedValue> =
        HashMap::try_from(fields[1].try_clone().expect("clonable")).expect("item properties");
    let children = match &fields[2] {
        Value::Array(items) => items.iter().map(parse_item).collect(),
        other => panic!("children are an array, not {other:?}"),
    };
    item_from(id, &properties, children)
}

fn item_from(id: i32, properties: &HashMap<String, OwnedValue>, children: Vec<MenuItem>) -> MenuItem {
    let label =
        properties.get("label").and_then(|v| String::try_from(v.try_clone().ok()?).ok()).unwrap_or_default();
    let enabled = properties.get("enabled").and_then(|v| bool::try_from(&**v).ok()).unwrap_or(true);
    MenuItem { id, label: label.replace("__", "_"), enabled, children }
}

struct TrayClient {
    connection: zbus::Connection,
    service: String,
    menu_path: String,
}

impl TrayClient {
    async fn layout(&self) -> Vec<MenuItem> {
        let reply = self
            .connection
            .call_method(
                Some(self.service.as_str()),
                self.menu_path.as_str(),
                Some("com.canonical.dbusmenu"),
                "GetLayout",
                &(0i32, -1i32, Vec::<String>::new()),
            )
            .await
            .expect("GetLayout answers");
        let body = reply.body();
        type Layout = (i32, HashMap<String, OwnedValue>, Vec<OwnedValue>);
        let (_revision, (id, properties, children)): (u32, Layout) =
            body.deserialize().expect("a dbusmenu layout");
        item_from(id, &properties, children.iter().map(|c| parse_item(c)).collect()).flatten()
    }

    async fn click(&self, id: i32) {
        self.connection
            .call_method(
                Some(self.service.as_str()),
                self.menu_path.as_str(),
                Some("com.canonical.dbusmenu"),
                "Event",
                &(id, "clicked", Value::from(0i32), 0u32),
            )
            .await
            .expect("Event answers");
    }

    async fn item_property(&self, name: &str) -> OwnedValue {
        let reply = self
            .connection
            .call_method(
                Some(self.service.as_str()),
                "/StatusNotifierItem",
                Some("org.freedesktop.DBus.Properties"),
                "Get",
                &("org.kde.StatusNotifierItem", name),
            )
            .await
            .unwrap_or_else(|e| panic!("property {name}: {e}"));
        let value: OwnedValue = reply.body().deserialize().expect("a property value");
        value
    }
}

/// Polls `check` until it gives a value, with a deadline (async twin of `wait_for`).
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(150)).await; // polling interval, not synchronization
    }
}

fn labels(items: &[MenuItem]) -> Vec<String> {
    items.iter().map(|i| i.label.clone()).filter(|l| !l.is_empty()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tray_menu_follows_the_helper_and_its_connect_item_connects() {
    if !privileged_or_explain("the tray's D-Bus test") {
        return;
    }
    let mut world = World::new("tray");
    world.start_server();
    let alice = world.add_home("alice", Nat::Easy);
    world.start_helper(alice);
    let created = world.trellis(alice, &["create", "home", "--server", &world.server_url()]);
    assert!(created.ok(), "{created:?}");
    assert!(world.trellis(alice, &["down"]).ok());

    let desktop = Desktop::start(world.dir.path());
    // Connect-on-start off, so the only way to connect is the tray's item.
    std::fs::create_dir_all(desktop.app_config_dir()).unwrap();
    std::fs::write(
        desktop.app_config_dir().join("settings.json"),
        r#"{"startAtLogin": false, "connectOnStart": false}"#,
    )
    .unwrap();

    let watcher = Watcher::default();
    let connection = zbus::connection::Builder::address(desktop.bus_address.as_str())
        .unwrap()
        .name("org.kde.StatusNotifierWatcher")
        .unwrap()
        .serve_at("/StatusNotifierWatcher", watcher.clone())
        .unwrap()
        .build()
        .await
        .expect("the test's watcher is on the bus");

    let notifications = Notifications::default();
    let _notification_daemon = zbus::connection::Builder::address(desktop.bus_address.as_str())
        .unwrap()
        .name("org.freedesktop.Notifications")
        .unwrap()
        .serve_at("/org/freedesktop/Notifications", notifications.clone())
        .unwrap()
        .build()
        .await
        .expect("the test's notification daemon is on the bus");

    let mut command = Command::new(app_binary());
    command
        .envs(desktop.env())
        .env("TRELLIS_SOCKET", &world.homes[alice].socket)
        .env("TRELLIS_LOG", "info,trellis_app=debug");
    let mut app = Process::spawn_command("trellis-app", command, world.dir.path());

    let (sender, service) = eventually("the app's tray to register", || {
        let items = watcher.items.clone();
        async move { items.lock().unwrap().first().cloned() }
    })
    .await;
    // The spec allows a bus name or an object path; ksni sends its bus name.
    let service = if service.starts_with('/') { sender } else { service };
    let mut tray = TrayClient { connection, service, menu_path: String::new() };
    let menu = tray.item_property("Menu").await;
    tray.menu_path =
        zbus::zvariant::OwnedObjectPath::try_from(menu).expect("Menu is an object path").to_string();
    let id = String::try_from(tray.item_property("Id").await).unwrap();
    assert_eq!(id, "trellis");

    // The menu as a panel shows it, once the app has heard from the helper.
    let items = eventually("the menu to show the helper's state", || async {
        let items = tray.layout().await;
        labels(&items).iter().any(|l| l.starts_with("Disconnected — home — 100.64.")).then_some(items)
    })
    .await;
    let shown = labels(&items);
    for expected in
        ["Connect", "Invite a friend…", "Join a network…", "Peers", "No peers yet", "Open Trellis", "Quit"]
    {
        assert!(shown.iter().any(|l| l == expected), "{expected:?} missing from the tray menu {shown:?}");
    }
    let status_line = items.iter().find(|i| i.label.starts_with("Disconnected")).unwrap();
    assert!(!status_line.enabled, "the status line is not clickable");
    let icon_before = tray.item_property("IconPixmap").await;

    // Clicking Connect connects the helper…
    let connect = items.iter().find(|i| i.label == "Connect").unwrap();
    assert!(connect.enabled);
    tray.click(connect.id).await;
    let status = eventually("the helper to be connected", || async {
        let status = world.trellis(alice, &["status"]).json()["status"].clone();
        (status["wants_up"] == true && status["state"]["state"] == "up").then_some(status)
    })
    .await;
    let my_ip = status["network"]["my_ip"].as_str().unwrap().to_string();

    // …and the menu and icon follow.
    let items = eventually("the menu to say Connected", || async {
        let items = tray.layout().await;
        let shown = labels(&items);
        (shown.contains(&format!("Connected — home — {my_ip}")) && shown.iter().any(|l| l == "Disconnect"))
            .then_some(items)
    })
    .await;
    assert!(!labels(&items).iter().any(|l| l == "Connect"));
    let icon_after = tray.item_property("IconPixmap").await;
    assert_ne!(icon_before, icon_after, "the icon shows the new state");

    // "Invite a friend…" makes a code and says so in a notification that carries it.
    let invite = items.iter().find(|i| i.label == "Invite a friend…").unwrap();
    tray.click(invite.id).await;
    let (_, body) =
        eventually("the invite notification", || {
            let shown = notifications.shown.clone();
            async move {
                shown.lock().unwrap().iter().find(|(summary, _)| summary == "Invite code copied").cloned()
            }
        })
        .await;
    let invites = world.trellis(alice, &["invites"]).json();
    let id = invites["invites"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("one open invite: {invites}"))
        .to_string();
    assert!(
        body.starts_with(&id),
        "the notification shows the code ({body:?}), whose first group is the invite's id {id}"
    );

    // Disconnect from the helper's side: the tray follows that too.
    assert!(world.trellis(alice, &["down"]).ok());
    eventually("the menu to offer Connect again", || async {
        labels(&tray.layout().await).iter().any(|l| l == "Connect").then_some(())
    })
    .await;

    // A stopped helper is said so, and the items that need it are disabled.
    world.stop_helper(alice);
    let items = eventually("the tray to say the helper is gone", || async {
        let items = tray.layout().await;
        labels(&items).iter().any(|l| l == "Trellis helper not available").then_some(items)
    })
    .await;
    let connect = items.iter().find(|i| i.label == "Connect").expect("Connect is still listed");
    assert!(!connect.enabled, "Connect without a helper is disabled");
    app.assert_alive();
}
