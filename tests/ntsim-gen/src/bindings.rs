//! The single bindgen run over mingw-w64's DDK headers.
//!
//! The builder settings follow the WDM configuration of `wdk-build` 0.6.0 (the
//! crate that generates `wdk-sys` 0.5's bindings), with one deliberate change:
//! C integer types come from a module of Windows widths instead of
//! `core::ffi`, so that the output has Windows layouts when it is compiled for
//! a Linux host (`long` is 32 bits on Windows, 64 bits on Linux).

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
};

use bindgen::callbacks::{MacroParsingBehavior, ParseCallbacks};

/// Path, as seen from inside the `ntsim` crate, of the module that defines the
/// C types with Windows widths (hand-written in `wdk_sys/mod.rs`).
///
/// It has to be absolute: bindgen also refers to C types from inside the
/// modules it generates for enums.
pub const CTYPES_PREFIX: &str = "crate::wdk_sys::ctypes";

/// Headers that `wdk-build` 0.6.0 includes for a WDM driver, in its order.
pub const WDM_HEADERS: [&str; 3] = ["ntifs.h", "ntddk.h", "ntstrsafe.h"];

/// Declarations the WDK's `wdm.h` has and mingw-w64 10's headers lack (the two
/// precise clock queries are Windows 8.1's, which wdk-build's target includes).
///
/// The `POOL_FLAG_*` values are those documented for `ExAllocatePool2`. They
/// are written as casts (bindgen skips casted macros), so that the macro
/// scanner in `status.rs` emits them with the type `POOL_FLAGS`, as `wdk-sys`
/// declares them.
pub const SHIM: &str = "\
/* ntsim-gen: declarations that mingw-w64's DDK headers lack */
typedef ULONG64 POOL_FLAGS;
#define POOL_FLAG_REQUIRED_START          ((POOL_FLAGS)0x0000000000000001)
#define POOL_FLAG_USE_QUOTA               ((POOL_FLAGS)0x0000000000000001)
#define POOL_FLAG_UNINITIALIZED           ((POOL_FLAGS)0x0000000000000002)
#define POOL_FLAG_SESSION                 ((POOL_FLAGS)0x0000000000000004)
#define POOL_FLAG_CACHE_ALIGNED           ((POOL_FLAGS)0x0000000000000008)
#define POOL_FLAG_RESERVED1               ((POOL_FLAGS)0x0000000000000010)
#define POOL_FLAG_RAISE_ON_FAILURE        ((POOL_FLAGS)0x0000000000000020)
#define POOL_FLAG_NON_PAGED               ((POOL_FLAGS)0x0000000000000040)
#define POOL_FLAG_NON_PAGED_EXECUTE       ((POOL_FLAGS)0x0000000000000080)
#define POOL_FLAG_PAGED                   ((POOL_FLAGS)0x0000000000000100)
#define POOL_FLAG_RESERVED2               ((POOL_FLAGS)0x0000000000000200)
#define POOL_FLAG_RESERVED3               ((POOL_FLAGS)0x0000000000000400)
#define POOL_FLAG_REQUIRED_END            ((POOL_FLAGS)0x0000000080000000)
#define POOL_FLAG_OPTIONAL_START          ((POOL_FLAGS)0x0000000100000000)
#define POOL_FLAG_SPECIAL_POOL            ((POOL_FLAGS)0x0000000100000000)
#define POOL_FLAG_OPTIONAL_END            ((POOL_FLAGS)0x8000000000000000)
NTKERNELAPI PVOID ExAllocatePool2(POOL_FLAGS Flags, SIZE_T NumberOfBytes, ULONG Tag);
NTKERNELAPI VOID KeQuerySystemTimePrecise(PLARGE_INTEGER CurrentTime);
NTKERNELAPI ULONG64 KeQueryInterruptTimePrecise(PULONG64 QpcTimeStamp);
";

/// Where the inputs are.
#[derive(Debug)]
pub struct Inputs {
    /// mingw-w64's `include` directory (with `ddk/` below it).
    pub mingw_include: PathBuf,
    /// libclang's resource headers (`<libdir>/clang/<major>/include`).
    pub clang_resource_include: PathBuf,
    /// Directory used to name the in-memory input header (no file is written).
    pub virtual_dir: PathBuf,
}

/// What libclang saw while bindgen parsed the headers.
#[derive(Debug, Default)]
pub struct Seen {
    /// Every file included, in first-inclusion order.
    pub includes: Vec<PathBuf>,
    /// Names of every macro definition that was active during the parse.
    pub macros: BTreeSet<String>,
}

#[derive(Debug)]
struct Recorder(Arc<Mutex<Seen>>);

impl ParseCallbacks for Recorder {
    fn include_file(&self, filename: &str) {
        let mut seen = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let path = PathBuf::from(filename);
        if !seen.includes.contains(&path) {
            seen.includes.push(path);
        }
    }

    fn will_parse_macro(&self, name: &str) -> MacroParsingBehavior {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).macros.insert(name.to_owned());
        MacroParsingBehavior::Default
    }
}

/// The contents of the in-memory header bindgen parses.
pub fn input_header() -> String {
    let mut text = String::new();
    for header in WDM_HEADERS {
        text.push_str("#include \"");
        text.push_str(header);
        text.push_str("\"\n");
    }
    text.push_str(SHIM);
    text
}

