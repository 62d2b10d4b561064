//! Where the helper keeps things on each OS.

#[cfg(target_os = "windows")]
pub const DEFAULT_STATE_DIR: &str = r"C:\ProgramData\Trellis";
#[cfg(target_os = "macos")]
pub const DEFAULT_STATE_DIR: &str = "/Library/Application Support/Trellis";
#[cfg(not(any(target_os = "windows", target_os = "macos")))]
pub const DEFAULT_STATE_DIR: &str = "/var/lib/trellis";

#[cfg(target_os = "windows")]
pub const DEFAULT_SOCKET: &str = r"\\.\pipe\trellisd";
#[cfg(not(target_os = "windows"))]
pub const DEFAULT_SOCKET: &str = trellis_protocol::ipc::endpoint::DEFAULT_ENDPOINT;
