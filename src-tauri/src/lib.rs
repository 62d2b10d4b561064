//! Trellis, the desktop app: a tray icon and a window over the helper (`trellisd`).
//!
//! The app holds no keys and needs no privileges: everything it does is a request over
//! the helper's IPC ([`link`]), and everything it shows comes from the helper's answers
//! and events. Its parts:
//!
//! * [`link`]: requests, and the subscription that keeps [`model`] current;
//! * [`model`]: what the helper said, turned into the tray's view and notifications;
//! * [`tray`]: the menu and icon, per platform;
//! * [`commands`]: what the window (`ui/`) may call; [`error`]: how failures reach it;
//! * [`desktop`]: window, notifications, clipboard, start at login;
//! * [`settings`], [`platform`]: the app's own settings and OS paths.
//!
//! Environment: `TRELLIS_SOCKET` points at another helper endpoint (tests, development);
//! `TRELLIS_DEFAULT_SERVER` overrides the installed default server; `TRELLIS_LOG` sets
//! the log filter and `TRELLIS_LOG_FILE` sends the log to a file. `--hidden` (used when starting at login) starts in the tray only.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tauri::{AppHandle, Emitter, Manager, RunEvent, WindowEvent};
use trellis_protocol::ipc::{IpcRequest, Status};

pub mod commands;
pub mod desktop;
pub mod error;
pub mod helper_setup;
pub mod link;
pub mod model;
pub mod platform;
pub mod settings;
pub mod tray;

use desktop::Panel;
use link::{HelperLink, LinkUpdate};
use tray::{Tray, TrayAction};

/// How long an invite made from the tray lasts, and for how many friends.
const TRAY_INVITE_LIFETIME_SECS: u64 = 24 * 60 * 60;
const TRAY_INVITE_USES: u32 = 1;

/// The running tray, once there is one; `None` inside means there is none on this desktop.
static TRAY: OnceLock<Option<Box<dyn Tray>>> = OnceLock::new();

fn has_tray() -> bool {
    matches!(TRAY.get(), Some(Some(_)))
}

fn refresh_tray(link: &HelperLink) {
    if let Some(Some(tray)) = TRAY.get() {
        tray.show(&link.tray_view());
    }
}

pub fn run() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TRELLIS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let log_file = std::env::var_os("TRELLIS_LOG_FILE").and_then(|path| std::fs::File::create(path).ok());
    match log_file {
        Some(file) => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(Mutex::new(file))
            .init(),
        None => tracing_subscriber::fmt().with_env_filter(filter).init(),
    }

    let (endpoint, overridden) = match std::env::var_os("TRELLIS_SOCKET") {
        Some(path) => (PathBuf::from(path), true),
        None => (trellis_protocol::ipc::client::default_endpoint(), false),
    };
    let link = Arc::new(HelperLink::new(endpoint, overridden));
    let start_hidden = std::env::args().any(|arg| arg == "--hidden");

    let app = tauri::Builder::default()
        // A second start opens the running app's window: the way in on desktops without a tray.
        .plugin(tauri_plugin_single_instance::init(|app, _args, _cwd| desktop::show_window(app, None)))
        .plugin(tauri_plugin_notification::init())
        .plugin(tauri_plugin_clipboard_manager::init())
        .plugin(tauri_plugin_autostart::init(
            tauri_plugin_autostart::MacosLauncher::LaunchAgent,
            Some(vec!["--hidden"]),
        ))
        .manage(link.clone())
        .invoke_handler(tauri::generate_handler![
            commands::get_status,
            commands::get_peers,
            commands::connect,
            commands::disconnect,
            commands::create_network,
            commands::join_network,
            commands::leave_network,
            commands::create_invite,
            commands::list_invites,
            commands::revoke_invite,
            commands::rename_device,
            commands::set_server,
            commands::remove_peer,
            commands::get_settings,
            commands::set_settings,
            commands::copy_text,
            commands::app_info,
            commands::install_helper,
        ])
        .setup(move |app| {
            let config_dir = app.path().app_config_dir()?;
            app.manage(settings::SettingsStore::new(&config_dir, platform::installed_config_path()));
            tauri::async_runtime::spawn(start(app.handle().clone(), link.clone(), start_hidden));
            Ok(())
        })
        .on_window_event(|window, event| {
            // With a tray, closing the window hides it; the tray's Quit ends the app.
            if let WindowEvent::CloseRequested { api, .. } = event {
                if has_tray() {
                    api.prevent_close();
                    let _ = window.hide();
                }
            }
        })
        .build(tauri::generate_context!())
        .expect("the Tauri app failed to start");

    app.run(|_app, event| {
        if let RunEvent::ExitRequested { api, code: None, .. } = event {
            // Last window closed: stay in the tray (an explicit Quit passes a code).
            if has_tray() {
                api.prevent_exit();
            }
        }
    });
}

/// How long a tray host may take to accept the tray before the app goes on without one
/// (ksni waits for the StatusNotifierWatcher's answer).
const TRAY_START_TIMEOUT: Duration = Duration::from_secs(5);

