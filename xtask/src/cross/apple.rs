//! The Apple targets' C build scripts, without an Apple SDK.
//!
//! Only type-checking runs for macOS (`cargo clippy`), but build scripts still compile C:
//! ring's does, for rustls. The `cc` crate would call gcc with `-arch`; clang with a target
//! compiles for Apple on Linux, and ring needs only four SDK headers, whose few
//! declarations are written here as stand-ins. Objective-C (mac-notification-sys under the
//! app's notifications, objc2-exception-helper under objc2, for the app) cannot be compiled without
//! the SDK: the compiler wrapper turns each such source into an empty object and says so.
//! Nothing built this way is linked or run, and the Rust is type-checked all the same.

use std::path::{Path, PathBuf};

use anyhow::Result;

/// Debian packages: clang for the target, llvm-ar for the archive cc makes.
pub const PACKAGES: &[&str] = &["clang", "llvm"];

/// Stand-ins for the SDK headers that ring's C code includes.
const HEADERS: &[(&str, &str)] = &[
    (
        "TargetConditionals.h",
        "#pragma once\n#define TARGET_OS_MAC 1\n#define TARGET_OS_OSX 1\n#define TARGET_OS_IPHONE 0\n\
         #define TARGET_OS_IOS 0\n#define TARGET_OS_TV 0\n#define TARGET_OS_WATCH 0\n\
         #define TARGET_OS_SIMULATOR 0\n",
    ),
    ("assert.h", "#pragma once\n#define assert(expr) ((void)0)\n"),
    (
        "string.h",
        "#pragma once\n#include <stddef.h>\nvoid *memcpy(void *, const void *, size_t);\n\
         void *memmove(void *, const void *, size_t);\nvoid *memset(void *, int, size_t);\n\
         int memcmp(const void *, const void *, size_t);\nsize_t strlen(const char *);\n",
    ),
    ("stdlib.h", "#pragma once\n#include <stddef.h>\nvoid abort(void);\n"),
];

/// clang, except for Objective-C sources (`.m`), which import Apple's frameworks: those
/// become an empty object of the right target, and their paths go to [`EMPTY_OBJECTS_LOG`]
/// (cargo hides what a dependency's build script prints).
const CC_WRAPPER: &str = r#"#!/bin/sh
# Made by `cargo xtask cross` (xtask/src/cross/apple.rs): type-checking only, never linked.
EMPTY_OBJECTS_LOG=empty-objects.log
out= objc=
prev=
for arg in "$@"; do
    case "$arg" in *.m) objc=$arg ;; esac
    [ "$prev" = "-o" ] && out=$arg
    prev=$arg
done
if [ -n "$objc" ] && [ -n "$out" ]; then
    # Build scripts run in their crate's folder, which names the crate in the report.
    case "$objc" in /*) ;; *) objc="$PWD/$objc" ;; esac
    echo "$objc" >> "$(dirname "$0")/$EMPTY_OBJECTS_LOG"
    exec clang --target=arm64-apple-macosx -x c -c /dev/null -o "$out"
fi
exec clang "$@"
"#;

/// Beside the wrapper: the sources it replaced, one a line, kept across runs (a cached
/// build does not run the wrapper again).
const EMPTY_OBJECTS_LOG: &str = "empty-objects.log";

/// The sources that stand as empty objects, for the report: "mac-notification-sys-0.6.15/objc/notify.m".
pub fn empty_objects(tools_dir: &Path) -> Vec<String> {
    let log = std::fs::read_to_string(tools_dir.join("apple-sdk-standin").join(EMPTY_OBJECTS_LOG))
        .unwrap_or_default();
    let mut sources: Vec<String> = log.lines().map(short_source).collect();
    sources.sort();
    sources.dedup();
    sources
}

/// A source's path from its crate's folder on: registry paths are long and say nothing more.
fn short_source(path: &str) -> String {
    let parts: Vec<&str> = path.trim().split('/').collect();
    match parts
        .iter()
        .rposition(|part| part.contains('-') && part.chars().last().is_some_and(|c| c.is_ascii_digit()))
    {
        Some(crate_dir) => parts[crate_dir..].join("/"),
        None => path.trim().to_string(),
    }
}

/// Writes the stand-in headers and the compiler wrapper under `tools_dir` and returns the
/// C environment for `target` (`CC_<target>`, `CFLAGS_<target>`, `AR_<target>`, as the cc
/// crate reads them).
pub fn c_env(tools_dir: &Path, target: &str) -> Result<Vec<(String, String)>> {
    let include = write_headers(tools_dir)?;
    let cc = write_if_changed(&tools_dir.join("apple-sdk-standin/cc"), CC_WRAPPER)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cc, std::fs::Permissions::from_mode(0o755))?;
    }
    let suffix = target.replace('-', "_");
    // -nostdlibinc: clang's own headers (stdint.h, stddef.h) but not Debian's glibc ones.
    let cflags = format!("-ffreestanding -nostdlibinc -isystem {}", include.display());
    Ok(vec![
        (format!("CC_{suffix}"), cc.display().to_string()),
        (format!("CFLAGS_{suffix}"), cflags),
        (format!("AR_{suffix}"), "llvm-ar".into()),
    ])
}

fn write_headers(tools_dir: &Path) -> Result<PathBuf> {
    let include = tools_dir.join("apple-sdk-standin/include");
    std::fs::create_dir_all(&include)?;
    for (name, text) in HEADERS {
        let text =
            format!("/* Stand-in for the Apple SDK's {name}: type-checking only, never linked. */\n{text}");
        write_if_changed(&include.join(name), &text)?;
    }
    Ok(include)
}

/// Unchanged files keep their mtime, so cargo does not rerun the build scripts.
fn write_if_changed(path: &Path, text: &str) -> Result<PathBuf> {
    if std::fs::read_to_string(path).ok().as_deref() != Some(text) {
        std::fs::write(path, text)?;
    }
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_source_is_named_from_its_crate_on() {
        let registry = "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/mac-notification-sys-0.6.15/objc/notify.m";
        assert_eq!(short_source(registry), "mac-notification-sys-0.6.15/objc/notify.m");
        assert_eq!(short_source("objc/notify.m"), "objc/notify.m");
    }

    #[test]
    fn the_wrapper_logs_where_the_report_reads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("apple-sdk-standin")).unwrap();
        assert!(CC_WRAPPER.contains(&format!("EMPTY_OBJECTS_LOG={EMPTY_OBJECTS_LOG}")));
        let log = dir.path().join("apple-sdk-standin").join(EMPTY_OBJECTS_LOG);
        std::fs::write(&log, "/r/src/x-1.0.2/a.m\n/r/src/x-1.0.2/a.m\n/r/src/y-0.1.0/objc/b.m\n").unwrap();
        assert_eq!(empty_objects(dir.path()), ["x-1.0.2/a.m", "y-0.1.0/objc/b.m"]);
    }
}
