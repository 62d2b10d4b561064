//! The app's edges on the desktop: its window, notifications, the clipboard and starting
//! at login. Failures here are logged, never fatal: a missing notification daemon must
//! not stop a tray action.

use serde::Serialize;
use tauri::{AppHandle, Emitter, Manager};
use tauri_plugin_autostart::ManagerExt;
use tauri_plugin_clipboard_manager::ClipboardExt;
use tauri_plugin_notification::NotificationExt;

use crate::error::AppError;

/// The window's label in tauri.conf.json.
pub const MAIN_WINDOW: &str = "main";

/// A panel of the window, for the `navigate` event.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Panel {
    Main,
    Invite,
    Join,
    Settings,
}

/// Shows and focuses the window, optionally on one panel.
pub fn show_window(app: &AppHandle, panel: Option<Panel>) {
    let Some(window) = app.get_webview_window(MAIN_WINDOW) else {
        tracing::warn!("the main window is gone");
        return;
    };
    if let Err(e) = window.show().and_then(|()| window.unminimize()).and_then(|()| window.set_focus()) {
        tracing::warn!("cannot show the window: {e}");
    }
    if let Some(panel) = panel {
        if let Err(e) = app.emit_to(MAIN_WINDOW, "navigate", serde_json::json!({ "view": panel })) {
            tracing::warn!("cannot switch the window to {panel:?}: {e}");
        }
    }
}

pub fn notify(app: &AppHandle, title: &str, body: &str) {
    tracing::info!(title, body, "notification");
    if let Err(e) = app.notification().builder().title(title).body(body).show() {
        tracing::debug!("no desktop notification shown ({e})");
    }
}

pub fn copy(app: &AppHandle, text: &str) -> Result<(), AppError> {
    app.clipboard().write_text(text).map_err(|e| AppError::internal(format!("cannot use the clipboard: {e}")))
}

pub fn set_start_at_login(app: &AppHandle, enabled: bool) -> Result<(), AppError> {
    let launcher = app.autolaunch();
    let result = if enabled { launcher.enable() } else { launcher.disable() };
    // Disabling what was never enabled is not a failure.
    match result {
        Ok(()) => Ok(()),
        Err(_) if !enabled && !launcher.is_enabled().unwrap_or(false) => Ok(()),
        Err(e) => Err(AppError::internal(format!("cannot change starting at login: {e}"))),
    }
}
