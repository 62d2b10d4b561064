//! The Win32 calls behind the helper's Windows access control, behind safe functions: a
//! security descriptor from SDDL and pipe instances created with it, reading the owner and
//! DACL of a handle or a path, looking up SIDs, and the local group `Trellis Users`.
//!
//! The only `unsafe` code of the helper's Windows security: everything it returns is
//! plain data ([`ObjectSecurity`], [`Sid`]), and what to make of it is decided in
//! `windows_acl.rs`, which is tested on every platform.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::io;
use std::os::windows::ffi::OsStrExt;
use std::os::windows::io::AsRawHandle;
use std::path::Path;
use std::ptr::{null, null_mut};

use tokio::net::windows::named_pipe::{NamedPipeServer, ServerOptions};
use windows_sys::Win32::Foundation::{
    CloseHandle, LocalFree, ERROR_ALIAS_EXISTS, ERROR_INSUFFICIENT_BUFFER, ERROR_MEMBER_IN_ALIAS,
    ERROR_NONE_MAPPED, ERROR_SUCCESS, HANDLE,
};
use windows_sys::Win32::NetworkManagement::NetManagement::{
    NERR_GroupExists as NERR_GROUP_EXISTS, NERR_Success as NERR_SUCCESS, NetLocalGroupAdd,
    NetLocalGroupAddMembers, LOCALGROUP_INFO_1, LOCALGROUP_MEMBERS_INFO_0,
};
use windows_sys::Win32::Security::Authorization::{
    ConvertSidToStringSidW, ConvertStringSecurityDescriptorToSecurityDescriptorW, ConvertStringSidToSidW,
    GetNamedSecurityInfoW, GetSecurityInfo, SDDL_REVISION_1, SE_FILE_OBJECT, SE_KERNEL_OBJECT,
};
use windows_sys::Win32::Security::{
    GetAce, GetTokenInformation, LookupAccountNameW, SidTypeAlias, TokenUser, ACCESS_ALLOWED_ACE, ACE_HEADER,
    ACL, DACL_SECURITY_INFORMATION, OWNER_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR, PSID,
    SECURITY_ATTRIBUTES, SID_NAME_USE, TOKEN_QUERY, TOKEN_USER,
};
use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};

use super::windows_acl::{
    Ace, ObjectSecurity, Sid, ACCESS_ALLOWED_ACE_TYPE, ACCESS_ALLOWED_CALLBACK_ACE_TYPE,
    ACCESS_DENIED_ACE_TYPE,
};

/// A self-relative security descriptor built from SDDL (allocated by Windows, freed with
/// `LocalFree`).
#[derive(Debug)]
pub struct SecurityDescriptor(PSECURITY_DESCRIPTOR);

// SAFETY: the descriptor is a heap block owned by this value: only read (by
// CreateNamedPipeW) after it was built, and freed once, on drop.
unsafe impl Send for SecurityDescriptor {}
// SAFETY: as for Send; nothing writes to it through `&self`.
unsafe impl Sync for SecurityDescriptor {}

impl SecurityDescriptor {
    pub fn from_sddl(sddl: &str) -> io::Result<Self> {
        let text = wide(sddl);
        let mut descriptor: PSECURITY_DESCRIPTOR = null_mut();
        // SAFETY: `text` is NUL-terminated; `descriptor` is a valid place for the result;
        // the size output is optional.
        let ok = unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(
                text.as_ptr(),
                SDDL_REVISION_1,
                &mut descriptor,
                null_mut(),
            )
        };
        if ok == 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("invalid security descriptor {sddl}: {e}")));
        }
        Ok(Self(descriptor))
    }

    /// Creates an instance of the pipe `path` with `options`, secured by this descriptor
    /// (it applies when the instance is the pipe's first).
    pub fn create_pipe(&self, options: &ServerOptions, path: &Path) -> io::Result<NamedPipeServer> {
        let mut attributes = SECURITY_ATTRIBUTES {
            nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
            lpSecurityDescriptor: self.0,
            bInheritHandle: 0,
        };
        // SAFETY: `attributes` is a valid SECURITY_ATTRIBUTES for the duration of the call,
        // and the descriptor it points to lives as long as `self`.
        unsafe { options.create_with_security_attributes_raw(path, (&raw mut attributes).cast()) }
    }
}

