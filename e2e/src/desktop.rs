//! A private desktop for tests of the real app: an Xvfb display and a D-Bus session bus
//! of the test's own, plus the app binary. Dropping a [`Desktop`] ends both.
//!
//! Nothing here touches the machine's own display or session bus: the display number is
//! one nobody uses, the bus lives in the test's directory, and `HOME`/`XDG_*` point
//! into it too, so the app's settings and autostart entries stay inside the test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use crate::process::{wait_for, workspace_root};

#[derive(Debug)]
pub struct Desktop {
    pub display: String,
    pub bus_address: String,
    pub home: PathBuf,
    xvfb: Child,
    bus: Child,
}

impl Desktop {
    /// Starts Xvfb and a session bus with their files under `dir`.
    pub fn start(dir: &Path) -> Self {
        for tool in ["Xvfb", "dbus-daemon", "import"] {
            assert!(
                which(tool).is_some(),
                "{tool} is missing: `cargo xtask test` installs it (apt packages xvfb, dbus-daemon, imagemagick)"
            );
        }
        let number = (90..400)
            .find(|n| {
                !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
                    && !Path::new(&format!("/tmp/.X{n}-lock")).exists()
            })
            .expect("a free X display number");
        let display = format!(":{number}");
        let log = |name: &str| std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        let xvfb = Command::new("Xvfb")
            .args([display.as_str(), "-screen", "0", "1280x800x24", "-nolisten", "tcp"])
            .stdin(Stdio::null())
            .stdout(log("xvfb"))
            .stderr(log("xvfb-err"))
            .spawn()
            .expect("Xvfb starts");
        let socket = dir.join("session-bus");
        let bus_address = format!("unix:path={}", socket.display());
        let bus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--nopidfile", &format!("--address={bus_address}")])
            .stdin(Stdio::null())
            .stdout(log("dbus"))
            .stderr(log("dbus-err"))
            .spawn()
            .expect("dbus-daemon starts");
        let home = dir.join("home");
        for sub in ["", ".config", ".local/share", "runtime"] {
            std::fs::create_dir_all(home.join(sub)).unwrap();
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(home.join("runtime"), std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        let desktop = Self { display, bus_address, home, xvfb, bus };
        let x_socket = PathBuf::from(format!("/tmp/.X11-unix/X{number}"));
        wait_for("Xvfb and the session bus", || (x_socket.exists() && socket.exists()).then_some(()));
        desktop
    }

    /// The environment a program on this desktop gets.
    pub fn env(&self) -> Vec<(String, String)> {
        let home = |sub: &str| self.home.join(sub).display().to_string();
        vec![
            ("DISPLAY".into(), self.display.clone()),
            ("DBUS_SESSION_BUS_ADDRESS".into(), self.bus_address.clone()),
            ("HOME".into(), home("")),
            ("XDG_CONFIG_HOME".into(), home(".config")),
            ("XDG_DATA_HOME".into(), home(".local/share")),
            ("XDG_RUNTIME_DIR".into(), home("runtime")),
            ("GDK_BACKEND".into(), "x11".into()),
            // What renders WebKit under Xvfb (no GPU, no compositor).
            ("WEBKIT_DISABLE_COMPOSITING_MODE".into(), "1".into()),
            ("NO_AT_BRIDGE".into(), "1".into()),
            ("LIBGL_ALWAYS_SOFTWARE".into(), "1".into()),
        ]
    }

    /// Saves a PNG of the window titled `title` (ImageMagick's `import`: WebKitWebDriver's
    /// own screenshot hangs under Xvfb without compositing).
    pub fn screenshot(&self, title: &str, path: &Path) {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        let out = Command::new("import")
            .args(["-display", &self.display, "-window", title])
            .arg(path)
            .output()
            .expect("ImageMagick's import runs (apt package imagemagick)");
        assert!(
            out.status.success(),
            "screenshot of {title:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Where the app keeps its settings on this desktop.
    pub fn app_config_dir(&self) -> PathBuf {
        self.home.join(".config").join("org.trellis.desktop")
    }
}

impl Drop for Desktop {
    fn drop(&mut self) {
        for child in [&mut self.xvfb, &mut self.bus] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(tool)).find(|p| p.is_file())
}

/// The desktop app's binary: `TRELLIS_APP_BIN` (set by `cargo xtask test`, which builds it
/// after the UI), else built here once (the UI must have been built: `ui/dist`).
pub fn app_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(path) = std::env::var_os("TRELLIS_APP_BIN") {
            return PathBuf::from(path);
        }
        let root = workspace_root();
        assert!(
            root.join("ui/dist/index.html").exists(),
            "the UI is not built: run `cargo xtask test`, or `npm ci && npm run build` in ui/"
        );
        let target = root.join("target").join("e2e-build");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(&root)
            .args(["build", "-p", "trellis-app"])
            .arg("--target-dir")
            .arg(&target)
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the app failed");
        target.join("debug").join("trellis-app")
    })
}

/// tauri-driver: `TRELLIS_TAURI_DRIVER`, else where `cargo xtask test` installs it, else PATH.
pub fn tauri_driver() -> PathBuf {
    if let Some(path) = std::env::var_os("TRELLIS_TAURI_DRIVER") {
        return PathBuf::from(path);
    }
    let installed = workspace_root().join("target/app-tools/bin/tauri-driver");
    if installed.exists() {
        return installed;
    }
    which("tauri-driver").expect(
        "tauri-driver is missing: `cargo xtask test` installs it (cargo install tauri-driver --locked)",
    )
}

/// A TCP port on loopback that nothing listens on now (for tauri-driver and its native driver).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Prints the app's, the driver's and Xvfb's logs from `dir` if the test fails; keep the
/// returned guard alive until the test's end.
pub fn print_logs_on_failure(dir: &Path) -> impl Drop {
    struct Guard(PathBuf);
    impl Drop for Guard {
        fn drop(&mut self) {
            if std::thread::panicking() {
                for name in ["trellis-app.log", "tauri-driver.log", "xvfb-err.log"] {
                    let text = std::fs::read_to_string(self.0.join(name)).unwrap_or_default();
                    eprintln!("----- {name} -----\n{text}");
                }
            }
        }
    }
    Guard(dir.to_path_buf())
}

/// The real app on its own [`Desktop`], started and driven through tauri-driver and
/// WebKitWebDriver: what every test of the real window starts with. Its log goes to
/// `trellis-app.log` in the test's directory.
#[derive(Debug)]
pub struct DrivenApp {
    /// Declared first: dropped (the window closed) before the driver and the display go.
    pub session: crate::webdriver::Session,
    _driver: crate::Process,
    pub desktop: Desktop,
}

impl DrivenApp {
    /// Starts the app with `env` added to its environment (the helper's socket, the
    /// default server, ...).
    pub fn start(dir: &Path, env: &[(&str, &std::ffi::OsStr)]) -> Self {
        let webkit_driver = which("WebKitWebDriver").expect(
            "WebKitWebDriver is missing: `cargo xtask test` installs it (apt package webkit2gtk-driver)",
        );
        let desktop = Desktop::start(dir);
        let (port, native_port) = (free_port(), free_port());
        let mut driver = Command::new(tauri_driver());
        driver
            .args(["--port", &port.to_string(), "--native-port", &native_port.to_string(), "--native-driver"])
            .arg(&webkit_driver)
            .envs(desktop.env())
            .env("TRELLIS_LOG", "info,trellis_app=debug")
            .env("TRELLIS_LOG_FILE", dir.join("trellis-app.log"))
            .envs(env.iter().copied());
        let driver = crate::Process::spawn_command("tauri-driver", driver, dir);
        let session = crate::webdriver::Session::start(&format!("http://127.0.0.1:{port}"), app_binary());
        Self { session, _driver: driver, desktop }
    }
}
