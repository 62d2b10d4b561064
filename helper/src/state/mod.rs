//! What the helper keeps across restarts, in its state directory (root-only):
//!
//! * `device.key`: the device's private key, created on first start, mode 0600. It is
//!   read into memory here and handed to the engine and the signal client; nothing else
//!   ever sees it, and it is never logged or sent.
//! * a sled store with one record: the server, whether the user wants to be connected,
//!   the device name and the last membership the server confirmed (so tunnels come
//!   back from the cache when the server is unreachable).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use trellis_protocol::keys::generate_secret;
use trellis_protocol::signal::Membership;
use trellis_protocol::{DeviceName, ServerAddr};
use x25519_dalek::StaticSecret;

const KEY_FILE: &str = "device.key";
const STATE_KEY: &str = "helper-state";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot {doing} {path}: {source}")]
    Io { doing: &'static str, path: PathBuf, source: std::io::Error },
    #[error("the device key in {path} is damaged ({detail}); move it away to make a new identity")]
    BadKey { path: PathBuf, detail: String },
    #[error("the helper's store failed while {doing}: {source}")]
    Store { doing: &'static str, source: sled::Error },
    #[error("the helper's saved state is damaged: {0}")]
    Corrupt(serde_json::Error),
}

/// Everything but the key.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Persisted {
    pub server: Option<ServerAddr>,
    pub wants_up: bool,
    pub device_name: DeviceName,
    pub membership: Option<Membership>,
    /// Why the device lost its network, when its owner removed it: shown in `status`
    /// until the device creates or joins a network again.
    #[serde(default)]
    pub removed: Option<String>,
}

impl Persisted {
    fn fresh() -> Self {
        Self {
            server: None,
            wants_up: false,
            device_name: name_of_host(&gethostname::gethostname().to_string_lossy()),
            membership: None,
            removed: None,
        }
    }
}

/// The device's first name: the host's name as the system gives it (gethostname on Unix,
/// the DNS host name on Windows), without its domain ("alices-macbook-pro", not
/// "alices-macbook-pro-local"), made a valid device name.
fn name_of_host(host: &str) -> DeviceName {
    let host = host.trim();
    let label = match host.parse::<std::net::IpAddr>() {
        Ok(_) => host,
        Err(_) => host.split('.').next().unwrap_or_default(),
    };
    // sanitize falls back to "device" when nothing usable is left.
    DeviceName::sanitize(label)
}

#[derive(Debug)]
pub struct StateDir {
    dir: PathBuf,
    db: sled::Db,
}

impl StateDir {
    /// Opens (creating it, owner-only) the state directory.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        std::fs::create_dir_all(dir).map_err(|source| StateError::Io {
            doing: "create",
            path: dir.into(),
            source,
        })?;
        restrict(dir, 0o700)?;
        let db = sled::Config::new()
            .path(dir.join("store"))
            .open()
            .map_err(|source| StateError::Store { doing: "opening", source })?;
        Ok(Self { dir: dir.to_path_buf(), db })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The device key, made on first use. Written to a temporary file, synced and renamed,
    /// so a crash never leaves half a key.
    pub fn device_key(&self) -> Result<StaticSecret, StateError> {
        let path = self.dir.join(KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => decode_key(&path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let secret = generate_secret();
                let tmp = self.dir.join(format!("{KEY_FILE}.tmp"));
                let io = |doing: &'static str| {
                    let path = path.clone();
                    move |source| StateError::Io { doing, path, source }
                };
                {
                    let mut file = open_private(&tmp).map_err(io("create"))?;
                    file.write_all(encode_key(&secret).as_bytes()).map_err(io("write"))?;
                    file.sync_all().map_err(io("sync"))?;
                }
                std::fs::rename(&tmp, &path).map_err(io("rename into place"))?;
                tracing::info!(key = %trellis_protocol::PublicKey::of(&secret).short(), "created the device key");
                Ok(secret)
            }
            Err(source) => Err(StateError::Io { doing: "read", path, source }),
        }
    }

    pub fn load(&self) -> Result<Persisted, StateError> {
        match self.db.get(STATE_KEY).map_err(|source| StateError::Store { doing: "reading", source })? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(StateError::Corrupt),
            None => Ok(Persisted::fresh()),
        }
    }

    /// Saves and flushes: a change is on disk before anyone is told it happened.
    pub fn save(&self, state: &Persisted) -> Result<(), StateError> {
        let bytes = serde_json::to_vec(state).map_err(StateError::Corrupt)?;
        self.db.insert(STATE_KEY, bytes).map_err(|source| StateError::Store { doing: "writing", source })?;
        self.db.flush().map_err(|source| StateError::Store { doing: "flushing", source })?;
        Ok(())
    }
}