impl Drop for SecurityDescriptor {
    fn drop(&mut self) {
        // SAFETY: allocated by ConvertStringSecurityDescriptorToSecurityDescriptorW, freed once.
        unsafe { LocalFree(self.0) };
    }
}

/// The owner and DACL of the object behind `handle` (a pipe instance, a file).
pub fn handle_security(handle: &impl AsRawHandle) -> io::Result<ObjectSecurity> {
    // SAFETY: the handle is open for as long as `handle` is borrowed; GetSecurityInfo sets
    // the out-pointers as `owner_and_dacl` requires.
    unsafe {
        owner_and_dacl(|owner, dacl, descriptor| {
            GetSecurityInfo(
                handle.as_raw_handle() as HANDLE,
                SE_KERNEL_OBJECT,
                OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION,
                owner,
                null_mut(),
                dacl,
                null_mut(),
                descriptor,
            )
        })
    }
}

/// The owner and DACL of the file or folder at `path`.
pub fn path_security(path: &Path) -> io::Result<ObjectSecurity> {
    let name: Vec<u16> = path.as_os_str().encode_wide().chain(Some(0)).collect();
    // SAFETY: `name` is NUL-terminated and outlives the call; GetNamedSecurityInfoW sets the
    // out-pointers as `owner_and_dacl` requires.
    let security = unsafe {
        owner_and_dacl(|owner, dacl, descriptor| {
            GetNamedSecurityInfoW(
                name.as_ptr(),
                SE_FILE_OBJECT,
                OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION,
                owner,
                null_mut(),
                dacl,
                null_mut(),
                descriptor,
            )
        })
    };
    security.map_err(|e| {
        io::Error::new(e.kind(), format!("cannot read the access control of {}: {e}", path.display()))
    })
}

/// Calls `get` (GetSecurityInfo or GetNamedSecurityInfoW, asked for the owner and the DACL)
/// with fresh out-pointers for the owner, the DACL and the descriptor, and reads what it
/// returned into plain data, freeing the descriptor after.
///
/// # Safety
/// `get` returns a Win32 error code; on ERROR_SUCCESS it has set the owner and the DACL to
/// null or to places inside the LocalAlloc'ed descriptor it has set.
unsafe fn owner_and_dacl(
    get: impl FnOnce(&mut PSID, &mut *mut ACL, &mut PSECURITY_DESCRIPTOR) -> u32,
) -> io::Result<ObjectSecurity> {
    let (mut owner, mut dacl, mut descriptor): (PSID, *mut ACL, PSECURITY_DESCRIPTOR) =
        (null_mut(), null_mut(), null_mut());
    let status = get(&mut owner, &mut dacl, &mut descriptor);
    if status != ERROR_SUCCESS {
        return Err(io::Error::from_raw_os_error(status as i32));
    }
    let descriptor = LocalBox(descriptor);
    // SAFETY: `owner` and `dacl` point into `descriptor` (or are null), which is alive.
    let security = unsafe { read_security(owner, dacl) };
    drop(descriptor);
    security
}

