//! The Windows transport: the named pipe `\\.\pipe\trellisd`, whose ACL admits SYSTEM,
//! Administrators and the `Trellis Users` group. Windows checks the ACL when a client opens
//! the pipe, so every connection that reaches the helper is admitted.
//!
//! This file has not been compiled yet (development runs on Linux); it needs, in
//! `helper/Cargo.toml`:
//! `[target.'cfg(windows)'.dependencies] windows-sys = { version = "0.61", features =
//! ["Win32_Foundation", "Win32_Security", "Win32_Security_Authorization"] }`.
//! It is the only IPC code with `unsafe`: building a security descriptor is Win32 FFI.
#![allow(unsafe_code)]

use std::io;
use std::os::windows::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::ptr::{null, null_mut};

use tokio::net::windows::named_pipe::{NamedPipeServer, ServerOptions};
use windows_sys::Win32::Foundation::{LocalFree, ERROR_INSUFFICIENT_BUFFER, ERROR_NONE_MAPPED};
use windows_sys::Win32::Security::Authorization::{
    ConvertSidToStringSidW, ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
};
use windows_sys::Win32::Security::{
    LookupAccountNameW, PSECURITY_DESCRIPTOR, SECURITY_ATTRIBUTES, SID_NAME_USE,
};

use super::server::Admission;

pub use trellis_protocol::ipc::endpoint::DEFAULT_ENDPOINT;
/// Members of this local group may control the helper.
pub const TRELLIS_USERS_GROUP: &str = "Trellis Users";

/// Where and for whom the helper listens.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ListenOptions {
    pub path: PathBuf,
    /// The local group whose members may connect, besides SYSTEM and Administrators.
    pub users_group: Option<String>,
}

impl ListenOptions {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), users_group: Some(TRELLIS_USERS_GROUP.to_string()) }
    }
}

impl Default for ListenOptions {
    fn default() -> Self {
        Self::new(DEFAULT_ENDPOINT)
    }
}

/// The helper's pipe: always one instance waiting for the next client.
#[derive(Debug)]
pub struct IpcListener {
    path: PathBuf,
    security: SecurityDescriptor,
    next: NamedPipeServer,
}

impl IpcListener {
    /// Creates the first pipe instance; fails when another process already owns the name.
    pub fn bind(options: &ListenOptions) -> io::Result<Self> {
        let security = SecurityDescriptor::for_pipe(options.users_group.as_deref())?;
        let next = security.create_instance(&options.path, true).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot create the pipe {}: {e}", options.path.display()))
        })?;
        tracing::info!(path = %options.path.display(), "IPC listening");
        Ok(Self { path: options.path.clone(), security, next })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next connection. Cancel-safe: the waiting instance stays in `self`.
    pub(super) async fn accept(&mut self) -> io::Result<(NamedPipeServer, Admission)> {
        self.next.connect().await?;
        let fresh = self.security.create_instance(&self.path, false)?;
        let connected = std::mem::replace(&mut self.next, fresh);
        Ok((connected, Admission::Allowed { peer: "a pipe client admitted by the pipe's ACL".into() }))
    }
}

/// A self-relative security descriptor allocated by Windows (freed with `LocalFree`).
#[derive(Debug)]
struct SecurityDescriptor(PSECURITY_DESCRIPTOR);

// SAFETY: the descriptor is a heap block that is only read (by CreateNamedPipeW) after it
// was built, and freed once, on drop.
unsafe impl Send for SecurityDescriptor {}
unsafe impl Sync for SecurityDescriptor {}

impl SecurityDescriptor {
    /// Protected DACL: SYSTEM and Administrators full control, the users group (when it
    /// exists) read and write. No one else can open the pipe.
    fn for_pipe(users_group: Option<&str>) -> io::Result<Self> {
        let mut sddl = String::from("D:P(A;;GA;;;SY)(A;;GA;;;BA)");
        match users_group.map(group_sid_string).transpose()?.flatten() {
            Some(sid) => sddl.push_str(&format!("(A;;GRGW;;;{sid})")),
            None => tracing::info!(
                group = ?users_group,
                "no Trellis users group: only SYSTEM and Administrators may connect"
            ),
        }
        let sddl = wide(&sddl);
        let mut descriptor: PSECURITY_DESCRIPTOR = null_mut();
        // SAFETY: `sddl` is NUL-terminated; `descriptor` is a valid place for the result;
        // the size output is optional.
        let ok = unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(
                sddl.as_ptr(),
                SDDL_REVISION_1,
                &mut descriptor,
                null_mut(),
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self(descriptor))
    }

    fn create_instance(&self, path: &Path, first: bool) -> io::Result<NamedPipeServer> {
        let mut attributes = SECURITY_ATTRIBUTES {
            nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
            lpSecurityDescriptor: self.0,
            bInheritHandle: 0,
        };
        let mut options = ServerOptions::new();
        options.first_pipe_instance(first).reject_remote_clients(true);
        // SAFETY: `attributes` is a valid SECURITY_ATTRIBUTES for the duration of the call,
        // and its descriptor lives as long as `self`.
        unsafe {
            options.create_with_security_attributes_raw(
                path,
                (&mut attributes as *mut SECURITY_ATTRIBUTES).cast(),
            )
        }
    }
}

impl Drop for SecurityDescriptor {
    fn drop(&mut self) {
        // SAFETY: allocated by ConvertStringSecurityDescriptorToSecurityDescriptorW, freed once.
        unsafe { LocalFree(self.0) };
    }
}

/// The SID of local group `name` in string form (`S-1-5-21-…`), or `None` when there is no
/// such group.
fn group_sid_string(name: &str) -> io::Result<Option<String>> {
    let name = wide(name);
    let (mut sid_len, mut domain_len, mut kind): (u32, u32, SID_NAME_USE) = (0, 0, 0);
    // SAFETY: a size query: no buffers, the lengths are written back.
    let ok = unsafe {
        LookupAccountNameW(
            null(),
            name.as_ptr(),
            null_mut(),
            &mut sid_len,
            null_mut(),
            &mut domain_len,
            &mut kind,
        )
    };
    if ok == 0 {
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(code) if code == ERROR_NONE_MAPPED as i32 => return Ok(None),
            Some(code) if code == ERROR_INSUFFICIENT_BUFFER as i32 => {}
            _ => return Err(e),
        }
    }
    // u32 elements: a SID holds 32-bit sub-authorities and must be 4-byte aligned.
    let mut sid = vec![0u32; (sid_len as usize).div_ceil(4)];
    let mut domain = vec![0u16; domain_len as usize];
    // SAFETY: buffers of at least the sizes the size query asked for.
    let ok = unsafe {
        LookupAccountNameW(
            null(),
            name.as_ptr(),
            sid.as_mut_ptr().cast(),
            &mut sid_len,
            domain.as_mut_ptr(),
            &mut domain_len,
            &mut kind,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    let mut text: *mut u16 = null_mut();
    // SAFETY: `sid` holds the valid SID just written; `text` receives a LocalAlloc'ed string.
    if unsafe { ConvertSidToStringSidW(sid.as_mut_ptr().cast(), &mut text) } == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `text` is a NUL-terminated UTF-16 string owned by us until LocalFree.
    let string = unsafe {
        let len = (0..).take_while(|&i| *text.add(i) != 0).count();
        let string = String::from_utf16_lossy(std::slice::from_raw_parts(text, len));
        LocalFree(text.cast());
        string
    };
    Ok(Some(string))
}

fn wide(text: &str) -> Vec<u16> {
    std::ffi::OsStr::new(text).encode_wide().chain(std::iter::once(0)).collect()
}
