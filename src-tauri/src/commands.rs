//! The Tauri commands the window calls: each is one helper request, its answer unpacked
//! into what the window shows (see docs/ARCHITECTURE.md, "The desktop app").

use std::str::FromStr;
use std::sync::Arc;

use serde::Serialize;
use tauri::State;
use trellis_protocol::ipc::{IpcRequest, IpcResponse, PeerInfo, Status};
use trellis_protocol::signal::InviteInfo;
use trellis_protocol::{DeviceName, InviteId, InviteTicket, NetworkName, ServerAddr};

use crate::error::AppError;
use crate::helper_setup::HelperSetup;
use crate::link::HelperLink;
use crate::settings::{AppSettings, SettingsStore};

type Link<'a> = State<'a, Arc<HelperLink>>;

fn parse<T: FromStr>(what: &str, text: &str) -> Result<T, AppError>
where
    T::Err: std::fmt::Display,
{
    text.trim().parse().map_err(|e| AppError::invalid_input(format!("{what}: {e}")))
}

async fn expect_status(link: &HelperLink, request: IpcRequest) -> Result<Status, AppError> {
    match link.request(request).await? {
        IpcResponse::Status { status } => {
            tracing::debug!(revision = status.revision, state = ?status.state, "answered with a status");
            Ok(status)
        }
        // Some requests answer `done`: the status is then asked for.
        IpcResponse::Done => link.status().await,
        other => Err(AppError::internal(format!("unexpected answer from the helper: {other:?}"))),
    }
}

async fn expect_done(link: &HelperLink, request: IpcRequest) -> Result<(), AppError> {
    link.request(request).await.map(|_| ())
}

#[tauri::command]
pub async fn get_status(link: Link<'_>) -> Result<Status, AppError> {
    link.status().await
}

#[tauri::command]
pub async fn get_peers(link: Link<'_>) -> Result<Vec<PeerInfo>, AppError> {
    link.peers().await
}

#[tauri::command]
pub async fn connect(link: Link<'_>) -> Result<Status, AppError> {
    expect_status(&link, IpcRequest::Up).await
}

#[tauri::command]
pub async fn disconnect(link: Link<'_>) -> Result<Status, AppError> {
    expect_status(&link, IpcRequest::Down).await
}

#[tauri::command]
pub async fn create_network(
    link: Link<'_>,
    name: String,
    server: Option<String>,
) -> Result<Status, AppError> {
    let name: NetworkName = parse("network name", &name)?;
    let server = match server.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(text) => Some(parse::<ServerAddr>("server", text)?),
        None => None,
    };
    expect_status(&link, IpcRequest::CreateNetwork { name, server, range: None }).await
}

#[tauri::command]
pub async fn join_network(link: Link<'_>, ticket: String) -> Result<Status, AppError> {
    let ticket: InviteTicket = parse("invite code", &ticket)?;
    expect_status(&link, IpcRequest::Join { ticket }).await
}

#[tauri::command]
pub async fn leave_network(link: Link<'_>) -> Result<(), AppError> {
    expect_done(&link, IpcRequest::Leave).await
}

#[derive(Debug, Serialize)]
pub struct CreatedInvite {
    ticket: String,
    link: String,
    invite: InviteInfo,
}

#[tauri::command]
pub async fn create_invite(
    link: Link<'_>,
    max_uses: Option<u32>,
    expires_in_secs: Option<u64>,
) -> Result<CreatedInvite, AppError> {
    create_invite_with(&link, max_uses, expires_in_secs).await
}

pub async fn create_invite_with(
    link: &HelperLink,
    max_uses: Option<u32>,
    expires_in_secs: Option<u64>,
) -> Result<CreatedInvite, AppError> {
    match link.request(IpcRequest::CreateInvite { max_uses, expires_in_secs }).await? {
        IpcResponse::Invite { ticket, invite } => {
            Ok(CreatedInvite { ticket: ticket.to_string(), link: ticket.link(), invite })
        }
        other => Err(AppError::internal(format!("unexpected answer from the helper: {other:?}"))),
    }
}

impl CreatedInvite {
    pub fn ticket(&self) -> &str {
        &self.ticket
    }
}

#[tauri::command]
pub async fn list_invites(link: Link<'_>) -> Result<Vec<InviteInfo>, AppError> {
    match link.request(IpcRequest::ListInvites).await? {
        IpcResponse::Invites { invites } => Ok(invites),
        other => Err(AppError::internal(format!("unexpected answer from the helper: {other:?}"))),
    }
}

#[tauri::command]
pub async fn revoke_invite(link: Link<'_>, id: String) -> Result<(), AppError> {
    let id = id.trim().to_ascii_uppercase();
    if id.is_empty() {
        return Err(AppError::invalid_input("which invite? its id is empty"));
    }
    expect_done(&link, IpcRequest::RevokeInvite { id: InviteId(id) }).await
}

#[tauri::command]
pub async fn rename_device(link: Link<'_>, name: String) -> Result<(), AppError> {
    let name: DeviceName = parse("device name", &name)?;
    expect_done(&link, IpcRequest::Rename { name }).await
}

#[tauri::command]
pub async fn set_server(link: Link<'_>, server: String) -> Result<(), AppError> {
    let server: ServerAddr = parse("server", &server)?;
    expect_done(&link, IpcRequest::SetServer { server }).await
}

#[tauri::command]
pub async fn remove_peer(link: Link<'_>, peer: String) -> Result<(), AppError> {
    if peer.trim().is_empty() {
        return Err(AppError::invalid_input("which peer? give its name, address or key"));
    }
    expect_done(&link, IpcRequest::Remove { peer: peer.trim().to_string() }).await
}

#[tauri::command]
pub fn get_settings(store: State<'_, SettingsStore>) -> AppSettings {
    store.load()
}

#[tauri::command]
pub fn set_settings(
    app: tauri::AppHandle,
    store: State<'_, SettingsStore>,
    settings: AppSettings,
) -> Result<AppSettings, AppError> {
    crate::desktop::set_start_at_login(&app, settings.start_at_login)?;
    store.save(&settings).map_err(|e| AppError::internal(format!("cannot save the settings: {e}")))
}

#[tauri::command]
pub fn copy_text(app: tauri::AppHandle, text: String) -> Result<(), AppError> {
    crate::desktop::copy(&app, &text)
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppInfo {
    version: &'static str,
    ipc_version: u32,
    endpoint: String,
    /// When this app can install the helper itself (AppImage, macOS), what doing so means.
    helper_setup: Option<String>,
}

#[tauri::command]
pub fn app_info(app: tauri::AppHandle, link: Link<'_>) -> AppInfo {
    AppInfo {
        version: env!("CARGO_PKG_VERSION"),
        ipc_version: trellis_protocol::ipc::IPC_VERSION,
        endpoint: link.endpoint().display().to_string(),
        helper_setup: HelperSetup::find(&app).map(|setup| setup.explanation()),
    }
}

/// Installs the helper this app carries as the system's service (after the window has
/// shown `helper_setup` and the person agreed); returns what was done, line by line.
#[tauri::command]
pub async fn install_helper(app: tauri::AppHandle) -> Result<Vec<String>, AppError> {
    let setup = HelperSetup::find(&app).ok_or_else(|| {
        AppError::internal("this copy of Trellis carries no helper to install; install the Trellis package")
    })?;
    setup.install().await
}
