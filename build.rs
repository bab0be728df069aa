fn main() {
    napi_build::setup();
    // Never unloaded once loaded (`-z nodelete`): node unloads an addon when the last worker thread
    // that loaded it exits, while the runtime's threads and Rust's and mimalloc's thread-local
    // destructors may still run its code, and a later worker's load then crashed the process.
    // The fix napi-rs recommends (rust-lang/rust#91979); ELF linkers only (macOS never unloads a
    // dylib with thread-locals; Windows keeps its own rules).
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "linux" || os == "freebsd" || os == "android" {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    }
}
