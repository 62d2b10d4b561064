//! The IPC over real named pipes: the helper's server and the shared client, a client that
//! leaves before it is served, and the pipe's DACL. They run on Windows, and under wine
//! (`xcargo test`, see README); each test says what wine cannot show.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::windows::named_pipe::{ClientOptions, ServerOptions};
use tokio::sync::{broadcast, oneshot};
use trellis_protocol::ipc::{IpcErrorCode, IpcEvent, IpcRequest, IpcResponse};
use windows_sys::Win32::Foundation::ERROR_ACCESS_DENIED;

use super::win32::{self, SecurityDescriptor};
use super::windows_acl::well_known::{ADMINISTRATORS, LOCAL_SYSTEM};
use super::windows_acl::{
    changeable_by_others, rights, Ace, ObjectSecurity, OpenToOthers, PipeAccess, ACCESS_ALLOWED_ACE_TYPE,
    PIPE_CLIENT_ACCESS,
};
use super::*;

/// Long enough for a slow wine start; a passing test takes milliseconds.
const DEADLINE: Duration = Duration::from_secs(20);

/// A pipe name no other test (or test run) uses.
fn unique_pipe() -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    PathBuf::from(format!(r"\\.\pipe\trellisd-test-{}-{n}", std::process::id()))
}

/// Answers `Up` with Done and everything else with an error; remembers the requests.
#[derive(Debug, Default)]
struct Recorder {
    seen: Mutex<Vec<IpcRequest>>,
}

impl Control for Recorder {
    fn handle(&self, request: IpcRequest) -> BoxFuture<'_, Result<IpcResponse, IpcError>> {
        self.seen.lock().unwrap().push(request.clone());
        Box::pin(async move {
            match request {
                IpcRequest::Up => Ok(IpcResponse::Done),
                other => Err(IpcError::new(IpcErrorCode::NoNetwork, format!("not here: {other:?}"))),
            }
        })
    }
}

/// The helper's server on `listener`, until dropped or stopped.
struct Served {
    control: Arc<Recorder>,
    events: broadcast::Sender<IpcEvent>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Served {
    fn start(listener: IpcListener) -> Self {
        let control = Arc::new(Recorder::default());
        let (events, _) = broadcast::channel(16);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, control.clone(), events.clone(), async move {
            let _ = stopped.await;
        }));
        Self { control, events, stop: Some(stop), task }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(DEADLINE, &mut self.task).await.expect("the server stops").unwrap();
    }
}

async fn connect(path: &std::path::Path) -> IpcClient {
    tokio::time::timeout(DEADLINE, IpcClient::connect(path, "windows-test"))
        .await
        .expect("connected within the deadline")
        .expect("connected")
}

/// A request and its answer, an error answer and a pushed event, from the shared client
/// (`trellis_protocol::ipc::client`) to the helper's server over a real named pipe, and a
/// second client on the next pipe instance.
///
/// Under wine: the pipe and its overlapped I/O are real. Wine 8.0 does not check a pipe's
/// DACL when a client opens it (see the last test), so this does not show that the DACL
/// lets the client in.
#[tokio::test]
async fn a_client_and_the_helper_talk_over_the_pipe() {
    let path = unique_pipe();
    let listener = IpcListener::bind(&ListenOptions::new(&path)).unwrap();
    assert_eq!(listener.path(), path);
    let served = Served::start(listener);

    let mut client = connect(&path).await;
    assert_eq!(client.helper_version(), HELPER_VERSION);
    assert!(matches!(client.request(IpcRequest::Up).await, Ok(IpcResponse::Done)));
    match client.request(IpcRequest::Leave).await {
        Err(ClientError::Refused(error)) => assert_eq!(error.code, IpcErrorCode::NoNetwork),
        other => panic!("expected a refusal, got {other:?}"),
    }
    client.subscribe().await.unwrap();
    let left = IpcEvent::PeerLeft {
        name: "bob".parse().unwrap(),
        key: trellis_protocol::PublicKey::from_bytes([2; 32]),
    };
    served.events.send(left.clone()).unwrap();
    let event = tokio::time::timeout(DEADLINE, client.next_event()).await.unwrap().unwrap();
    assert_eq!(format!("{event:?}"), format!("{left:?}"));

    // The helper had put a fresh instance in place: a second client gets in while the
    // first is still connected.
    let mut second = connect(&path).await;
    assert!(matches!(second.request(IpcRequest::Up).await, Ok(IpcResponse::Done)));
    assert_eq!(served.control.seen.lock().unwrap().len(), 3);
    drop((client, second));
    served.stop().await;
}

