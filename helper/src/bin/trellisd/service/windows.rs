//! The helper as a Windows service, named `trellisd`, run as LocalSystem with the command
//! line `trellisd.exe --service`. The MSI creates and starts it (WiX ServiceInstall and
//! ServiceControl in installers/windows/trellisd.wxs) and runs `install-service
//! --without-service` for the rest; `install-service` alone does everything by hand.
//! Logs go to C:\ProgramData\Trellis\logs\trellisd.log, since a service has no console.
//!
//! Who may control the helper is set up in `access.rs`, the firewall rule in `firewall.rs`.
//! Compiled and unit-tested here under wine; the service and the install steps have not
//! yet run on a real Windows.

mod access;
mod firewall;

use std::ffi::OsString;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use windows_service::service::{
    Service, ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
    ServiceErrorControl, ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod, ServiceInfo,
    ServiceStartType, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult, ServiceStatusHandle};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
use windows_service::{define_windows_service, service_dispatcher};

use super::{InstallArgs, UninstallArgs};
use crate::RunArgs;

pub(super) const SERVICE_NAME: &str = "trellisd";
const DISPLAY_NAME: &str = "Trellis helper";
const DESCRIPTION: &str =
    "Owns the Trellis network device, its keys and connections; the Trellis app controls it.";
const STATE_DIR: &str = trellis_helper::paths::DEFAULT_STATE_DIR;
const LOG_DIR: &str = r"C:\ProgramData\Trellis\logs";
/// Well-known SIDs, so that the commands work in every language of Windows.
const SYSTEM_SID: &str = "*S-1-5-18";
const ADMINISTRATORS_SID: &str = "*S-1-5-32-544";

/// The arguments parsed in `main`, handed to the service's thread.
static RUN_ARGS: Mutex<Option<RunArgs>> = Mutex::new(None);

define_windows_service!(ffi_service_main, service_main);

/// Hands this process to the service control manager, which calls `service_main` on its
/// own thread and returns when the service has stopped.
pub fn run_as_windows_service(args: RunArgs) -> Result<()> {
    std::fs::create_dir_all(LOG_DIR).with_context(|| format!("cannot create {LOG_DIR}"))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(format!(r"{LOG_DIR}\trellisd.log"))
        .context("cannot open the log file")?;
    // tracing-subscriber makes a writer of `Arc<File>` (each event writes through `&File`).
    crate::init_logging(
        &args.log,
        tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::sync::Arc::new(log)),
        false,
    )?;
    *RUN_ARGS.lock().unwrap() = Some(args);
    service_dispatcher::start(SERVICE_NAME, ffi_service_main).context("cannot start as a Windows service")?;
    Ok(())
}

fn service_main(_arguments: Vec<OsString>) {
    if let Err(e) = run_service() {
        tracing::error!("the service failed: {e:#}");
    }
}

fn report(status: &ServiceStatusHandle, state: ServiceState, exit: u32) -> windows_service::Result<()> {
    status.set_service_status(ServiceStatus {
        service_type: ServiceType::OWN_PROCESS,
        current_state: state,
        controls_accepted: if state == ServiceState::Running {
            ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
        } else {
            ServiceControlAccept::empty()
        },
        exit_code: ServiceExitCode::Win32(exit),
        checkpoint: 0,
        wait_hint: Duration::from_secs(30),
        process_id: None,
    })
}

fn run_service() -> Result<()> {
    let args = RUN_ARGS.lock().unwrap().take().context("the service started twice")?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stop_tx = Mutex::new(Some(stop_tx));
    let status = service_control_handler::register(SERVICE_NAME, move |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown => {
            if let Some(tx) = stop_tx.lock().unwrap().take() {
                let _ = tx.send(());
            }
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    })?;
    report(&status, ServiceState::StartPending, 0)?;
    // Running only once the pipe answers; every failure, including the runtime's, ends in
    // Stopped with an error code, which the recovery settings (install) turn into a restart.
    let result = crate::runtime().and_then(|runtime| {
        runtime.block_on(crate::run(
            args,
            || {
                let _ = report(&status, ServiceState::Running, 0);
            },
            async move {
                let _ = stop_rx.await;
                Ok(())
            },
        ))
    });
    report(&status, ServiceState::Stopped, if result.is_ok() { 0 } else { 1 })?;
    result
}

pub fn install(args: &InstallArgs) -> Result<()> {
    if args.root.is_some() {
        bail!("--root is for Linux only");
    }
    println!("Setting up the Trellis helper as the Windows service {SERVICE_NAME}:");
    secure_state_dir()?;
    // Before the service starts: the pipe's DACL names the group and the owner.
    let owner = access::set_up_users(args.for_user.as_deref())?;

    let manager = ServiceManager::local_computer(
        None::<&str>,
        ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE,
    )
    .context("cannot open the service manager (run as administrator)")?;
    let rights = ServiceAccess::QUERY_STATUS
        | ServiceAccess::STOP
        | ServiceAccess::CHANGE_CONFIG
        | ServiceAccess::START;
    let executable = std::env::current_exe().context("cannot find this program's path")?;
    let service = if args.without_service {
        manager.open_service(SERVICE_NAME, rights).context("the MSI has not created the service trellisd")?
    } else {
        access::refuse_writable(&executable)?;
        create_or_update(&manager, rights, &executable)?
    };
    if let Some(owner) = &owner {
        access::name_owner_to_service(owner)?;
    }
    configure_recovery(&service)?;
    // Not fatal: with the firewall service off or managed by policy, netsh fails, and an
    // MSI whose custom action failed would roll the whole install back. Without the rule,
    // peers still connect, through the relay when the firewall drops what they send.
    if let Err(e) = firewall::allow_inbound(&executable) {
        eprintln!("  warning: no inbound firewall rule for {}: {e:#}", executable.display());
        eprintln!("  (peers may then reach this device only through the relay)");
    }
    if !args.without_service {
        service.start::<&str>(&[]).context("cannot start the service")?;
        println!("  started it (logs: {LOG_DIR}\\trellisd.log)");
    }
    println!("Done.");
    Ok(())
}

