//! Negotiate (SPNEGO over Kerberos) tokens for logging in to the parent,
//! made by the system's MIT Kerberos GSS-API library
//! (`libgssapi_krb5.so.2`). It is loaded when a parent first needs a
//! Negotiate login, not linked: modgate builds with no Kerberos headers or
//! C toolchain, and a machine without the library gets an error that says
//! which package to install instead of a binary that will not start.
//!
//! The identity is modgate's own: the keytab named by `upstream.keytab`
//! (its tickets kept in memory, per config), else the ticket cache of the
//! user running modgate (`KRB5CCNAME`, `kinit`). The service is
//! `HTTP@<parent host>`, as browsers and curl name it. The calls block (the
//! first one asks the KDC): callers run them off the async threads.

use std::ffi::{CString, c_char, c_int, c_void};
use std::path::Path;
use std::ptr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;

/// GSS-API's `OM_uint32`.
type Status = u32;
type Handle = *mut c_void;

#[repr(C)]
struct Buffer {
    length: usize,
    value: *mut c_void,
}

impl Buffer {
    fn empty() -> Self {
        Buffer {
            length: 0,
            value: ptr::null_mut(),
        }
    }
}

#[repr(C)]
struct Oid {
    length: u32,
    elements: *const u8,
}

/// One entry of a credential store (`gss_key_value_element_desc`).
#[repr(C)]
struct KeyValue {
    key: *const c_char,
    value: *const c_char,
}

#[repr(C)]
struct KeyValueSet {
    count: u32,
    elements: *const KeyValue,
}

/// 1.2.840.113554.1.2.1.4, `GSS_C_NT_HOSTBASED_SERVICE`: `service@host`.
const HOSTBASED_SERVICE: [u8; 10] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x01, 0x04];
/// 1.3.6.1.5.5.2, SPNEGO, the mechanism HTTP's Negotiate carries (RFC 4559).
const SPNEGO: [u8; 6] = [0x2b, 0x06, 0x01, 0x05, 0x05, 0x02];
const INITIATE: c_int = 1;
const GSS_CODE: c_int = 1;
const MECH_CODE: c_int = 2;
const CONTINUE_NEEDED: Status = 1;
/// The routine-error and calling-error bits of a major status.
const ERROR_BITS: Status = 0xffff_0000;

type ImportName =
    unsafe extern "C" fn(*mut Status, *const Buffer, *const Oid, *mut Handle) -> Status;
type AcquireCredFrom = unsafe extern "C" fn(
    *mut Status,
    Handle,
    Status,
    *const c_void,
    c_int,
    *const KeyValueSet,
    *mut Handle,
    *mut c_void,
    *mut Status,
) -> Status;
type InitSecContext = unsafe extern "C" fn(
    *mut Status,
    Handle,
    *mut Handle,
    Handle,
    *const Oid,
    Status,
    Status,
    *const c_void,
    *const Buffer,
    *mut *const Oid,
    *mut Buffer,
    *mut Status,
    *mut Status,
) -> Status;
type ReleaseHandle = unsafe extern "C" fn(*mut Status, *mut Handle) -> Status;
type ReleaseBuffer = unsafe extern "C" fn(*mut Status, *mut Buffer) -> Status;
type DeleteSecContext = unsafe extern "C" fn(*mut Status, *mut Handle, *mut Buffer) -> Status;
type DisplayStatus = unsafe extern "C" fn(
    *mut Status,
    Status,
    c_int,
    *const Oid,
    *mut Status,
    *mut Buffer,
) -> Status;

/// The library's functions modgate calls (RFC 2744, and MIT's
/// `gss_acquire_cred_from` for a keytab of modgate's own).
struct Api {
    import_name: ImportName,
    acquire_cred_from: AcquireCredFrom,
    init_sec_context: InitSecContext,
    release_name: ReleaseHandle,
    release_cred: ReleaseHandle,
    release_buffer: ReleaseBuffer,
    delete_sec_context: DeleteSecContext,
    display_status: DisplayStatus,
    /// Kept loaded for the life of the process.
    _library: libloading::Library,
}

const LIBRARY: &str = "libgssapi_krb5.so.2";

/// The library, loaded once (or why it cannot be).
fn api() -> Result<&'static Api, String> {
    static API: OnceLock<Result<Api, String>> = OnceLock::new();
    API.get_or_init(load).as_ref().map_err(Clone::clone)
}

