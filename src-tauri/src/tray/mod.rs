//! The tray: one menu and one icon, drawn from the [`TrayView`], on every platform.
//!
//! The menu is built here as plain data ([`menu`]) so its content is tested once; each
//! backend only renders it and reports which [`TrayAction`] was picked:
//!
//! * Linux (`linux.rs`): a StatusNotifierItem with a dbusmenu, published with `ksni`;
//! * macOS and Windows (`native.rs`): Tauri's `tray-icon`. It compiles on Linux too (and
//!   is kept building there) but runs only on the other two, where it is unverified.

use std::sync::Arc;

use crate::model::{TrayIconState, TrayView};

#[cfg(target_os = "linux")]
mod linux;
mod native;

/// What a person can pick in the tray.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum TrayAction {
    Connect,
    Disconnect,
    InviteFriend,
    JoinNetwork,
    CopyAddress(String),
    OpenWindow,
    Quit,
}

/// Called with each picked action; runs on the backend's thread, so it must not block.
pub type ActionSink = Arc<dyn Fn(TrayAction) + Send + Sync>;

#[derive(Clone, PartialEq, Eq, Debug)]
pub enum MenuEntry {
    /// Text that cannot be picked.
    Label(String),
    Item {
        label: String,
        action: TrayAction,
        enabled: bool,
    },
    Submenu {
        label: String,
        entries: Vec<MenuEntry>,
    },
    Separator,
}

/// The tray menu for `view`. Labels are what the user reads; tests find items by them.
pub fn menu(view: &TrayView) -> Vec<MenuEntry> {
    let item = |label: &str, action: TrayAction, enabled: bool| MenuEntry::Item {
        label: label.into(),
        action,
        enabled,
    };
    let usable = view.helper_available && view.in_network;
    let connect = if view.wants_up {
        item("Disconnect", TrayAction::Disconnect, usable)
    } else {
        item("Connect", TrayAction::Connect, usable)
    };
    let peers = if view.peers.is_empty() {
        vec![MenuEntry::Label(if usable { "No peers yet" } else { "No network" }.into())]
    } else {
        view.peers
            .iter()
            .map(|p| MenuEntry::Item {
                label: format!("{} — {} — {}", p.name, p.ip, p.path),
                action: TrayAction::CopyAddress(p.ip.clone()),
                enabled: true,
            })
            .collect()
    };
    vec![
        MenuEntry::Label(view.status_line.clone()),
        MenuEntry::Separator,
        connect,
        item("Invite a friend…", TrayAction::InviteFriend, usable),
        item("Join a network…", TrayAction::JoinNetwork, view.helper_available),
        MenuEntry::Submenu { label: "Peers".into(), entries: peers },
        MenuEntry::Separator,
        item("Open Trellis", TrayAction::OpenWindow, true),
        item("Quit", TrayAction::Quit, true),
    ]
}

/// Side of the square tray icon, in pixels.
pub const ICON_SIZE: u32 = 32;

/// The tray icon for `state` as RGBA rows: a disc in the state's colour with a white
/// lattice, so the state reads at a glance and the shape stays Trellis's.
pub fn icon_rgba(state: TrayIconState) -> Vec<u8> {
    let (r, g, b) = match state {
        TrayIconState::Disconnected => (0x8a, 0x8f, 0x98),
        TrayIconState::Connecting => (0xd9, 0xa2, 0x1b),
        TrayIconState::Connected => (0x1f, 0x9d, 0x6b),
        TrayIconState::NeedsAttention => (0xd6, 0x45, 0x45),
    };
    const SAMPLES: u32 = 4;
    let size = ICON_SIZE as f32;
    let mut out = Vec::with_capacity((ICON_SIZE * ICON_SIZE * 4) as usize);
    for y in 0..ICON_SIZE {
        for x in 0..ICON_SIZE {
            let (mut cover, mut white) = (0u32, 0u32);
            for sy in 0..SAMPLES {
                for sx in 0..SAMPLES {
                    let u = (x as f32 + (sx as f32 + 0.5) / SAMPLES as f32) / size - 0.5;
                    let v = (y as f32 + (sy as f32 + 0.5) / SAMPLES as f32) / size - 0.5;
                    if u * u + v * v > 0.47 * 0.47 {
                        continue;
                    }
                    cover += 1;
                    let (a, b2) = ((u + v) / 0.22, (u - v) / 0.22);
                    let on_line = |t: f32| (t - t.round()).abs() < 0.13;
                    if u.abs() < 0.3 && v.abs() < 0.3 && (on_line(a) || on_line(b2)) {
                        white += 1;
                    }
                }
            }
            let total = SAMPLES * SAMPLES;
            let blend = |c: u32| (c * (cover - white) + 255 * white).checked_div(cover).unwrap_or(0) as u8;
            out.extend_from_slice(&[blend(r), blend(g), blend(b), (255 * cover / total) as u8]);
        }
    }
    out
}

