//! The image's import allow-list and ntsim's kernel exports cannot drift: every
//! function the driver may import from ntoskrnl/HAL has a host implementation in
//! ntsim (the link of the host tests proves the converse for what the code calls).

use std::collections::BTreeSet;
use std::path::Path;

/// `NAME` for every `#[unsafe(no_mangle)] pub unsafe extern "C" fn NAME` and
/// `#[unsafe(no_mangle)] pub static mut NAME` (data exports) in ntsim, plus the C
/// shim's variadic exports.
fn ntsim_exports() -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                let mut lines = text.lines().peekable();
                while let Some(line) = lines.next() {
                    if line.trim() == "#[unsafe(no_mangle)]"
                        && let Some(next) = lines.peek()
                        && let Some((rest, end)) = next
                            .trim()
                            .strip_prefix("pub unsafe extern \"C\" fn ")
                            .map(|r| (r, '('))
                            .or_else(|| next.trim().strip_prefix("pub static mut ").map(|r| (r, ':')))
                    {
                        out.insert(rest.split(end).next().unwrap().to_owned());
                    }
                }
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ntsim");
    let mut exports = BTreeSet::new();
    walk(&root.join("src"), &mut exports);
    let shim = std::fs::read_to_string(root.join("csrc/dbgprint.c")).unwrap();
    for name in ["DbgPrint", "DbgPrintEx"] {
        assert!(shim.contains(&format!("unsigned int {name}(")), "{name} missing from the C shim");
        exports.insert(name.to_owned());
    }
    exports
}

/// Function names of tests/cross/imports.allow (`name  # reason` lines).
fn allowed_imports() -> BTreeSet<String> {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cross/imports.allow")).unwrap();
    text.lines()
        .map(|l| l.split('#').next().unwrap().trim())
        .filter(|l| !l.is_empty())
        .map(|l| l.rsplit(['!', ' ', '\t']).next().unwrap().to_owned())
        .collect()
}

#[test]
fn every_allowed_kernel_import_is_implemented_by_ntsim() {
    let exports = ntsim_exports();
    assert!(exports.len() > 50, "parsing found only {} exports", exports.len());
    // The C runtime helpers rustc emits calls to are satisfied by the host's libc.
    let runtime = ["memcpy", "memset", "memmove", "memcmp"];
    let missing: Vec<String> =
        allowed_imports().into_iter().filter(|f| !runtime.contains(&f.as_str()) && !exports.contains(f)).collect();
    assert!(missing.is_empty(), "allowed imports without an ntsim implementation: {missing:?}");
}

#[test]
fn the_parsers_see_what_they_should() {
    let exports = ntsim_exports();
    assert!(exports.contains("IoCreateDevice") && exports.contains("DbgPrintEx"));
    assert!(exports.contains("PsThreadType") && exports.contains("IoDeviceObjectType"), "data exports");
    assert!(!exports.contains("IoCreateDeviceSecure"), "a wdmsec.lib routine is no kernel export");
    assert!(allowed_imports().contains("IoCreateDevice"));
}
