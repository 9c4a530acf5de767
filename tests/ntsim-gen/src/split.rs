//! Splits the one bindgen output the way `wdk-sys` lays its bindings out, and
//! derives a function-pointer type for every function.
//!
//! `wdk-sys` builds `types.rs` from bindgen's TYPES, `constants.rs` from its
//! VARS (macro constants and extern statics) and `ntddk.rs` from everything
//! else (the functions). Splitting a single run the same way keeps every type
//! that is reachable only through a function signature.

use std::collections::BTreeSet;

use proc_macro2::TokenStream;
use quote::{ToTokens, quote};
use syn::{FnArg, ForeignItem, Item, ItemForeignMod, Pat};

/// The three parts of the bindings plus the derived signatures.
#[derive(Default)]
pub struct Split {
    /// Structs, unions, typedefs, enum modules, layout assertions, helpers.
    pub types: Vec<Item>,
    /// Constants from macros and const variables, and extern statics.
    pub constants: Vec<Item>,
    /// `extern` function declarations.
    pub functions: Vec<Item>,
    /// `pub type Name = unsafe extern "C" fn(..) -> ..;` per non-variadic function.
    pub signatures: Vec<Item>,
    /// Names of variadic functions (no signature type is generated for them).
    pub variadic: Vec<String>,
    /// Names of extern statics (data imports).
    pub statics: Vec<String>,
    /// Every name the bindings define at the root (types and constants).
    pub root_names: BTreeSet<String>,
}

/// Splits bindgen's formatted output.
pub fn split(code: &str) -> Result<Split, String> {
    let file = syn::parse_file(code).map_err(|e| format!("cannot parse bindgen output: {e}"))?;
    if !file.attrs.is_empty() {
        return Err("bindgen output has crate-level attributes; update ntsim-gen".to_owned());
    }
    let mut out = Split::default();
    for item in file.items {
        match item {
            Item::ForeignMod(block) => split_foreign(block, &mut out)?,
            Item::Const(ref c) if c.ident != "_" => {
                out.root_names.insert(c.ident.to_string());
                out.constants.push(item);
            }
            other => {
                if let Some(name) = item_name(&other) {
                    out.root_names.insert(name);
                }
                out.types.push(other);
            }
        }
    }
    for item in &out.signatures {
        if let Item::Type(t) = item
            && out.root_names.contains(&t.ident.to_string())
        {
            return Err(format!("function `{}` has the name of a type or constant; fnsig.rs would shadow it", t.ident));
        }
    }
    Ok(out)
}

fn split_foreign(block: ItemForeignMod, out: &mut Split) -> Result<(), String> {
    let mut functions = Vec::new();
    let mut statics = Vec::new();
    for foreign in &block.items {
        match foreign {
            ForeignItem::Fn(f) => {
                let name = f.sig.ident.to_string();
                if f.sig.variadic.is_some() {
                    out.variadic.push(name);
                } else {
                    out.signatures.push(signature(&block, f)?);
                }
                functions.push(foreign.clone());
            }
            ForeignItem::Static(s) => {
                let name = s.ident.to_string();
                out.root_names.insert(name.clone());
                out.statics.push(name);
                statics.push(foreign.clone());
            }
            other => {
                return Err(format!("unexpected item in an extern block: {}", other.to_token_stream()));
            }
        }
    }
    if !functions.is_empty() {
        let mut part = block.clone();
        part.items = functions;
        out.functions.push(Item::ForeignMod(part));
    }
    if !statics.is_empty() {
        let mut part = block;
        part.items = statics;
        out.constants.push(Item::ForeignMod(part));
    }
    Ok(())
}

/// `pub type Name = unsafe extern "ABI" fn(args) -> ret;`
fn signature(block: &ItemForeignMod, f: &syn::ForeignItemFn) -> Result<Item, String> {
    let mut inputs: Vec<TokenStream> = Vec::new();
    for arg in &f.sig.inputs {
        let FnArg::Typed(arg) = arg else {
            return Err(format!("`self` argument in extern fn {}", f.sig.ident));
        };
        let ty = &arg.ty;
        inputs.push(match &*arg.pat {
            Pat::Ident(p) => {
                let name = &p.ident;
                quote!(#name: #ty)
            }
            Pat::Wild(_) => quote!(_: #ty),
            other => {
                return Err(format!(
                    "unexpected argument pattern `{}` in extern fn {}",
                    other.to_token_stream(),
                    f.sig.ident
                ));
            }
        });
    }
    let name = &f.sig.ident;
    let abi = &block.abi;
    let output = &f.sig.output;
    syn::parse2(quote!(pub type #name = unsafe #abi fn(#(#inputs),*) #output;))
        .map_err(|e| format!("cannot build the signature type of {name}: {e}"))
}

fn item_name(item: &Item) -> Option<String> {
    let ident = match item {
        Item::Const(i) => &i.ident,
        Item::Enum(i) => &i.ident,
        Item::Fn(i) => &i.sig.ident,
        Item::Mod(i) => &i.ident,
        Item::Static(i) => &i.ident,
        Item::Struct(i) => &i.ident,
        Item::Type(i) => &i.ident,
        Item::Union(i) => &i.ident,
        _ => return None,
    };
    (ident != "_").then(|| ident.to_string())
}
