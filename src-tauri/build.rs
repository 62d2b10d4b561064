fn main() {
    // The window's files (ui/dist) are embedded by `generate_context!`, which cargo does not
    // know to watch: a rebuilt UI must rebuild the app.
    println!("cargo:rerun-if-changed=../ui/dist");
    tauri_build::build()
}