/// After the window exists: the link to the helper, the window, and the tray.
async fn start(app: AppHandle, link: Arc<HelperLink>, start_hidden: bool) {
    tauri::async_runtime::spawn(watch_helper(app.clone(), link.clone()));
    if !start_hidden {
        desktop::show_window(&app, None);
    }
    let sink_app = app.clone();
    let sink_link = link.clone();
    let on_action: tray::ActionSink =
        Arc::new(move |action| on_tray_action(sink_app.clone(), sink_link.clone(), action));
    let tray = match tokio::time::timeout(TRAY_START_TIMEOUT, tray::start(&app, &link.tray_view(), on_action))
        .await
    {
        Ok(Ok(tray)) => Some(tray),
        Ok(Err(e)) => {
            tracing::warn!("no tray icon: {e}; the window stays the way in (start Trellis again to open it)");
            None
        }
        Err(_) => {
            tracing::warn!("no tray icon: the tray host did not answer; the window stays the way in");
            None
        }
    };
    let have_tray = tray.is_some();
    let _ = TRAY.set(tray);
    refresh_tray(&link);
    if start_hidden && !have_tray {
        desktop::show_window(&app, None);
    }
}

/// Follows the helper for as long as the app runs: the window hears every change, the
/// tray shows it, and notable changes become notifications.
async fn watch_helper(app: AppHandle, link: Arc<HelperLink>) {
    let connected_once = AtomicBool::new(false);
    let report_link = link.clone();
    link.watch(move |update| {
        match &update {
            LinkUpdate::Connection(Ok(helper_version)) => {
                tracing::info!(helper_version, "following the helper");
                let payload = serde_json::json!({ "connected": true, "helperVersion": helper_version });
                let _ = app.emit("helper-connection", payload);
                let first = !connected_once.swap(true, Ordering::SeqCst);
                if first {
                    tauri::async_runtime::spawn(connect_on_start(app.clone(), report_link.clone()));
                }
            }
            LinkUpdate::Connection(Err(error)) => {
                let _ =
                    app.emit("helper-connection", serde_json::json!({ "connected": false, "error": error }));
            }
            LinkUpdate::Event(event) => {
                tracing::debug!(?event, "helper event");
                if let Err(e) = app.emit("helper-event", event) {
                    tracing::warn!("cannot pass a helper event to the window: {e}");
                }
            }
            LinkUpdate::Notices(notices) => {
                for notice in notices {
                    desktop::notify(&app, &notice.title, &notice.body);
                }
            }
        }
        refresh_tray(&report_link);
    })
    .await;
}

/// The "connect on start" setting: connect once the helper first answers, if the device is
/// in a network and not connected yet.
async fn connect_on_start(app: AppHandle, link: Arc<HelperLink>) {
    let wanted = app.state::<settings::SettingsStore>().load().connect_on_start;
    let status: Option<Status> = link.last_status();
    if wanted && status.is_some_and(|s| s.network.is_some() && !s.wants_up) {
        if let Err(e) = link.request(IpcRequest::Up).await {
            desktop::notify(&app, "Trellis could not connect", &e.message);
        }
    }
}

fn on_tray_action(app: AppHandle, link: Arc<HelperLink>, action: TrayAction) {
    tracing::info!(?action, "tray");
    match action {
        TrayAction::OpenWindow => desktop::show_window(&app, Some(Panel::Main)),
        TrayAction::JoinNetwork => desktop::show_window(&app, Some(Panel::Join)),
        TrayAction::Quit => app.exit(0),
        TrayAction::CopyAddress(ip) => match desktop::copy(&app, &ip) {
            Ok(()) => desktop::notify(&app, "Address copied", &ip),
            Err(e) => desktop::notify(&app, "Could not copy the address", &e.message),
        },
        TrayAction::Connect | TrayAction::Disconnect => {
            let up = action == TrayAction::Connect;
            tauri::async_runtime::spawn(async move {
                let request = if up { IpcRequest::Up } else { IpcRequest::Down };
                if let Err(e) = link.request(request).await {
                    let title = if up { "Trellis could not connect" } else { "Trellis could not disconnect" };
                    desktop::notify(&app, title, &e.message);
                }
            });
        }
        TrayAction::InviteFriend => {
            tauri::async_runtime::spawn(async move {
                match commands::create_invite_with(
                    &link,
                    Some(TRAY_INVITE_USES),
                    Some(TRAY_INVITE_LIFETIME_SECS),
                )
                .await
                {
                    Ok(created) => match desktop::copy(&app, created.ticket()) {
                        Ok(()) => desktop::notify(
                            &app,
                            "Invite code copied",
                            &format!(
                                "{} — send it to your friend; it works once, for 24 hours",
                                created.ticket()
                            ),
                        ),
                        Err(e) => {
                            desktop::notify(&app, "Invite created, but not copied", &e.message);
                            desktop::show_window(&app, Some(Panel::Invite));
                        }
                    },
                    Err(e) => {
                        desktop::notify(&app, "Could not create an invite", &e.message);
                        desktop::show_window(&app, Some(Panel::Invite));
                    }
                }
            });
        }
    }
}
