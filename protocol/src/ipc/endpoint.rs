//! Where the helper listens and how a client opens it, per platform; and the sentences
//! that tell a person how to start the helper or get permission to use it.

#[cfg(unix)]
mod unix {
    use std::io;
    use std::path::Path;

    /// Where the helper listens unless told otherwise.
    #[cfg(not(target_os = "macos"))]
    pub const DEFAULT_ENDPOINT: &str = "/run/trellis/trellisd.sock";
    /// macOS has no /run (and its system volume is read-only): /var/run instead.
    #[cfg(target_os = "macos")]
    pub const DEFAULT_ENDPOINT: &str = "/var/run/trellis/trellisd.sock";

    #[cfg(target_os = "macos")]
    pub const START_HINT: &str = "start it with `sudo launchctl kickstart system/org.trellis.trellisd`";
    #[cfg(not(target_os = "macos"))]
    pub const START_HINT: &str = "start it with `sudo systemctl start trellisd`";

    #[cfg(target_os = "macos")]
    pub const PERMISSION_HINT: &str = "you may not control Trellis: ask an administrator to add you to \
         the `trellis` group (`sudo dseditgroup -o edit -a $USER -t user trellis`), then log in again";
    #[cfg(not(target_os = "macos"))]
    pub const PERMISSION_HINT: &str = "you may not control Trellis: ask an administrator to add you to \
         the `trellis` group (`sudo usermod -aG trellis $USER`), then log in again";

    /// The client side's transport.
    pub type Stream = tokio::net::UnixStream;

    pub async fn connect(endpoint: &Path) -> io::Result<Stream> {
        tokio::net::UnixStream::connect(endpoint).await
    }
}

#[cfg(windows)]
mod windows {
    use std::io;
    use std::path::Path;
    use std::time::Duration;

    use tokio::net::windows::named_pipe::{ClientOptions, NamedPipeClient};
    use windows_sys::Win32::Foundation::ERROR_PIPE_BUSY;

    /// Where the helper listens unless told otherwise.
    pub const DEFAULT_ENDPOINT: &str = r"\\.\pipe\trellisd";

    pub const START_HINT: &str =
        "start the Trellis helper service (`sc start trellisd` in an administrator prompt)";
    pub const PERMISSION_HINT: &str = "you may not control Trellis: ask an administrator to add you to \
         the `Trellis Users` group, then sign out and in again";

    /// How often, and how long apart, a client retries while every pipe instance is busy.
    const BUSY_RETRIES: u32 = 50;
    const BUSY_RETRY_PAUSE: Duration = Duration::from_millis(20);

    /// The client side's transport.
    pub type Stream = NamedPipeClient;

    pub async fn connect(endpoint: &Path) -> io::Result<Stream> {
        let mut tries = 0;
        loop {
            match ClientOptions::new().open(endpoint) {
                Err(e) if e.raw_os_error() == Some(ERROR_PIPE_BUSY as i32) && tries < BUSY_RETRIES => {
                    tries += 1;
                    tokio::time::sleep(BUSY_RETRY_PAUSE).await;
                }
                other => return other,
            }
        }
    }
}

#[cfg(unix)]
pub use unix::*;
#[cfg(windows)]
pub use windows::*;
