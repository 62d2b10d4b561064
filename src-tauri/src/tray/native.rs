//! The macOS and Windows tray, through Tauri's `tray-icon`. Built on Linux as well so the
//! compiler checks it, but only started on the other two (unverified there: no macOS or
//! Windows build machine here).
#![cfg_attr(target_os = "linux", allow(dead_code))]

use std::collections::HashMap;
use std::sync::Mutex;

use tauri::image::Image;
use tauri::menu::{IsMenuItem, Menu, MenuItem, PredefinedMenuItem, Submenu};
use tauri::tray::{MouseButton, MouseButtonState, TrayIcon, TrayIconBuilder, TrayIconEvent};
use tauri::{AppHandle, Wry};

use super::{icon_rgba, ActionSink, MenuEntry, Tray, TrayAction, ICON_SIZE};
use crate::model::TrayView;

/// Menu item ids to actions, rebuilt with each menu.
type Actions = std::sync::Arc<Mutex<HashMap<String, TrayAction>>>;

struct NativeTray {
    app: AppHandle,
    tray: TrayIcon,
    actions: Actions,
}

impl Tray for NativeTray {
    fn show(&self, view: &TrayView) {
        let result = (|| -> tauri::Result<()> {
            let (menu, actions) = build_menu(&self.app, view)?;
            *self.actions.lock().expect("tray actions lock") = actions;
            self.tray.set_menu(Some(menu))?;
            self.tray.set_icon(Some(icon(view)))?;
            self.tray.set_tooltip(Some(&view.status_line))?;
            Ok(())
        })();
        if let Err(e) = result {
            tracing::warn!("updating the tray failed: {e}");
        }
    }
}

fn icon(view: &TrayView) -> Image<'static> {
    Image::new_owned(icon_rgba(view.icon), ICON_SIZE, ICON_SIZE)
}

fn build_menu(app: &AppHandle, view: &TrayView) -> tauri::Result<(Menu<Wry>, HashMap<String, TrayAction>)> {
    let mut actions = HashMap::new();
    let menu = Menu::new(app)?;
    for entry in super::menu(view) {
        append(app, &menu, entry, &mut actions)?;
    }
    Ok((menu, actions))
}

fn append(
    app: &AppHandle,
    menu: &Menu<Wry>,
    entry: MenuEntry,
    actions: &mut HashMap<String, TrayAction>,
) -> tauri::Result<()> {
    let item = to_item(app, entry, actions)?;
    menu.append(item.as_ref())
}

fn to_item(
    app: &AppHandle,
    entry: MenuEntry,
    actions: &mut HashMap<String, TrayAction>,
) -> tauri::Result<Box<dyn IsMenuItem<Wry>>> {
    Ok(match entry {
        MenuEntry::Separator => Box::new(PredefinedMenuItem::separator(app)?),
        MenuEntry::Label(label) => {
            let id = format!("label-{}", actions.len());
            Box::new(MenuItem::with_id(app, id, label, false, None::<&str>)?)
        }
        MenuEntry::Item { label, action, enabled } => {
            let id = format!("item-{}", actions.len());
            actions.insert(id.clone(), action);
            Box::new(MenuItem::with_id(app, id, label, enabled, None::<&str>)?)
        }
        MenuEntry::Submenu { label, entries } => {
            let submenu = Submenu::new(app, label, true)?;
            for entry in entries {
                let item = to_item(app, entry, actions)?;
                submenu.append(item.as_ref())?;
            }
            Box::new(submenu)
        }
    })
}

pub fn start(app: &AppHandle, view: &TrayView, on_action: ActionSink) -> anyhow::Result<Box<dyn Tray>> {
    let (menu, initial) = build_menu(app, view)?;
    let actions: Actions = std::sync::Arc::new(Mutex::new(initial));
    let from_menu = actions.clone();
    let on_menu = on_action.clone();
    let tray = TrayIconBuilder::with_id("trellis")
        .icon(icon(view))
        .tooltip(&view.status_line)
        .menu(&menu)
        .show_menu_on_left_click(false)
        .on_menu_event(move |_app, event| {
            let action = from_menu.lock().expect("tray actions lock").get(event.id().as_ref()).cloned();
            if let Some(action) = action {
                on_menu(action);
            }
        })
        .on_tray_icon_event(move |_tray, event| {
            if let TrayIconEvent::Click {
                button: MouseButton::Left,
                button_state: MouseButtonState::Up,
                ..
            } = event
            {
                on_action(TrayAction::OpenWindow);
            }
        })
        .build(app)?;
    Ok(Box::new(NativeTray { app: app.clone(), tray, actions }))
}
