//! The helper as a Windows service, named `trellisd`, run as LocalSystem with the command
//! line `trellisd.exe --service`. The MSI installs and starts it (WiX ServiceInstall in
//! installers/windows/trellisd.wxs); `install-service` does the same by hand. Logs go to
//! C:\ProgramData\Trellis\logs\trellisd.log, since a service has no console.
//! Written against the windows-service crate's documentation and examples; not compiled or
//! run on our build machines.

use std::ffi::OsString;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use windows_service::service::{
    ServiceAccess, ServiceControl, ServiceControlAccept, ServiceErrorControl, ServiceExitCode, ServiceInfo,
    ServiceStartType, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
use windows_service::{define_windows_service, service_dispatcher};

use super::{InstallArgs, UninstallArgs};
use crate::RunArgs;

const SERVICE_NAME: &str = "trellisd";
const DISPLAY_NAME: &str = "Trellis helper";
const DESCRIPTION: &str =
    "Owns the Trellis network device, its keys and connections; the Trellis app controls it.";
const LOG_DIR: &str = r"C:\ProgramData\Trellis\logs";
const USERS_GROUP: &str = trellis_helper::ipc::TRELLIS_USERS_GROUP;

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
    let report = |state: ServiceState, exit: u32| {
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
            wait_hint: Duration::from_secs(10),
            process_id: None,
        })
    };
    report(ServiceState::Running, 0)?;
    let result = crate::runtime()?.block_on(crate::run(args, async move {
        let _ = stop_rx.await;
        Ok(())
    }));
    // A failure is reported to the service manager (which then applies its recovery
    // settings) as well as logged.
    report(ServiceState::Stopped, if result.is_ok() { 0 } else { 1 })?;
    result
}

pub fn install(args: &InstallArgs) -> Result<()> {
    if args.root.is_some() {
        bail!("--root is for Linux only");
    }
    println!("Installing the Trellis helper as the Windows service {SERVICE_NAME}:");
    // Members of this local group may open the helper's pipe (see the helper's ipc/windows.rs).
    // `net` exits with 2 when the group exists or the user is in it already, which is fine
    // on a reinstall; anything else is an error.
    net_localgroup(&[USERS_GROUP, "/add", "/comment:May control the Trellis helper"], "created the group")?;
    match &args.for_user {
        Some(user) => net_localgroup(&[USERS_GROUP, user, "/add"], &format!("added {user} to"))?,
        None => println!("  no user to add to {USERS_GROUP}: net localgroup \"{USERS_GROUP}\" USER /add"),
    }
    let manager = ServiceManager::local_computer(
        None::<&str>,
        ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE,
    )
    .context("cannot open the service manager (run as administrator)")?;
    let info = ServiceInfo {
        name: OsString::from(SERVICE_NAME),
        display_name: OsString::from(DISPLAY_NAME),
        service_type: ServiceType::OWN_PROCESS,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: std::env::current_exe().context("cannot find this program's path")?,
        launch_arguments: vec![OsString::from("--service")],
        dependencies: vec![],
        account_name: None, // LocalSystem
        account_password: None,
    };
    let access = ServiceAccess::QUERY_STATUS
        | ServiceAccess::STOP
        | ServiceAccess::CHANGE_CONFIG
        | ServiceAccess::START;
    // A reinstall or repair (the MSI runs this again) updates the service in place.
    let service = match manager.open_service(SERVICE_NAME, access) {
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
            let service = manager.create_service(&info, access).context("cannot create the service")?;
            println!("  created the service {SERVICE_NAME} (automatic start, LocalSystem)");
            service
        }
    };
    service.set_description(DESCRIPTION)?;
    service.start::<&str>(&[]).context("cannot start the service")?;
    println!("  started it (logs: {LOG_DIR}\\trellisd.log)");
    println!("Done.");
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
    let state = trellis_helper::paths::DEFAULT_STATE_DIR;
    if args.purge {
        std::fs::remove_dir_all(state).with_context(|| format!("cannot delete {state}"))?;
        println!("  deleted the device key and state in {state}");
    } else {
        println!("  kept the device key and state in {state} (--purge deletes them)");
    }
    println!("Done.");
    Ok(())
}

/// `net localgroup <args>`; "already there" (exit code 2 with system error 1378 or 1379)
/// counts as done.
fn net_localgroup(args: &[&str], done: &str) -> Result<()> {
    let out =
        std::process::Command::new("net").arg("localgroup").args(args).output().context("cannot run net")?;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        println!("  {done} {USERS_GROUP}");
    } else if said.contains("1378") || said.contains("1379") {
        println!("  {USERS_GROUP}: already so");
    } else {
        bail!("`net localgroup {}` failed ({}): {}", args.join(" "), out.status, said.trim());
    }
    Ok(())
}

/// Waits for a service asked to stop, so that its files can be replaced or removed.
fn wait_until_stopped(service: &windows_service::service::Service) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while service.query_status()?.current_state != ServiceState::Stopped {
        if std::time::Instant::now() > deadline {
            bail!("{SERVICE_NAME} did not stop within 30 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}
