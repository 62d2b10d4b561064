//! The one error type the window sees: a kind it can switch on and a sentence a person
//! can act on. Every way of not reaching the helper, and every refusal, becomes one.

use serde::Serialize;
use trellis_protocol::ipc::client::ClientError;
use trellis_protocol::ipc::IpcErrorCode;

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AppErrorKind {
    /// Nothing listens on the helper's socket (or pipe).
    NotRunning,
    /// Nothing listens, and the helper is not installed on this machine at all.
    NotInstalled,
    PermissionDenied,
    VersionMismatch,
    /// The helper accepted the connection but did not say hello in time.
    Unresponsive,
    /// The connection broke, or the helper said something this app does not understand.
    Disconnected,
    /// The helper refused the request: `code` says why.
    Refused,
    /// The app rejected the input before asking the helper.
    InvalidInput,
    Internal,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct AppError {
    pub kind: AppErrorKind,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<IpcErrorCode>,
}

impl AppError {
    pub fn new(kind: AppErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), code: None }
    }

    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(AppErrorKind::InvalidInput, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(AppErrorKind::Internal, message)
    }

    /// Whether the helper itself is out of reach (as opposed to refusing one request).
    pub fn is_helper_unavailable(&self) -> bool {
        !matches!(self.kind, AppErrorKind::Refused | AppErrorKind::InvalidInput | AppErrorKind::Internal)
    }

    /// Turns a client error into what the window shows; `helper_installed` tells a stopped
    /// helper from one that was never installed.
    pub fn from_client(error: ClientError, helper_installed: bool) -> Self {
        let message = error.to_string();
        let kind = match &error {
            ClientError::NotRunning { .. } if !helper_installed => {
                return Self::new(
                    AppErrorKind::NotInstalled,
                    "the Trellis helper (trellisd) is not installed on this computer: install Trellis \
                     from its package (it sets up the helper as a system service), then try again",
                );
            }
            ClientError::NotRunning { .. } => AppErrorKind::NotRunning,
            ClientError::PermissionDenied { .. } => AppErrorKind::PermissionDenied,
            ClientError::VersionMismatch { .. } => AppErrorKind::VersionMismatch,
            ClientError::Unresponsive { .. } => AppErrorKind::Unresponsive,
            ClientError::Unreachable { .. }
            | ClientError::Disconnected
            | ClientError::Io(_)
            | ClientError::Protocol(_) => AppErrorKind::Disconnected,
            ClientError::Refused(refusal) => {
                return Self { kind: AppErrorKind::Refused, message, code: Some(refusal.code) };
            }
        };
        Self::new(kind, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_protocol::ipc::IpcError;

    #[test]
    fn a_missing_helper_says_install_and_a_stopped_one_says_start() {
        let stopped =
            || ClientError::NotRunning { endpoint: "/run/trellis/trellisd.sock".into(), stale: false };
        let missing = AppError::from_client(stopped(), false);
        assert_eq!(missing.kind, AppErrorKind::NotInstalled);
        assert!(missing.message.contains("not installed"), "{}", missing.message);
        let not_running = AppError::from_client(stopped(), true);
        assert_eq!(not_running.kind, AppErrorKind::NotRunning);
        assert!(not_running.message.contains("start it"), "{}", not_running.message);
        assert!(not_running.is_helper_unavailable());
    }

    #[test]
    fn a_refusal_keeps_its_code_and_serializes_as_the_window_expects() {
        let refused = AppError::from_client(
            ClientError::Refused(IpcError::new(
                IpcErrorCode::Server(trellis_protocol::signal::ErrorCode::InviteExpired),
                "the invite code expired",
            )),
            true,
        );
        assert!(!refused.is_helper_unavailable());
        let json = serde_json::to_value(&refused).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "refused", "message": "the invite code expired", "code": {"server": "invite_expired"}})
        );
        let plain = serde_json::to_value(AppError::invalid_input("bad")).unwrap();
        assert_eq!(plain, serde_json::json!({"kind": "invalid_input", "message": "bad"}));
    }
}
