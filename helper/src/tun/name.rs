//! Which name the helper asks for its TUN device, per operating system. Pure, so every
//! system's rules are tested on any of them.
//!
//! * Linux: any valid interface name; `trellis0` by default.
//! * macOS: the kernel names utun devices itself, `utunN`, and the tun crate accepts
//!   nothing else. `utun` (the default, as in wireguard-go) lets the system pick a free
//!   one; `utunN` asks for that one.
//! * Windows: the name of the wintun adapter, which Windows shows in its network
//!   settings; `Trellis` by default.
//!
//! The name the device really got is read back from it (see `TunDevice::name`).

/// The systems the helper runs on, as far as TUN names go.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Platform {
    Linux,
    MacOs,
    Windows,
}

impl Platform {
    #[cfg(target_os = "macos")]
    pub const CURRENT: Platform = Platform::MacOs;
    #[cfg(windows)]
    pub const CURRENT: Platform = Platform::Windows;
    #[cfg(not(any(target_os = "macos", windows)))]
    pub const CURRENT: Platform = Platform::Linux;

    /// The name asked for when the user gives none (`--tun`, `TRELLIS_TUN`).
    pub const fn default_tun_name(self) -> &'static str {
        match self {
            Platform::Linux => "trellis0",
            Platform::MacOs => MACOS_ANY_UTUN,
            Platform::Windows => "Trellis",
        }
    }
}

/// On macOS: let the system pick a free utun.
const MACOS_ANY_UTUN: &str = "utun";
/// Linux interface names are at most 15 bytes (IFNAMSIZ, 16, with the terminating NUL).
/// (On macOS the largest utun unit, a u32, keeps names shorter.)
const MAX_LINUX_NAME_BYTES: usize = 15;
/// wintun takes up to MAX_ADAPTER_NAME - 1 UTF-16 units (128 with the terminating NUL).
const MAX_WINDOWS_NAME_UNITS: usize = 127;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{name:?} cannot name the TUN device on {platform}: {why}")]
pub struct InvalidTunName {
    pub name: String,
    pub platform: &'static str,
    pub why: &'static str,
}

/// What to ask the tun crate for: `Some(name)`, or `None` for the system to choose.
/// Checked here rather than left to the crate or the kernel, whose errors do not say
/// what a valid name is.
pub fn requested_name(platform: Platform, name: &str) -> Result<Option<&str>, InvalidTunName> {
    let invalid = |platform, why| Err(InvalidTunName { name: name.to_string(), platform, why });
    match platform {
        Platform::Linux => {
            // The kernel's rules (dev_valid_name).
            if name.is_empty() || name == "." || name == ".." {
                invalid("Linux", "not an interface name")
            } else if name.len() > MAX_LINUX_NAME_BYTES {
                invalid("Linux", "interface names have at most 15 bytes")
            } else if name.chars().any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace()) {
                invalid("Linux", "interface names have no '/', ':' or spaces")
            } else {
                Ok(Some(name))
            }
        }
        Platform::MacOs => {
            const WHY: &str =
                "macOS names TUN devices utunN; use utun (the default: the system picks a free one) or utun<N>";
            let Some(unit) = name.strip_prefix(MACOS_ANY_UTUN) else { return invalid("macOS", WHY) };
            if unit.is_empty() {
                return Ok(None);
            }
            // Only plain decimal digits: u32's parser also takes "+1", and "utun01" would
            // come out as utun1. The tun crate asks the kernel for unit N + 1.
            let digits = unit.bytes().all(|b| b.is_ascii_digit()) && (unit == "0" || !unit.starts_with('0'));
            if !digits || !unit.parse::<u32>().is_ok_and(|n| n < u32::MAX) {
                invalid("macOS", WHY)
            } else {
                Ok(Some(name))
            }
        }
        Platform::Windows => {
            if name.trim().is_empty() {
                invalid("Windows", "the adapter needs a name")
            } else if name.encode_utf16().count() > MAX_WINDOWS_NAME_UNITS {
                invalid("Windows", "adapter names have at most 127 characters")
            } else if name.chars().any(char::is_control) {
                invalid("Windows", "adapter names have no control characters")
            } else {
                Ok(Some(name))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_system_has_a_default_it_accepts() {
        assert_eq!(Platform::Linux.default_tun_name(), "trellis0");
        assert_eq!(Platform::MacOs.default_tun_name(), "utun");
        assert_eq!(Platform::Windows.default_tun_name(), "Trellis");
        assert_eq!(requested_name(Platform::Linux, "trellis0"), Ok(Some("trellis0")));
        assert_eq!(requested_name(Platform::MacOs, "utun"), Ok(None), "macOS picks the utun");
        assert_eq!(requested_name(Platform::Windows, "Trellis"), Ok(Some("Trellis")));
        let current = Platform::CURRENT.default_tun_name();
        assert!(requested_name(Platform::CURRENT, current).is_ok(), "{current}");
    }

    #[test]
    fn macos_takes_only_utun_names() {
        assert_eq!(requested_name(Platform::MacOs, "utun0"), Ok(Some("utun0")));
        assert_eq!(requested_name(Platform::MacOs, "utun12"), Ok(Some("utun12")));
        for bad in ["trellis0", "", "tun0", "utunx", "utun+1", "utun-1", "utun01", "utun 1", "utun4294967295"]
        {
            let err = requested_name(Platform::MacOs, bad).unwrap_err();
            assert_eq!(err.name, bad);
            assert!(err.to_string().contains("utunN"), "{err}");
        }
        assert_eq!(requested_name(Platform::MacOs, "utun4294967294"), Ok(Some("utun4294967294")));
        assert!(requested_name(Platform::MacOs, "utun99999999999").is_err(), "beyond u32");
    }

    #[test]
    fn linux_follows_the_kernels_rules() {
        assert_eq!(requested_name(Platform::Linux, "trtest0"), Ok(Some("trtest0")));
        assert_eq!(requested_name(Platform::Linux, "a23456789012345"), Ok(Some("a23456789012345")));
        for bad in ["", ".", "..", "a234567890123456", "tr/0", "tr:0", "tr 0", "tr\t0"] {
            assert!(requested_name(Platform::Linux, bad).is_err(), "{bad:?}");
        }
        // utunN is a fine name on Linux, and means that name there.
        assert_eq!(requested_name(Platform::Linux, "utun"), Ok(Some("utun")));
    }

    #[test]
    fn windows_takes_adapter_names() {
        assert_eq!(requested_name(Platform::Windows, "Trellis VPN"), Ok(Some("Trellis VPN")));
        assert_eq!(requested_name(Platform::Windows, "trellis0"), Ok(Some("trellis0")));
        let longest = "é".repeat(127);
        assert_eq!(requested_name(Platform::Windows, &longest), Ok(Some(longest.as_str())));
        for bad in [String::new(), "  ".into(), "é".repeat(128), "a\nb".into()] {
            assert!(requested_name(Platform::Windows, &bad).is_err(), "{bad:?}");
        }
    }
}
