//! Constants bindgen cannot translate: object-like macros whose value is a
//! cast of an integer literal to `NTSTATUS` or `POOL_FLAGS`, such as
//! `#define STATUS_SUCCESS ((NTSTATUS)0x00000000L)`, and macros that merely
//! name such a macro (`#define STATUS_CONTINUE_COMPLETION STATUS_SUCCESS`).
//!
//! The scanner reads every header libclang included (plus the shim) and keeps
//! only macros that were defined during the parse, so definitions in inactive
//! `#if` branches of headers that were never reached are ignored.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    path::PathBuf,
};

/// The cast types recognised, and how a value of each is written in Rust.
const CAST_TYPES: &[(&str, Width)] = &[("NTSTATUS", Width::I32), ("POOL_FLAGS", Width::U64)];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Width {
    I32,
    U64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    /// `((TYPE)literal)`; the literal is kept as the bits of the C value.
    Cast { ty: &'static str, bits: u64 },
    /// Another macro's name.
    Alias(String),
}

#[derive(Debug, Clone)]
struct Definition {
    value: Value,
    origin: String,
}

/// Result of the scan.
#[derive(Debug, Default)]
pub struct Scan {
    /// Generated Rust source (without the file header).
    pub source: String,
    /// Constants emitted, by cast type.
    pub counts: BTreeMap<&'static str, usize>,
    /// Names skipped because bindgen already defines them.
    pub skipped_duplicates: Vec<String>,
    /// Macros mentioning a recognised cast that the scanner could not read.
    pub unreadable: Vec<String>,
}

/// Scans `files` (in inclusion order) and then `extra` (the shim).
pub fn scan(
    files: &[PathBuf],
    extra: (&str, &str),
    active: &BTreeSet<String>,
    already_defined: &BTreeSet<String>,
) -> Result<Scan, String> {
    let mut defs: BTreeMap<String, Definition> = BTreeMap::new();
    let mut conflicts = Vec::new();
    let mut scan = Scan::default();

    let mut texts = Vec::with_capacity(files.len() + 1);
    for file in files {
        let text = std::fs::read(file).map_err(|e| format!("cannot read included header {}: {e}", file.display()))?;
        texts.push((file.display().to_string(), String::from_utf8_lossy(&text).into_owned()));
    }
    texts.push((extra.0.to_owned(), extra.1.to_owned()));

    for (origin, text) in &texts {
        for (name, body) in object_like_defines(text) {
            if !active.contains(&name) {
                continue;
            }
            let Some(value) = parse_body(&body) else {
                if CAST_TYPES.iter().any(|(ty, _)| squeeze(&body).contains(&format!("({ty})"))) {
                    scan.unreadable.push(format!("{name} ({origin}): {body}"));
                }
                continue;
            };
            let def = Definition { value, origin: origin.clone() };
            match defs.get(&name) {
                None => {
                    defs.insert(name, def);
                }
                Some(previous) if previous.value == def.value => {}
                Some(previous) => {
                    // Only a problem if it is one of ours (a cast or an alias
                    // resolving to one); checked after resolution.
                    conflicts.push((name, previous.clone(), def));
                }
            }
        }
    }

    // Resolve every candidate to its cast type; drop aliases of other things.
    let mut emitted: BTreeMap<String, (&'static str, String)> = BTreeMap::new();
    for name in defs.keys() {
        let Some(ty) = resolve_type(&defs, name, 0) else {
            continue;
        };
        if already_defined.contains(name) {
            scan.skipped_duplicates.push(name.clone());
            continue;
        }
        let expr = match &defs[name].value {
            Value::Cast { bits, .. } => literal(ty, *bits)?,
            Value::Alias(target) => target.clone(),
        };
        emitted.insert(name.clone(), (ty, expr));
    }
    // An alias to a name we skipped as a bindgen duplicate still resolves,
    // since that name exists at the root of the bindings.

    for (name, first, second) in &conflicts {
        if emitted.contains_key(name) || resolve_type(&defs, name, 0).is_some() {
            return Err(format!(
                "`{name}` is defined differently in {} ({:?}) and {} ({:?})",
                first.origin, first.value, second.origin, second.value
            ));
        }
    }

    let mut source = String::new();
    for (ty, _) in CAST_TYPES {
        let _ = writeln!(source, "use super::types::{ty};");
    }
    for (name, (ty, expr)) in &emitted {
        *scan.counts.entry(ty).or_default() += 1;
        let _ = writeln!(source, "pub const {name}: {ty} = {expr};");
    }
    scan.source = source;
    Ok(scan)
}

fn resolve_type(defs: &BTreeMap<String, Definition>, name: &str, depth: usize) -> Option<&'static str> {
    if depth > 16 {
        return None;
    }
    match &defs.get(name)?.value {
        Value::Cast { ty, .. } => Some(ty),
        Value::Alias(target) => resolve_type(defs, target, depth + 1),
    }
}

fn literal(ty: &'static str, bits: u64) -> Result<String, String> {
    let width =
        CAST_TYPES.iter().find(|(t, _)| *t == ty).map(|(_, w)| *w).ok_or_else(|| format!("unknown cast type {ty}"))?;
    Ok(match width {
        Width::I32 => {
            let bits = u32::try_from(bits).map_err(|_| format!("{ty} value 0x{bits:X} does not fit in 32 bits"))?;
            format!("0x{bits:08X}_u32 as i32")
        }
        Width::U64 => format!("0x{bits:016X}_u64"),
    })
}

/// Removes all whitespace.
fn squeeze(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}

/// Parses a macro body: `((T)lit)`, `(T)lit`, `((T)(lit))`, or `NAME`.
fn parse_body(body: &str) -> Option<Value> {
    let squeezed = squeeze(body);
    let text = strip_parens(&squeezed);
    if is_identifier(text) {
        return Some(Value::Alias(text.to_owned()));
    }
    for (ty, width) in CAST_TYPES {
        if let Some(rest) = text.strip_prefix(&format!("({ty})")) {
            let (negative, digits) = match strip_parens(rest).strip_prefix('-') {
                Some(d) => (true, d),
                None => (false, strip_parens(rest)),
            };
            let magnitude = parse_int(strip_parens(digits))?;
            let bits = if negative {
                let value = magnitude.wrapping_neg();
                match width {
                    Width::I32 => value & 0xFFFF_FFFF,
                    Width::U64 => value,
                }
            } else {
                magnitude
            };
            return Some(Value::Cast { ty, bits });
        }
    }
    None
}

/// Strips balanced parentheses that enclose the whole text.
fn strip_parens(mut text: &str) -> &str {
    while text.starts_with('(') && text.ends_with(')') && encloses(text) {
        text = &text[1..text.len() - 1];
    }
    text
}

/// Whether the opening parenthesis at 0 closes at the last character.
fn encloses(text: &str) -> bool {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return i == text.len() - 1;
                }
            }
            _ => {}
        }
    }
    false
}