/// A client that opens the pipe and closes it before the helper has served it leaves a
/// broken instance (on Windows ConnectNamedPipe then fails with ERROR_NO_DATA); the helper
/// must put a fresh instance in its place, or no client could connect again.
///
/// Under wine: wine 8.0 lets ConnectNamedPipe succeed on such an instance (checked: this
/// test passes with a listener that does not replace it), so here it only shows that the
/// next client is served; the replacement rule itself is tested with a fake instance in
/// `pipe_instances.rs`.
#[tokio::test]
async fn a_client_that_leaves_before_it_is_served_does_not_block_the_next() {
    let path = unique_pipe();
    let listener = IpcListener::bind(&ListenOptions::new(&path)).unwrap();
    // Opened and closed before the server even waits for it.
    drop(ClientOptions::new().open(&path).unwrap());
    let served = Served::start(listener);
    let mut client = connect(&path).await;
    assert!(matches!(client.request(IpcRequest::Up).await, Ok(IpcResponse::Done)));
    drop(client);
    served.stop().await;
}

/// The first ACE for `sid` in `dacl`.
fn ace_for<'a>(dacl: &'a [Ace], sid: &str) -> Option<&'a Ace> {
    dacl.iter().find(|ace| ace.sid.as_ref().is_some_and(|s| s.as_str() == sid))
}

/// Full control as Windows stores it: `GENERIC_ALL` mapped to the file rights at creation
/// (Windows), or kept as given (wine).
fn is_full_control(mask: u32) -> bool {
    mask == rights::GENERIC_ALL || mask & rights::FILE_ALL_ACCESS == rights::FILE_ALL_ACCESS
}

/// The DACL on the helper's pipe, read back with GetSecurityInfo: protected, SYSTEM and
/// Administrators full control, the installing user read and write without
/// FILE_CREATE_PIPE_INSTANCE, no one else. Every instance carries it.
///
/// Under wine: wine stores the descriptor and returns it as given (generic rights are not
/// mapped, hence [`is_full_control`]), but does not enforce it (see the next test). The
/// `Trellis Users` group is not created here, so its ACE is checked only by `windows_acl`'s
/// unit tests on the SDDL.
#[tokio::test]
async fn the_pipe_admits_system_administrators_and_the_owner_only() {
    let me = win32::current_user_sid().unwrap();
    let path = unique_pipe();
    let options =
        ListenOptions { users_group: None, owner_sid: Some(me.clone()), ..ListenOptions::new(&path) };
    let listener = IpcListener::bind(&options).unwrap();
    assert_eq!(listener.access(), &PipeAccess { users_group: None, owner: Some(me.clone()) });

    let check = |security: ObjectSecurity| {
        let dacl = security.dacl.expect("the pipe has a DACL");
        assert_eq!(dacl.len(), 3, "{dacl:?}");
        assert!(dacl.iter().all(|ace| ace.kind == ACCESS_ALLOWED_ACE_TYPE), "{dacl:?}");
        for admin in [LOCAL_SYSTEM, ADMINISTRATORS] {
            let ace = ace_for(&dacl, admin).unwrap_or_else(|| panic!("no ACE for {admin}: {dacl:?}"));
            assert!(is_full_control(ace.mask), "{admin}: {:#x}", ace.mask);
        }
        let mine = ace_for(&dacl, me.as_str()).expect("an ACE for the owner");
        assert_eq!(mine.mask, PIPE_CLIENT_ACCESS);
        assert_eq!(mine.mask & rights::FILE_CREATE_PIPE_INSTANCE, 0);
    };
    check(win32::handle_security(listener.waiting_instance()).unwrap());

    // The instance made after a client connected carries the same DACL.
    let mut listener = listener;
    let _client = ClientOptions::new().open(&path).unwrap();
    let (connected, _) = tokio::time::timeout(DEADLINE, listener.accept()).await.unwrap().unwrap();
    check(win32::handle_security(&connected).unwrap());
    check(win32::handle_security(listener.waiting_instance()).unwrap());
}

