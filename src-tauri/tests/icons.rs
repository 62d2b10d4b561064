//! The app icons tauri.conf.json lists exist and are what their names say. tauri-build
//! needs an .ico to build for Windows at all (the executable's icon resource, and the
//! MSI's), and the macOS bundle takes its icon from the .icns; neither is used on Linux,
//! so nothing else here notices one missing or broken.

use std::path::{Path, PathBuf};

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

fn listed_icons() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tauri.conf.json")).unwrap()).unwrap();
    let icons = config["bundle"]["icon"].as_array().expect("tauri.conf.json has bundle.icon");
    icons.iter().map(|icon| dir.join(icon.as_str().expect("icon paths are strings"))).collect()
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read the icon {}: {e}", path.display()))
}

fn u16_le(bytes: &[u8], at: usize) -> usize {
    usize::from(u16::from_le_bytes([bytes[at], bytes[at + 1]]))
}

fn u32_le(bytes: &[u8], at: usize) -> usize {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize
}

fn u32_be(bytes: &[u8], at: usize) -> usize {
    u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize
}

/// Width and height from a PNG's IHDR.
fn png_size(bytes: &[u8]) -> (usize, usize) {
    assert!(bytes.starts_with(PNG_SIGNATURE) && bytes.len() >= 24 && &bytes[12..16] == b"IHDR");
    (u32_be(bytes, 16), u32_be(bytes, 20))
}

/// The sizes of the images in an ICO file, each checked to lie inside it and to be a PNG
/// or a bitmap.
fn ico_sizes(path: &Path, bytes: &[u8]) -> Vec<usize> {
    let name = path.display();
    assert!(bytes.len() >= 6 && bytes[..4] == [0, 0, 1, 0], "{name}: not an ICO file");
    let count = u16_le(bytes, 4);
    assert!(count > 0, "{name}: no images");
    (0..count)
        .map(|i| {
            let entry = 6 + 16 * i;
            assert!(bytes.len() >= entry + 16, "{name}: directory entry {i} cut off");
            // 0 means 256.
            let width = if bytes[entry] == 0 { 256 } else { usize::from(bytes[entry]) };
            let (size, offset) = (u32_le(bytes, entry + 8), u32_le(bytes, entry + 12));
            assert!(
                offset.checked_add(size).is_some_and(|end| end <= bytes.len()),
                "{name}: image {i} cut off"
            );
            let image = &bytes[offset..offset + size];
            if image.starts_with(PNG_SIGNATURE) {
                assert_eq!(png_size(image).0, width, "{name}: image {i}'s PNG");
            } else {
                assert!(
                    image.len() >= 4 && u32_le(image, 0) == 40,
                    "{name}: image {i} is neither PNG nor bitmap"
                );
            }
            width
        })
        .collect()
}

/// The element types of an ICNS file, each checked to lie inside it.
fn icns_types(path: &Path, bytes: &[u8]) -> Vec<String> {
    let name = path.display();
    assert!(bytes.len() >= 8 && &bytes[..4] == b"icns", "{name}: not an ICNS file");
    assert_eq!(u32_be(bytes, 4), bytes.len(), "{name}: length in the header");
    let mut types = Vec::new();
    let mut at = 8;
    while at < bytes.len() {
        assert!(at + 8 <= bytes.len(), "{name}: element header cut off at {at}");
        let length = u32_be(bytes, at + 4);
        assert!(length >= 8 && at + length <= bytes.len(), "{name}: element at {at} has length {length}");
        types.push(String::from_utf8_lossy(&bytes[at..at + 4]).into_owned());
        at += length;
    }
    types
}

#[test]
fn the_listed_icons_are_valid_and_cover_every_system() {
    let icons = listed_icons();
    let with_extension = |ext: &str| icons.iter().filter(|p| p.extension().is_some_and(|e| e == ext)).count();
    assert!(with_extension("ico") > 0, "no .ico for Windows in bundle.icon: {icons:?}");
    assert!(with_extension("icns") > 0, "no .icns for macOS in bundle.icon: {icons:?}");
    assert!(with_extension("png") > 0, "no .png for Linux in bundle.icon: {icons:?}");
    for path in &icons {
        let bytes = read(path);
        let name = path.display();
        match path.extension().and_then(|e| e.to_str()) {
            Some("png") => {
                let (width, height) = png_size(&bytes);
                assert!(width > 0 && width == height, "{name}: {width}x{height}, not square");
            }
            Some("ico") => {
                let sizes = ico_sizes(path, &bytes);
                // The taskbar and title bar, and Explorer's large icons.
                for wanted in [16, 32, 256] {
                    assert!(sizes.contains(&wanted), "{name}: no {wanted}x{wanted} image in {sizes:?}");
                }
            }
            Some("icns") => {
                let types = icns_types(path, &bytes);
                // 512x512 (ic09) or 1024x1024 (ic10): what Finder and the Dock show large.
                assert!(
                    types.iter().any(|t| t == "ic09" || t == "ic10"),
                    "{name}: no large image in {types:?}"
                );
            }
            _ => panic!("{name}: an icon tauri does not take"),
        }
    }
}

#[test]
fn broken_icons_are_caught() {
    let path = Path::new("test");
    let truncated_ico = [0, 0, 1, 0, 1, 0, 32, 32, 0, 0, 1, 0, 32, 0, 0xff, 0, 0, 0, 22, 0, 0, 0];
    assert!(std::panic::catch_unwind(|| ico_sizes(path, &truncated_ico)).is_err());
    assert!(std::panic::catch_unwind(|| ico_sizes(path, PNG_SIGNATURE)).is_err());
    let wrong_length = b"icns\0\0\0\x20ic09\0\0\0\x08";
    assert!(std::panic::catch_unwind(|| icns_types(path, wrong_length)).is_err());
    let overlong_element = b"icns\0\0\0\x10ic09\0\0\0\x09";
    assert!(std::panic::catch_unwind(|| icns_types(path, overlong_element)).is_err());
    assert_eq!(icns_types(path, b"icns\0\0\0\x10ic09\0\0\0\x08"), ["ic09"]);
}