fn is_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A C integer literal with optional `u`/`l`/`ll`/`i64`/`ui64` suffixes.
fn parse_int(text: &str) -> Option<u64> {
    let lower = text.to_ascii_lowercase();
    let mut core = lower.as_str();
    for suffix in ["ui64", "i64", "ull", "llu", "ul", "lu", "ll", "u", "l"] {
        if let Some(stripped) = core.strip_suffix(suffix) {
            core = stripped;
            break;
        }
    }
    if let Some(hex) = core.strip_prefix("0x") {
        u64::from_str_radix(hex, 16).ok()
    } else if core.len() > 1 && core.starts_with('0') {
        u64::from_str_radix(&core[1..], 8).ok()
    } else {
        core.parse().ok()
    }
}

/// All object-like `#define NAME BODY` lines, comments removed and
/// continuation lines joined.
fn object_like_defines(text: &str) -> Vec<(String, String)> {
    let text = remove_block_comments(text).replace("\\\r\n", " ").replace("\\\n", " ");
    let mut defines = Vec::new();
    for line in text.lines() {
        let line = line.split("//").next().unwrap_or_default().trim_start();
        let Some(rest) = line.strip_prefix('#') else {
            continue;
        };
        let Some(rest) = rest.trim_start().strip_prefix("define") else {
            continue;
        };
        if !rest.starts_with([' ', '\t']) {
            continue;
        }
        let rest = rest.trim_start();
        let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
        let (name, body) = rest.split_at(end);
        if name.is_empty() || body.starts_with('(') {
            continue; // malformed, or a function-like macro
        }
        defines.push((name.to_owned(), body.trim().to_owned()));
    }
    defines
}

fn remove_block_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("/*") {
        out.push_str(&rest[..start]);
        match rest[start + 2..].find("*/") {
            Some(end) => {
                // Keep line structure so that `#define` lines stay intact.
                let comment = &rest[start..start + 2 + end + 2];
                out.push(' ');
                out.extend(comment.chars().filter(|c| *c == '\n'));
                rest = &rest[start + 2 + end + 2..];
            }
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() {
        assert_eq!(parse_body("((NTSTATUS)0xC0000001L)"), Some(Value::Cast { ty: "NTSTATUS", bits: 0xC000_0001 }));
        assert_eq!(parse_body("( (NTSTATUS) 0x00000103 )"), Some(Value::Cast { ty: "NTSTATUS", bits: 0x103 }));
        assert_eq!(
            parse_body("((POOL_FLAGS)0x8000000000000000)"),
            Some(Value::Cast { ty: "POOL_FLAGS", bits: 0x8000_0000_0000_0000 })
        );
        assert_eq!(parse_body("STATUS_SUCCESS"), Some(Value::Alias("STATUS_SUCCESS".into())));
        assert_eq!(parse_body("((ULONG)0x1)"), None);
        assert_eq!(parse_body("(A) | (B)"), None);
    }

    #[test]
    fn defines() {
        let text = "#define A ((NTSTATUS)1) /* c */\n# define B(x) x\n#define C \\\n  2\n/* #define D 3 */\n";
        assert_eq!(
            object_like_defines(text),
            vec![("A".to_owned(), "((NTSTATUS)1)".to_owned()), ("C".to_owned(), "2".to_owned()),]
        );
    }
}
