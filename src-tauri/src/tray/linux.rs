//! The Linux tray: a StatusNotifierItem (KDE, GNOME with the AppIndicator extension, XFCE,
//! waybar…) whose menu is exported over dbusmenu, both by `ksni`.
//!
//! Chosen over tray-icon's libayatana-appindicator backend because that one never
//! reports a left click, so "click the icon to open Trellis" could not work, and its
//! menu only exists as GTK widgets; ksni serves the menu from our own data.

use std::sync::{Arc, Mutex};

use ksni::menu::{StandardItem, SubMenu};
use ksni::{Handle, TrayMethods};

use super::{icon_rgba, menu, ActionSink, MenuEntry, Tray, TrayAction, ICON_SIZE};
use crate::model::TrayView;

struct Item {
    view: TrayView,
    on_action: ActionSink,
}

impl ksni::Tray for Item {
    fn id(&self) -> String {
        "trellis".into()
    }

    fn title(&self) -> String {
        "Trellis".into()
    }

    fn activate(&mut self, _x: i32, _y: i32) {
        (self.on_action)(TrayAction::OpenWindow);
    }

    fn icon_pixmap(&self) -> Vec<ksni::Icon> {
        // StatusNotifierItem wants ARGB32 in network byte order.
        let mut data = icon_rgba(self.view.icon);
        for pixel in data.chunks_exact_mut(4) {
            pixel.rotate_right(1);
        }
        vec![ksni::Icon { width: ICON_SIZE as i32, height: ICON_SIZE as i32, data }]
    }

    fn tool_tip(&self) -> ksni::ToolTip {
        ksni::ToolTip {
            title: "Trellis".into(),
            description: self.view.status_line.clone(),
            ..Default::default()
        }
    }

    fn status(&self) -> ksni::Status {
        match self.view.icon {
            crate::model::TrayIconState::NeedsAttention => ksni::Status::NeedsAttention,
            _ => ksni::Status::Active,
        }
    }

    fn menu(&self) -> Vec<ksni::MenuItem<Self>> {
        menu(&self.view).into_iter().map(to_ksni).collect()
    }

    fn watcher_offline(&self, reason: ksni::OfflineReason) -> bool {
        // Keep serving: a panel restarting comes back and picks the item up again.
        tracing::info!(?reason, "the tray host went away");
        true
    }
}

fn to_ksni(entry: MenuEntry) -> ksni::MenuItem<Item> {
    match entry {
        MenuEntry::Separator => ksni::MenuItem::Separator,
        MenuEntry::Label(label) => {
            StandardItem { label: escape(&label), enabled: false, ..Default::default() }.into()
        }
        MenuEntry::Item { label, action, enabled } => StandardItem {
            label: escape(&label),
            enabled,
            activate: Box::new(move |item: &mut Item| (item.on_action)(action.clone())),
            ..Default::default()
        }
        .into(),
        MenuEntry::Submenu { label, entries } => SubMenu {
            label: escape(&label),
            submenu: entries.into_iter().map(to_ksni).collect(),
            ..Default::default()
        }
        .into(),
    }
}

/// dbusmenu reads `_` as an access-key marker; device names may contain underscores.
fn escape(label: &str) -> String {
    label.replace('_', "__")
}

struct KsniTray {
    handle: Handle<Item>,
    /// The newest view. Updates run on tasks of their own and may run out of order, so
    /// each applies whatever is newest when it runs, never the view it was spawned with.
    latest: Arc<Mutex<TrayView>>,
}

impl Tray for KsniTray {
    fn show(&self, view: &TrayView) {
        *self.latest.lock().expect("tray view lock") = view.clone();
        let handle = self.handle.clone();
        let latest = self.latest.clone();
        tauri::async_runtime::spawn(async move {
            handle.update(|item| item.view = latest.lock().expect("tray view lock").clone()).await;
        });
    }
}

pub async fn start(view: &TrayView, on_action: ActionSink) -> anyhow::Result<Box<dyn Tray>> {
    let item = Item { view: view.clone(), on_action };
    let handle = item
        .spawn()
        .await
        .map_err(|e| anyhow::anyhow!("no StatusNotifierItem tray host on this desktop ({e})"))?;
    Ok(Box::new(KsniTray { handle, latest: Arc::new(Mutex::new(view.clone())) }))
}