/// Items `wdk-build` 0.6.0 blocklists (deprecated, internal, or not
/// translatable), plus `__tile1024i*` (AMX tile types from clang's
/// intrinsics headers, which bindgen renders as conflicting packed/aligned
/// structs).
const BLOCKLIST: &[&str] = &[
    "ExAllocatePoolWithTag",
    "ExAllocatePoolWithQuotaTag",
    "ExAllocatePoolWithTagPriority",
    "ExAllocatePool",
    "USBD_CalculateUsbBandwidth",
    "USBD_CreateConfigurationRequest",
    "USBD_Debug_LogEntry",
    "USBD_GetUSBDIVersion",
    "USBD_ParseConfigurationDescriptor",
    "USBD_QueryBusTime",
    "USBD_RegisterHcFilter",
    "IOCTL_USB_DIAG_IGNORE_HUBS_OFF",
    "IOCTL_USB_DIAG_IGNORE_HUBS_ON",
    "IOCTL_USB_DIAGNOSTIC_MODE_OFF",
    "IOCTL_USB_DIAGNOSTIC_MODE_ON",
    "IOCTL_USB_GET_HUB_CAPABILITIES",
    "IOCTL_USB_HCD_DISABLE_PORT",
    "IOCTL_USB_HCD_ENABLE_PORT",
    "IOCTL_USB_HCD_GET_STATS_1",
    "IOCTL_USB_HCD_GET_STATS_2",
    "IOCTL_USB_RESET_HUB",
    ".*MCG_CAP(?:__bindgen.*)?",
    ".*WHEA_XPF_MCA_SECTION",
    ".*WHEA_ARM_BUS_ERROR(?:__bindgen.*)?",
    ".*WHEA_ARM_PROCESSOR_ERROR",
    ".*WHEA_ARM_CACHE_ERROR",
    ".*ADDRESS0_OWNERSHIP_ACQUIRE",
    ".*USBDEVICE_ABORTIO",
    ".*USBDEVICE_STARTIO",
    ".*USBDEVICE_TREE_PURGEIO",
    "__tile1024i.*",
];

/// Clang flags `wdk-build` passes for Microsoft C compatibility.
const MS_FLAGS: &[&str] = &[
    "-fms-compatibility",
    "-fms-extensions",
    "-fdelayed-template-parsing",
    "--warn-=no-nonportable-include-path",
    "--warn-=no-pragma-pack",
    "--warn-=no-ignored-attributes",
    "--warn-=no-ignored-pragma-intrinsic",
    "--warn-=no-visibility",
    "--warn-=no-switch",
    "--warn-=no-comment",
    "--warn-=no-deprecated-declarations",
    "--warn-=no-invalid-token-paste",
    "--warn-=no-microsoft",
];

/// Preprocessor definitions of `wdk-build` for an AMD64 WDM driver.
const DEFINES: &[&str] = &["_WIN64", "_AMD64_", "AMD64", "_KERNEL_MODE"];

/// Runs bindgen once; returns the formatted Rust source and what libclang saw.
pub fn generate(inputs: &Inputs) -> Result<(String, Seen), String> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let ddk = inputs.mingw_include.join("ddk");
    for dir in [&ddk, &inputs.mingw_include, &inputs.clang_resource_include] {
        if !dir.is_dir() {
            return Err(format!("directory not found: {}", dir.display()));
        }
    }

    let rust_target = bindgen::RustTarget::stable(91, 0).map_err(|e| e.to_string())?;
    let mut builder = bindgen::Builder::default()
        .use_core()
        .derive_default(true)
        .generate_cstr(true)
        .detect_include_paths(false)
        .ctypes_prefix(CTYPES_PREFIX)
        // wdk-build targets x86_64-pc-windows-msvc through the WDK's own
        // clang configuration; these three flags make mingw's headers work in
        // that mode (`__attribute__` needs a GNU version; the resource headers
        // provide `mm_malloc.h` and friends, as include-path detection is off).
        .clang_arg("--target=x86_64-pc-windows-msvc")
        .clang_arg("-fgnuc-version=12.0")
        .clang_arg("-Wno-everything")
        .clang_arg("-idirafter")
        .clang_arg(path_str(&inputs.clang_resource_include)?)
        .clang_arg("-fno-builtin")
        // wdk-build's order: km/crt (empty for mingw), km, shared.
        .clang_arg(format!("--include-directory={}", path_str(&ddk)?))
        .clang_arg(format!("--include-directory={}", path_str(&inputs.mingw_include)?))
        .clang_args(DEFINES.iter().map(|d| format!("--define-macro={d}")))
        .clang_args(MS_FLAGS.iter().copied());
    for item in BLOCKLIST {
        builder = builder.blocklist_item(*item);
    }
    builder = builder
        .opaque_type("_KGDTENTRY64")
        .opaque_type("_KIDTENTRY64")
        .no_default(".*tagMONITORINFOEXA")
        .must_use_type("NTSTATUS")
        .must_use_type("HRESULT")
        .default_enum_style(bindgen::EnumVariation::ModuleConsts)
        .parse_callbacks(Box::new(Recorder(Arc::clone(&seen))))
        .formatter(bindgen::Formatter::Prettyplease)
        .rust_target(rust_target)
        .rust_edition(bindgen::RustEdition::Edition2024)
        .header_contents(path_str(&inputs.virtual_dir.join("ntsim-wdm-input.h"))?, &input_header());

    let bindings = builder.generate().map_err(|e| format!("bindgen failed: {e}"))?;
    let code = bindings.to_string();
    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(PoisonError::into_inner));
    Ok((code, seen))
}

fn path_str(path: &Path) -> Result<&str, String> {
    path.to_str().ok_or_else(|| format!("path is not UTF-8: {}", path.display()))
}