/// A running tray.
pub trait Tray: Send + Sync {
    /// Shows `view` (icon, tooltip and menu).
    fn show(&self, view: &TrayView);
}

/// Starts the platform's tray, or says why there is none (then the window is the only way
/// in, and the app opens it).
pub async fn start(
    app: &tauri::AppHandle,
    view: &TrayView,
    on_action: ActionSink,
) -> anyhow::Result<Box<dyn Tray>> {
    #[cfg(target_os = "linux")]
    {
        let _ = app;
        linux::start(view, on_action).await
    }
    #[cfg(not(target_os = "linux"))]
    {
        native::start(app, view, on_action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TrayPeer;

    fn view(wants_up: bool) -> TrayView {
        TrayView {
            icon: TrayIconState::Connected,
            status_line: "Connected — home — 100.64.0.1".into(),
            helper_available: true,
            in_network: true,
            wants_up,
            peers: vec![TrayPeer { name: "bob".into(), ip: "100.64.0.2".into(), path: "direct".into() }],
        }
    }

    fn labels(entries: &[MenuEntry]) -> Vec<String> {
        entries
            .iter()
            .filter_map(|e| match e {
                MenuEntry::Label(l)
                | MenuEntry::Item { label: l, .. }
                | MenuEntry::Submenu { label: l, .. } => Some(l.clone()),
                MenuEntry::Separator => None,
            })
            .collect()
    }

    #[test]
    fn the_menu_has_every_item_the_tray_promises() {
        let entries = menu(&view(false));
        assert_eq!(
            labels(&entries),
            [
                "Connected — home — 100.64.0.1",
                "Connect",
                "Invite a friend…",
                "Join a network…",
                "Peers",
                "Open Trellis",
                "Quit"
            ]
        );
        let MenuEntry::Submenu { entries: peers, .. } = &entries[5] else {
            panic!("peers submenu: {entries:?}")
        };
        assert_eq!(
            peers,
            &[MenuEntry::Item {
                label: "bob — 100.64.0.2 — direct".into(),
                action: TrayAction::CopyAddress("100.64.0.2".into()),
                enabled: true
            }]
        );
        assert!(labels(&menu(&view(true))).contains(&"Disconnect".to_string()));
    }

    #[test]
    fn without_a_helper_only_open_and_quit_work() {
        let down = TrayView { helper_available: false, in_network: false, peers: vec![], ..view(false) };
        for entry in menu(&down) {
            if let MenuEntry::Item { label, enabled, .. } = entry {
                assert_eq!(enabled, label == "Open Trellis" || label == "Quit", "{label}");
            }
        }
    }

    #[test]
    fn each_state_has_its_own_icon() {
        let icons: Vec<Vec<u8>> = [
            TrayIconState::Disconnected,
            TrayIconState::Connecting,
            TrayIconState::Connected,
            TrayIconState::NeedsAttention,
        ]
        .into_iter()
        .map(icon_rgba)
        .collect();
        for icon in &icons {
            assert_eq!(icon.len(), (ICON_SIZE * ICON_SIZE * 4) as usize);
            assert_eq!(icon[3], 0, "corners are transparent");
            let centre = ((ICON_SIZE / 2 * ICON_SIZE + ICON_SIZE / 2 + 3) * 4) as usize;
            assert!(icon[centre + 3] > 200, "the disc is opaque");
        }
        for (i, a) in icons.iter().enumerate() {
            for b in &icons[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