fn create_or_update(manager: &ServiceManager, rights: ServiceAccess, executable: &Path) -> Result<Service> {
    let info = ServiceInfo {
        name: OsString::from(SERVICE_NAME),
        display_name: OsString::from(DISPLAY_NAME),
        service_type: ServiceType::OWN_PROCESS,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: executable.to_path_buf(),
        launch_arguments: vec![OsString::from("--service")],
        dependencies: vec![],
        account_name: None, // LocalSystem
        account_password: None,
    };
    // A reinstall updates the service in place.
    let service = match manager.open_service(SERVICE_NAME, rights) {
        Ok(service) => {
            if service.query_status()?.current_state != ServiceState::Stopped {
                service.stop()?;
                wait_until_stopped(&service)?;
                println!("  stopped the running helper");
            }
            service.change_config(&info).context("cannot update the service")?;
            println!("  updated the service {SERVICE_NAME} (automatic start, LocalSystem)");
            service
        }
        Err(_) => {
            let service = manager.create_service(&info, rights).context("cannot create the service")?;
            println!("  created the service {SERVICE_NAME} (automatic start, LocalSystem)");
            service
        }
    };
    service.set_description(DESCRIPTION)?;
    Ok(service)
}

/// Restarted after a failure, as systemd and launchd do (Restart=on-failure, KeepAlive):
/// after 2 s, 10 s, then every 60 s; a clean stop with an error code counts as a failure.
fn configure_recovery(service: &Service) -> Result<()> {
    let restart =
        |secs| ServiceAction { action_type: ServiceActionType::Restart, delay: Duration::from_secs(secs) };
    service
        .update_failure_actions(ServiceFailureActions {
            reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(24 * 3600)),
            reboot_msg: None,
            command: None,
            actions: Some(vec![restart(2), restart(10), restart(60)]),
        })
        .context("cannot set the service's recovery")?;
    service.set_failure_actions_on_non_crash_failures(true)?;
    println!("  set it to restart after a failure");
    Ok(())
}

/// C:\ProgramData\Trellis holds the device key and the log. ProgramData lets every user
/// read, and create folders: the folder gets a protected ACL (SYSTEM and Administrators
/// only, owner Administrators), replacing whatever a user set up before the install; a
/// link planted in its place is refused.
fn secure_state_dir() -> Result<()> {
    let dir = Path::new(STATE_DIR);
    if let Ok(meta) = std::fs::symlink_metadata(dir) {
        if meta.file_type().is_symlink() {
            bail!("{STATE_DIR} is a link, not a folder: remove it, then install again");
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {STATE_DIR}"))?;
    let full_control = |sid: &str| format!("{sid}:(OI)(CI)F");
    super::run_tool(
        "icacls",
        &[
            STATE_DIR,
            "/inheritance:r",
            "/grant:r",
            &full_control(SYSTEM_SID),
            &full_control(ADMINISTRATORS_SID),
            "/T",
            "/C",
            "/Q",
        ],
    )?;
    super::run_tool("icacls", &[STATE_DIR, "/setowner", ADMINISTRATORS_SID, "/T", "/C", "/Q"])?;
    println!("  {STATE_DIR}: only SYSTEM and Administrators may open it");
    Ok(())
}

pub fn uninstall(args: &UninstallArgs) -> Result<()> {
    if args.root.is_some() {
        bail!("--root is for Linux only");
    }
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
        .context("cannot open the service manager (run as administrator)")?;
    let service = manager
        .open_service(SERVICE_NAME, ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE)
        .context("no service trellisd is installed")?;
    if service.query_status()?.current_state != ServiceState::Stopped {
        service.stop()?;
        wait_until_stopped(&service)?;
        println!("  stopped {SERVICE_NAME}");
    }
    service.delete()?;
    println!("  removed the service {SERVICE_NAME}");
    firewall::remove()?;
    if args.purge {
        std::fs::remove_dir_all(STATE_DIR).with_context(|| format!("cannot delete {STATE_DIR}"))?;
        println!("  deleted the device key and state in {STATE_DIR}");
    } else {
        println!("  kept the device key and state in {STATE_DIR} (delete the folder to remove them)");
    }
    println!("Done.");
    Ok(())
}

/// Waits for a service asked to stop, so that its files can be replaced or removed.
fn wait_until_stopped(service: &Service) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while service.query_status()?.current_state != ServiceState::Stopped {
        if std::time::Instant::now() > deadline {
            bail!("{SERVICE_NAME} did not stop within 30 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}