fn encode_key(secret: &StaticSecret) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(secret.to_bytes()) + "\n"
}

fn decode_key(path: &Path, text: &str) -> Result<StaticSecret, StateError> {
    use base64::Engine;
    let bad = |detail: String| StateError::BadKey { path: path.into(), detail };
    let bytes =
        base64::engine::general_purpose::STANDARD.decode(text.trim()).map_err(|e| bad(e.to_string()))?;
    let bytes: [u8; 32] =
        bytes.try_into().map_err(|b: Vec<u8>| bad(format!("{} bytes instead of 32", b.len())))?;
    Ok(StaticSecret::from(bytes))
}

#[cfg(unix)]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)
}

#[cfg(not(unix))]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    // Windows: the state directory lives under ProgramData with an ACL for SYSTEM and
    // Administrators (set by the installer), which the file inherits.
    std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(path)
}

#[cfg(unix)]
fn restrict(dir: &Path, mode: u32) -> Result<(), StateError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(|source| StateError::Io {
        doing: "restrict the permissions of",
        path: dir.into(),
        source,
    })
}

#[cfg(not(unix))]
fn restrict(_dir: &Path, _mode: u32) -> Result<(), StateError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_protocol::PublicKey;

    #[test]
    fn the_key_is_made_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        let first = StateDir::open(&state_dir).unwrap().device_key().unwrap();
        let again = StateDir::open(&state_dir).unwrap().device_key().unwrap();
        assert_eq!(PublicKey::of(&first), PublicKey::of(&again));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(state_dir.join(KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let mode = std::fs::metadata(&state_dir).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
    }

    #[test]
    fn a_damaged_key_is_reported_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        std::fs::write(dir.path().join(KEY_FILE), "not base64!").unwrap();
        let Err(err) = state.device_key() else { panic!("a damaged key must not load") };
        assert!(matches!(err, StateError::BadKey { .. }), "{err}");
        assert_eq!(std::fs::read_to_string(dir.path().join(KEY_FILE)).unwrap(), "not base64!");
    }

    #[test]
    fn the_device_is_named_after_its_host() {
        let named = |host: &str| name_of_host(host).to_string();
        assert_eq!(named("Alices-MacBook-Pro.local"), "alices-macbook-pro");
        assert_eq!(named("DESKTOP-4QK1B2C"), "desktop-4qk1b2c");
        assert_eq!(named("box.example.org\n"), "box");
        assert_eq!(named("Alice's PC"), "alice-s-pc");
        assert_eq!(named("192.0.2.7"), "192-0-2-7");
        assert_eq!(named(""), "device");
        assert_eq!(named(".local"), "device");
        // A fresh state takes this machine's host name, whatever the system.
        let fresh = Persisted::fresh().device_name;
        assert_eq!(fresh, name_of_host(&gethostname::gethostname().to_string_lossy()));
        assert!(fresh.as_str().parse::<DeviceName>().is_ok(), "{fresh}");
    }

    #[test]
    fn settings_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut saved = StateDir::open(dir.path()).unwrap().load().unwrap();
        assert!(!saved.wants_up);
        saved.wants_up = true;
        saved.server = Some("ws://127.0.0.1:8443".parse().unwrap());
        StateDir::open(dir.path()).unwrap().save(&saved).unwrap();
        assert_eq!(StateDir::open(dir.path()).unwrap().load().unwrap(), saved);
    }
}