/// What [`PIPE_CLIENT_ACCESS`] lets a user do: open the pipe as a client, but not create
/// an instance of it (stand in for the helper); a user granted nothing may not open it.
/// Administrators are left out of these DACLs, since the test's user may be one.
///
/// Under wine: only the first part runs. Wine 8.0 does not check pipe DACLs at all
/// (checked: a pipe whose DACL admits SYSTEM alone, or denies Administrators, opens, and
/// anyone may create further instances), so the refusals need a real Windows; and all of
/// wine runs as one user, so keeping another user out needs a Windows with two accounts.
#[tokio::test]
async fn the_client_grant_opens_the_pipe_but_does_not_create_instances() {
    let me = win32::current_user_sid().unwrap();
    let sddl = format!("D:P(A;;GA;;;SY)(A;;{PIPE_CLIENT_ACCESS:#x};;;{me})");
    let security = SecurityDescriptor::from_sddl(&sddl).unwrap();
    let path = unique_pipe();
    let mut first = ServerOptions::new();
    first.first_pipe_instance(true).reject_remote_clients(true);
    let _server = security.create_pipe(&first, &path).unwrap();
    // GENERIC_READ | GENERIC_WRITE, which the pipe file system grants without
    // FILE_CREATE_PIPE_INSTANCE.
    let client = ClientOptions::new().open(&path);
    assert!(client.is_ok(), "the client grant opens the pipe: {client:?}");

    if running_under_wine() {
        eprintln!("SKIPPED: wine does not check pipe DACLs; the refusals need a real Windows");
        return;
    }
    assert_ne!(me.as_str(), LOCAL_SYSTEM, "run the tests as a user: SYSTEM may do anything here");
    let another = security.create_pipe(&ServerOptions::new(), &path);
    let code = another.as_ref().err().and_then(std::io::Error::raw_os_error);
    assert_eq!(code, Some(ERROR_ACCESS_DENIED as i32), "a second instance: {another:?}");

    let system_only = SecurityDescriptor::from_sddl("D:P(A;;GA;;;SY)").unwrap();
    let closed_path = unique_pipe();
    let _closed = system_only.create_pipe(&first, &closed_path).unwrap();
    let refused = ClientOptions::new().open(&closed_path);
    let code = refused.as_ref().err().and_then(std::io::Error::raw_os_error);
    assert_eq!(code, Some(ERROR_ACCESS_DENIED as i32), "no grant: {refused:?}");
}

/// Wine keeps its own settings under HKCU\Software\Wine; Windows has no such key.
fn running_under_wine() -> bool {
    std::process::Command::new("reg")
        .args(["query", r"HKCU\Software\Wine"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// A folder's owner and DACL, read through GetNamedSecurityInfoW rather than `icacls`'
/// words: a fresh folder of this user's is theirs to change (so `install-service` would
/// refuse to run a service from it); a missing path is an error that names it.
///
/// Under wine: wine makes the DACL up from the Unix file mode (SYSTEM and the owner full
/// control, Everyone read; checked), so ACLs set by Windows tools, and inherited ones,
/// are not shown.
#[test]
fn a_folders_owner_and_dacl_are_read_through_windows() {
    let me = win32::current_user_sid().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let security = win32::path_security(dir.path()).unwrap();
    let dacl = security.dacl.as_deref().expect("a DACL");
    let mine = ace_for(dacl, me.as_str()).unwrap_or_else(|| panic!("no ACE for {me}: {dacl:?}"));
    assert_eq!(mine.kind, ACCESS_ALLOWED_ACE_TYPE);
    assert!(mine.applies_to_object());
    assert_eq!(mine.mask & rights::FILE_ALL_ACCESS, rights::FILE_ALL_ACCESS, "{:#x}", mine.mask);
    // Owned by this user, or (elevated) by Administrators with an ACE for this user.
    match changeable_by_others(&security) {
        Some(OpenToOthers::Owner(sid) | OpenToOthers::Granted { sid, .. }) => assert_eq!(sid, me),
        other => panic!("{other:?} for {security:?}"),
    }

    let missing = dir.path().join("missing");
    let error = win32::path_security(&missing).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
    assert!(error.to_string().contains(&missing.display().to_string()), "{error}");
}