/// Reads an owner SID and a DACL into plain data.
///
/// # Safety
/// `owner` is null or a valid SID; `dacl` is null or a valid ACL; both stay alive during
/// the call.
unsafe fn read_security(owner: PSID, dacl: *const ACL) -> io::Result<ObjectSecurity> {
    // SAFETY: the caller's promise about `owner`.
    let owner = if owner.is_null() { None } else { Some(unsafe { sid_string(owner) }?) };
    if dacl.is_null() {
        return Ok(ObjectSecurity { owner, dacl: None });
    }
    // SAFETY: `dacl` is a valid ACL (the caller's promise); its header says how many ACEs.
    let count = unsafe { (*dacl).AceCount };
    let mut aces = Vec::with_capacity(count.into());
    for index in 0..u32::from(count) {
        let mut ace: *mut c_void = null_mut();
        // SAFETY: `index` is below the ACL's ACE count; `ace` receives a pointer into the ACL.
        if unsafe { GetAce(dacl, index, &mut ace) } == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: every ACE starts with an ACE_HEADER, and ACEs are 4-byte aligned.
        let header = unsafe { *ace.cast::<ACE_HEADER>() };
        let sid = if [ACCESS_ALLOWED_ACE_TYPE, ACCESS_DENIED_ACE_TYPE, ACCESS_ALLOWED_CALLBACK_ACE_TYPE]
            .contains(&header.AceType)
        {
            // SAFETY: allowed, denied and callback ACEs share ACCESS_ALLOWED_ACE's layout (a
            // callback ACE's condition follows its SID); the SID starts at SidStart and lies
            // within the ACE.
            Some(unsafe { sid_string((&raw mut (*ace.cast::<ACCESS_ALLOWED_ACE>()).SidStart).cast()) }?)
        } else {
            None
        };
        // SAFETY: every ACE type has its access mask right after the header.
        let mask = unsafe { (*ace.cast::<ACCESS_ALLOWED_ACE>()).Mask };
        aces.push(Ace { kind: header.AceType, flags: header.AceFlags, mask, sid });
    }
    Ok(ObjectSecurity { owner, dacl: Some(aces) })
}

/// The SID of the local group `name`, or `None` when there is no such local group (a
/// domain group or a user of that name does not count).
pub fn local_group_sid(name: &str) -> io::Result<Option<Sid>> {
    // Qualified by this computer's name: unqualified, LookupAccountName also finds a
    // domain's group of that name, and a domain local group is an alias too.
    let qualified = match std::env::var("COMPUTERNAME") {
        Ok(computer) if !computer.is_empty() => format!("{computer}\\{name}"),
        _ => name.to_string(),
    };
    let Some((mut sid, kind)) = account_sid(&qualified)? else {
        return Ok(None);
    };
    if kind != SidTypeAlias {
        tracing::warn!(name, kind, "an account of this name exists, but it is not a local group");
        return Ok(None);
    }
    // SAFETY: `sid` holds the valid SID LookupAccountNameW wrote.
    unsafe { sid_string(sid.as_mut_ptr().cast()) }.map(Some)
}

/// The SID of account `name` (`user`, `DOMAIN\user`, a group) as a buffer, with its kind.
fn account_sid(name: &str) -> io::Result<Option<(Vec<u32>, SID_NAME_USE)>> {
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
    Ok(Some((sid, kind)))
}

/// The SID of account `name` (`user` or `DOMAIN\user`), or `None` when there is no such
/// account.
pub fn account_sid_of(name: &str) -> io::Result<Option<Sid>> {
    match account_sid(name)? {
        // SAFETY: `sid` holds the valid SID LookupAccountNameW wrote.
        Some((mut sid, _)) => unsafe { sid_string(sid.as_mut_ptr().cast()) }.map(Some),
        None => Ok(None),
    }
}