fn load() -> Result<Api, String> {
    let missing = |e: libloading::Error| {
        format!("Negotiate logins need MIT Kerberos's {LIBRARY} (Debian: libgssapi-krb5-2): {e}")
    };
    // SAFETY: loading MIT Kerberos runs only its own initialisers; every
    // symbol below is read with its C signature from RFC 2744 / MIT's
    // gssapi_ext.h, and the library stays loaded (it lives in a static).
    unsafe {
        let library = libloading::Library::new(LIBRARY).map_err(missing)?;
        Ok(Api {
            import_name: *library.get(b"gss_import_name\0").map_err(missing)?,
            acquire_cred_from: *library.get(b"gss_acquire_cred_from\0").map_err(missing)?,
            init_sec_context: *library.get(b"gss_init_sec_context\0").map_err(missing)?,
            release_name: *library.get(b"gss_release_name\0").map_err(missing)?,
            release_cred: *library.get(b"gss_release_cred\0").map_err(missing)?,
            release_buffer: *library.get(b"gss_release_buffer\0").map_err(missing)?,
            delete_sec_context: *library.get(b"gss_delete_sec_context\0").map_err(missing)?,
            display_status: *library.get(b"gss_display_status\0").map_err(missing)?,
            _library: library,
        })
    }
}

/// Who modgate is to the KDC: a keytab's first principal (tickets in a
/// memory cache of this identity's own), or the running user's tickets.
#[derive(Debug)]
pub struct Identity {
    keytab: Option<CString>,
    /// `MEMORY:modgate-N`: one per identity, so a reload with a new keytab
    /// never uses the old one's tickets.
    ccache: CString,
    /// One token at a time: the first asks the KDC once for everyone, the
    /// others find its tickets in the cache.
    one_at_a_time: std::sync::Mutex<()>,
}

impl Identity {
    pub fn new(keytab: Option<&Path>) -> Result<Self, String> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let keytab = keytab
            .map(|p| CString::new(p.as_os_str().as_encoded_bytes()))
            .transpose()
            .map_err(|_| "upstream.keytab has a NUL byte in its path".to_string())?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let ccache = CString::new(format!("MEMORY:modgate-{}-{n}", std::process::id()))
            .map_err(|e| e.to_string())?;
        Ok(Identity {
            keytab,
            ccache,
            one_at_a_time: Default::default(),
        })
    }

    /// The `Proxy-Authorization` value (`Negotiate <token>`) for `host`'s
    /// parent: a fresh SPNEGO token for `HTTP@host`. Blocks.
    pub fn authorization(&self, host: &str) -> Result<String, String> {
        let api = api()?;
        let _turn = self.one_at_a_time.lock().unwrap_or_else(|e| e.into_inner());
        let service = format!("HTTP@{host}");
        let name = Name::import(api, &service)?;
        let cred = Cred::acquire(api, self)?;
        let token = first_token(api, &cred, &name)
            .map_err(|why| format!("no Kerberos ticket for HTTP/{host}: {why}{}", hint(&why)))?;
        let token = base64::engine::general_purpose::STANDARD.encode(token);
        Ok(format!("Negotiate {token}"))
    }
}

/// The first (and, for Kerberos, only) token of a context toward `name`.
fn first_token(api: &Api, cred: &Cred, name: &Name) -> Result<Vec<u8>, String> {
    let mut context: Handle = ptr::null_mut();
    let mut output = Buffer::empty();
    let mut minor = 0;
    let spnego = oid(&SPNEGO);
    // SAFETY: every pointer is to a live local or a handle from the
    // library; no delegation is asked for (flags 0), no channel bindings.
    let major = unsafe {
        (api.init_sec_context)(
            &mut minor,
            cred.0,
            &mut context,
            name.0,
            &spnego,
            0,
            0,
            ptr::null(),
            ptr::null(),
            ptr::null_mut(),
            &mut output,
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    // Complete, or (SPNEGO) waiting for the parent's answer: a token either way.
    let token =
        if major & ERROR_BITS == 0 && major & !CONTINUE_NEEDED == 0 && !output.value.is_null() {
            // SAFETY: the library filled `output` with `length` bytes.
            Ok(
                unsafe { std::slice::from_raw_parts(output.value as *const u8, output.length) }
                    .to_vec(),
            )
        } else {
            Err(describe(api, major, minor))
        };
    // SAFETY: releasing what the library allocated, once.
    unsafe {
        (api.release_buffer)(&mut minor, &mut output);
        if !context.is_null() {
            (api.delete_sec_context)(&mut minor, &mut context, ptr::null_mut());
        }
    }
    token
}

fn oid(bytes: &[u8]) -> Oid {
    Oid {
        length: bytes.len() as u32,
        elements: bytes.as_ptr(),
    }
}

/// An imported service name, released on drop.
struct Name<'a>(Handle, &'a Api);

impl<'a> Name<'a> {
    fn import(api: &'a Api, service: &str) -> Result<Self, String> {
        let buffer = Buffer {
            length: service.len(),
            value: service.as_ptr() as *mut c_void,
        };
        let kind = oid(&HOSTBASED_SERVICE);
        let (mut minor, mut name) = (0, ptr::null_mut());
        // SAFETY: `buffer` points at `service`, which outlives the call;
        // the library copies it.
        let major = unsafe { (api.import_name)(&mut minor, &buffer, &kind, &mut name) };
        if major & ERROR_BITS != 0 {
            return Err(format!(
                "bad service name {service}: {}",
                describe(api, major, minor)
            ));
        }
        Ok(Name(name, api))
    }
}

impl Drop for Name<'_> {
    fn drop(&mut self) {
        let mut minor = 0;
        // SAFETY: a name from gss_import_name, released once.
        unsafe { (self.1.release_name)(&mut minor, &mut self.0) };
    }
}

