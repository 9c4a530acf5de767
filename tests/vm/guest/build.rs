//! Link settings for the Windows image: no C runtime, our own entry point, and a
//! console subsystem version of 5.2 so that an NT 5.2 loader (ReactOS) accepts it.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "windows" && env == "msvc" {
        for arg in ["/ENTRY:mainCRTStartup", "/SUBSYSTEM:CONSOLE,5.02", "/NODEFAULTLIB"] {
            println!("cargo:rustc-link-arg-bins={arg}");
        }
    }
}