/// The user this process runs as.
pub fn current_user_sid() -> io::Result<Sid> {
    let mut token: HANDLE = null_mut();
    // SAFETY: the current-process pseudo-handle needs no closing; `token` receives a handle
    // that is closed below.
    if unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let mut len = 0u32;
    // SAFETY: a size query on the open token.
    unsafe { GetTokenInformation(token, TokenUser, null_mut(), 0, &mut len) };
    // u64 elements: TOKEN_USER holds pointers and must be pointer-aligned.
    let mut buffer = vec![0u64; (len as usize).div_ceil(8)];
    // SAFETY: `buffer` has at least `len` bytes.
    let ok = unsafe { GetTokenInformation(token, TokenUser, buffer.as_mut_ptr().cast(), len, &mut len) };
    let result = if ok == 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: GetTokenInformation wrote a TOKEN_USER, whose SID lies within `buffer`.
        unsafe { sid_string((*buffer.as_ptr().cast::<TOKEN_USER>()).User.Sid) }
    };
    // SAFETY: `token` was opened above and is closed once.
    unsafe { CloseHandle(token) };
    result
}

/// Creates the local group `name`. `Ok(false)`: it existed already.
pub fn create_local_group(name: &str, comment: &str) -> io::Result<bool> {
    let (mut name, mut comment) = (wide(name), wide(comment));
    let info = LOCALGROUP_INFO_1 { lgrpi1_name: name.as_mut_ptr(), lgrpi1_comment: comment.as_mut_ptr() };
    let mut bad_parameter = 0u32;
    // SAFETY: `info` points at NUL-terminated strings alive for the call; level 1 means
    // LOCALGROUP_INFO_1.
    let status = unsafe { NetLocalGroupAdd(null(), 1, (&raw const info).cast(), &mut bad_parameter) };
    match status {
        NERR_SUCCESS => Ok(true),
        NERR_GROUP_EXISTS | ERROR_ALIAS_EXISTS => Ok(false),
        code => Err(io::Error::from_raw_os_error(code as i32)),
    }
}

/// Adds `member` to the local group `group`. `Ok(false)`: it was a member already.
pub fn add_local_group_member(group: &str, member: &Sid) -> io::Result<bool> {
    let group = wide(group);
    let text = wide(member.as_str());
    let mut sid: PSID = null_mut();
    // SAFETY: `text` is NUL-terminated; `sid` receives a LocalAlloc'ed SID, freed below.
    if unsafe { ConvertStringSidToSidW(text.as_ptr(), &mut sid) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let sid = LocalBox(sid);
    let info = LOCALGROUP_MEMBERS_INFO_0 { lgrmi0_sid: sid.0 };
    // SAFETY: `group` is NUL-terminated; `info` is one LOCALGROUP_MEMBERS_INFO_0 (level 0)
    // whose SID is alive for the call.
    let status = unsafe { NetLocalGroupAddMembers(null(), group.as_ptr(), 0, (&raw const info).cast(), 1) };
    match status {
        NERR_SUCCESS => Ok(true),
        ERROR_MEMBER_IN_ALIAS => Ok(false),
        code => Err(io::Error::from_raw_os_error(code as i32)),
    }
}

/// The string form of a SID.
///
/// # Safety
/// `sid` is a valid SID, alive during the call.
unsafe fn sid_string(sid: PSID) -> io::Result<Sid> {
    let mut text: *mut u16 = null_mut();
    // SAFETY: the caller's promise about `sid`; `text` receives a LocalAlloc'ed string.
    if unsafe { ConvertSidToStringSidW(sid, &mut text) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let text = LocalBox(text.cast());
    // SAFETY: ConvertSidToStringSidW wrote a NUL-terminated UTF-16 string.
    let string = unsafe {
        let start = text.0.cast::<u16>();
        let len = (0..).take_while(|&i| *start.add(i) != 0).count();
        String::from_utf16_lossy(std::slice::from_raw_parts(start, len))
    };
    string.parse().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// A block allocated by Windows with LocalAlloc, freed on drop.
struct LocalBox(*mut c_void);

impl Drop for LocalBox {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the block was allocated by Windows for us and is freed once.
            unsafe { LocalFree(self.0) };
        }
    }
}

fn wide(text: &str) -> Vec<u16> {
    std::ffi::OsStr::new(text).encode_wide().chain(std::iter::once(0)).collect()
}
