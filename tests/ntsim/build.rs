//! Compiles the C shim for the variadic DbgPrint/DbgPrintEx exports.
fn main() {
    println!("cargo::rerun-if-changed=csrc/dbgprint.c");
    cc::Build::new().file("csrc/dbgprint.c").warnings(true).compile("ntsim_dbgprint");
}
