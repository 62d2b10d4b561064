//! The app's own settings (start at login, connect on start) and the default server the
//! installer configured. Device name and server belong to the helper and live there.
//!
//! Settings are one small JSON file in the user's config directory, written to a
//! temporary file and renamed, so a crash never leaves half a file.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppSettings {
    pub start_at_login: bool,
    pub connect_on_start: bool,
    /// From the installed config; read-only for the window.
    #[serde(default)]
    pub default_server: Option<String>,
}

impl Default for AppSettings {
    fn default() -> Self {
        Self { start_at_login: false, connect_on_start: true, default_server: None }
    }
}

/// What the app keeps on disk (the default server is not stored: it is read each time).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    start_at_login: bool,
    connect_on_start: bool,
}

#[derive(Debug)]
pub struct SettingsStore {
    file: PathBuf,
    installed_config: PathBuf,
}

impl SettingsStore {
    pub fn new(config_dir: &Path, installed_config: PathBuf) -> Self {
        Self { file: config_dir.join("settings.json"), installed_config }
    }

    /// The settings, or the defaults when there are none yet. A file that cannot be read
    /// is reported in the log and the defaults are used: the file is never overwritten
    /// until the user saves.
    pub fn load(&self) -> AppSettings {
        let mut settings = match fs::read(&self.file) {
            Ok(bytes) => match serde_json::from_slice::<Stored>(&bytes) {
                Ok(stored) => AppSettings {
                    start_at_login: stored.start_at_login,
                    connect_on_start: stored.connect_on_start,
                    default_server: None,
                },
                Err(e) => {
                    tracing::warn!(file = %self.file.display(), "settings unreadable, using defaults: {e}");
                    AppSettings::default()
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => AppSettings::default(),
            Err(e) => {
                tracing::warn!(file = %self.file.display(), "cannot read settings, using defaults: {e}");
                AppSettings::default()
            }
        };
        settings.default_server = self.default_server();
        settings
    }

    pub fn save(&self, settings: &AppSettings) -> io::Result<AppSettings> {
        let stored =
            Stored { start_at_login: settings.start_at_login, connect_on_start: settings.connect_on_start };
        if let Some(dir) = self.file.parent() {
            fs::create_dir_all(dir)?;
        }
        let temporary = self.file.with_extension("json.tmp");
        fs::write(&temporary, serde_json::to_vec_pretty(&stored).map_err(io::Error::other)?)?;
        fs::rename(&temporary, &self.file)?;
        Ok(self.load())
    }

    /// `TRELLIS_DEFAULT_SERVER`, else `server` in the installed config.
    fn default_server(&self) -> Option<String> {
        if let Some(server) = std::env::var("TRELLIS_DEFAULT_SERVER").ok().filter(|s| !s.trim().is_empty()) {
            return Some(server.trim().to_string());
        }
        let text = fs::read_to_string(&self.installed_config).ok()?;
        #[derive(Deserialize)]
        struct Installed {
            server: Option<String>,
        }
        match toml::from_str::<Installed>(&text) {
            Ok(installed) => installed.server.filter(|s| !s.trim().is_empty()),
            Err(e) => {
                tracing::warn!(file = %self.installed_config.display(), "installed config unreadable: {e}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_survive_a_restart_and_the_default_server_comes_from_the_installed_config() {
        let dir = tempfile::tempdir().unwrap();
        let installed = dir.path().join("app.toml");
        fs::write(&installed, "server = \"vpn.example.org:8443\"\n").unwrap();
        let store = SettingsStore::new(&dir.path().join("config"), installed.clone());
        let fresh = store.load();
        assert_eq!(
            fresh,
            AppSettings { default_server: Some("vpn.example.org:8443".into()), ..AppSettings::default() }
        );

        let saved = store
            .save(&AppSettings {
                start_at_login: true,
                connect_on_start: false,
                default_server: Some("ignored".into()),
            })
            .unwrap();
        assert!(saved.start_at_login && !saved.connect_on_start);
        assert_eq!(
            saved.default_server.as_deref(),
            Some("vpn.example.org:8443"),
            "the window cannot change it"
        );
        let reopened = SettingsStore::new(&dir.path().join("config"), installed).load();
        assert_eq!(reopened, saved);
    }

    #[test]
    fn a_damaged_file_gives_defaults_and_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("settings.json"), b"{not json").unwrap();
        let store = SettingsStore::new(dir.path(), dir.path().join("missing.toml"));
        assert_eq!(store.load(), AppSettings::default());
        assert_eq!(fs::read(dir.path().join("settings.json")).unwrap(), b"{not json");
    }
}
