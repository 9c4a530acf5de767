//! Build script of the stagedrv driver.
//!
//! For a Windows target it lets `wdk-build` configure the kernel-mode link (WDK
//! library paths, `/DRIVER`, `/ENTRY:DriverEntry`, ...) and the `wdk-sys` cfgs.
//! For any other target (host builds used by the tests) it does nothing.
//!
//! Cargo matches build-dependency platforms against the *host*, so `wdk-build`
//! is only available on Windows hosts or when the host cfg `wdk_linux_cross` is
//! set (tests/cross/build-sys.sh does that for the Linux cross-build).

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    // A mutant build (tests/mutants.sh) re-introduces one classic bug. Only this
    // package gets the cfg, so every mutant shares the dependencies' builds.
    println!("cargo::rerun-if-env-changed=STAGEDRV_MUTANT");
    if let Ok(mutant) = std::env::var("STAGEDRV_MUTANT") {
        println!("cargo::rustc-cfg=stagedrv_mutant=\"{mutant}\"");
    }
    // `cfg!(windows)` would describe the host; the target comes from cargo.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("windows") {
        configure_driver_link();
    }
}

#[cfg(any(windows, wdk_linux_cross))]
fn configure_driver_link() {
    if let Err(error) = wdk_build::configure_wdk_binary_build() {
        panic!("wdk-build could not configure the driver build: {error}");
    }
    // Write the PE header checksum (link.exe and lld-link only do so with
    // /RELEASE); the kernel's loader and our image check require a valid one.
    println!("cargo::rustc-cdylib-link-arg=/RELEASE");
    // Mark the image compatible with CET shadow stacks (Windows 11's kernel-mode
    // hardware-enforced stack protection): the driver only ever returns to its caller
    // (no unwinding with panic=abort, no longjmp, no assembly). README, "CET".
    println!("cargo::rustc-cdylib-link-arg=/CETCOMPAT");
}

#[cfg(not(any(windows, wdk_linux_cross)))]
fn configure_driver_link() {
    panic!(
        "building stagedrv for Windows needs the wdk-build build-dependency: build on a \
         Windows host with the WDK, or on Linux with tests/cross/build-sys.sh"
    );
}