/// Credentials to start contexts with, released on drop.
struct Cred<'a>(Handle, &'a Api);

impl<'a> Cred<'a> {
    /// From the keytab (into the identity's memory cache), or the default
    /// ticket cache when there is no keytab.
    fn acquire(api: &'a Api, identity: &Identity) -> Result<Self, String> {
        let Some(keytab) = &identity.keytab else {
            return Ok(Cred(ptr::null_mut(), api)); // GSS_C_NO_CREDENTIAL
        };
        let entries = [
            KeyValue {
                key: c"client_keytab".as_ptr(),
                value: keytab.as_ptr(),
            },
            KeyValue {
                key: c"ccache".as_ptr(),
                value: identity.ccache.as_ptr(),
            },
        ];
        let store = KeyValueSet {
            count: entries.len() as u32,
            elements: entries.as_ptr(),
        };
        let (mut minor, mut cred) = (0, ptr::null_mut());
        // SAFETY: `store` and its strings outlive the call; no name (the
        // keytab's first principal), every mechanism, to initiate.
        let major = unsafe {
            (api.acquire_cred_from)(
                &mut minor,
                ptr::null_mut(),
                0,
                ptr::null(),
                INITIATE,
                &store,
                &mut cred,
                ptr::null_mut(),
                ptr::null_mut(),
            )
        };
        if major & ERROR_BITS != 0 {
            let why = describe(api, major, minor);
            return Err(format!(
                "cannot use the keytab in upstream.keytab: {why}{}",
                hint(&why)
            ));
        }
        Ok(Cred(cred, api))
    }
}

impl Drop for Cred<'_> {
    fn drop(&mut self) {
        if self.0.is_null() {
            return;
        }
        let mut minor = 0;
        // SAFETY: a credential from gss_acquire_cred_from, released once.
        unsafe { (self.1.release_cred)(&mut minor, &mut self.0) };
    }
}

/// What to do about the failures an admin meets first.
fn hint(why: &str) -> &'static str {
    if why.contains("integrity check failed") || why.contains("Preauthentication failed") {
        " (the KDC has another key for this principal: export the keytab again)"
    } else if why.contains("not found in Kerberos database") {
        " (the KDC does not know this principal)"
    } else if why.contains("Cannot contact any KDC") {
        " (check the realm's KDC in krb5.conf)"
    } else {
        ""
    }
}

/// The library's words for a failure: the GSS-API status, then the
/// mechanism's (Kerberos's) own, which says what really went wrong.
fn describe(api: &Api, major: Status, minor: Status) -> String {
    let mut parts = messages(api, major, GSS_CODE);
    if minor != 0 {
        parts.extend(messages(api, minor, MECH_CODE));
    }
    parts.retain(|p| !p.is_empty() && !p.contains("Minor code may provide"));
    if parts.is_empty() {
        return format!("GSS-API status {major:#x}/{minor}");
    }
    parts.join(": ")
}

fn messages(api: &Api, status: Status, kind: c_int) -> Vec<String> {
    let mut found = Vec::new();
    let mut context = 0;
    for _ in 0..8 {
        let (mut minor, mut text) = (0, Buffer::empty());
        // SAFETY: `text` is filled by the library and released below.
        let major = unsafe {
            (api.display_status)(
                &mut minor,
                status,
                kind,
                ptr::null(),
                &mut context,
                &mut text,
            )
        };
        if major & ERROR_BITS != 0 {
            break;
        }
        if !text.value.is_null() {
            // SAFETY: `length` bytes the library wrote.
            let bytes = unsafe { std::slice::from_raw_parts(text.value as *const u8, text.length) };
            found.push(String::from_utf8_lossy(bytes).trim().to_string());
        }
        // SAFETY: released once.
        unsafe { (api.release_buffer)(&mut minor, &mut text) };
        if context == 0 {
            break;
        }
    }
    found
}
