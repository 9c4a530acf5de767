//! The driver's module graph is acyclic and layered: the kernel layer (`src/kernel/`)
//! never imports the policy above it, and no two modules import each other, directly
//! or through others.
//!
//! A module is a file under `src/` (a crate of its own, a directory with a
//! `Cargo.toml`, is skipped). An edge `a -> b` is any path in `a` that names module
//! `b`: `use crate::b::…`, `crate::b::f()`, `super::…`, or a child module by its
//! relative name. Files are parsed with `syn`; paths inside macro invocations are not
//! seen.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use syn::visit::Visit;

/// Module path (`kernel::irp`; the crate root is empty) -> its source.
type Sources = BTreeMap<String, String>;
/// Module -> the modules it names.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn module_of(relative: &Path) -> String {
    let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let file = parts.pop().unwrap_or_default();
    let stem = file.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_owned());
    }
    parts.join("::")
}

fn read_sources(root: &Path) -> Sources {
    fn walk(root: &Path, dir: &Path, out: &mut Sources) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                if !path.join("Cargo.toml").exists() {
                    walk(root, &path, out);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(root).unwrap();
                out.insert(module_of(relative), std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut sources = Sources::new();
    walk(root, root, &mut sources);
    sources
}

/// Collects the modules named by paths inside one file.
struct Names<'a> {
    known: &'a BTreeSet<String>,
    /// The module the visitor is in (a file's module, then any inline `mod` in it).
    current: Vec<String>,
    found: BTreeSet<String>,
}

impl Names<'_> {
    /// Records the module `segments` names, read from the current module: the longest
    /// known module it spells, or, for a path anchored at `crate`, `self` or `super`
    /// that goes on to an item, the module it is anchored at. Other paths name
    /// external crates or items of the current module.
    fn resolve(&mut self, segments: &[String]) {
        let ups = segments.iter().take_while(|s| *s == "super").count();
        let (mut base, rest, anchored) = match segments.first().map(String::as_str) {
            Some("crate") => (Vec::new(), &segments[1..], true),
            Some("self") => (self.current.clone(), &segments[1..], true),
            Some("super") => (self.current[..self.current.len().saturating_sub(ups)].to_vec(), &segments[ups..], true),
            _ => (self.current.clone(), segments, false),
        };
        let mut named = anchored.then(|| base.join("::"));
        for segment in rest {
            base.push(segment.clone());
            let candidate = base.join("::");
            if !self.known.contains(&candidate) {
                break;
            }
            named = Some(candidate);
        }
        if let Some(module) = named {
            self.found.insert(module);
        }
    }
}

/// Every full path a `use` tree spells.
fn use_paths(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match tree {
        syn::UseTree::Path(path) => {
            prefix.push(path.ident.to_string());
            use_paths(&path.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(name) if name.ident == "self" => out.push(prefix.clone()),
        syn::UseTree::Name(name) => out.push([prefix.as_slice(), &[name.ident.to_string()]].concat()),
        syn::UseTree::Rename(rename) => out.push([prefix.as_slice(), &[rename.ident.to_string()]].concat()),
        syn::UseTree::Glob(_) => out.push(prefix.clone()),
        syn::UseTree::Group(group) => {
            for item in &group.items {
                use_paths(item, prefix, out);
            }
        }
    }
}

impl<'ast> Visit<'ast> for Names<'_> {
    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        let mut paths = Vec::new();
        use_paths(&item.tree, &mut Vec::new(), &mut paths);
        for path in paths {
            self.resolve(&path);
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        if segments.len() > 1 {
            self.resolve(&segments);
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        self.current.push(item.ident.to_string());
        syn::visit::visit_item_mod(self, item);
        self.current.pop();
    }
}

fn graph(sources: &Sources) -> Graph {
    let known: BTreeSet<String> = sources.keys().cloned().collect();
    let mut graph = Graph::new();
    for (module, text) in sources {
        let file = syn::parse_file(text).unwrap_or_else(|e| panic!("{module}: {e}"));
        let current = if module.is_empty() { Vec::new() } else { module.split("::").map(str::to_owned).collect() };
        let mut names = Names { known: &known, current, found: BTreeSet::new() };
        names.visit_file(&file);
        names.found.remove(module);
        graph.insert(module.clone(), names.found);
    }
    graph
}

/// One cycle of the graph, as the modules along it, if there is any.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &Graph,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = path.iter().position(|n| n == node).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.to_owned(), Mark::Open);
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, marks, path) {
                return Some(cycle);
            }
        }
        path.pop();
        marks.insert(node.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    graph.keys().find_map(|node| visit(node, graph, &mut marks, &mut Vec::new()))
}

/// Edges from the kernel layer to anything outside it.
fn kernel_imports_policy(graph: &Graph) -> Vec<(String, String)> {
    let in_kernel = |m: &str| m == "kernel" || m.starts_with("kernel::");
    graph
        .iter()
        .filter(|(from, _)| in_kernel(from))
        .flat_map(|(from, to)| to.iter().filter(|t| !in_kernel(t)).map(move |t| (from.clone(), t.clone())))
        .collect()
}

fn show(cycle: &[String]) -> String {
    cycle.iter().map(|m| if m.is_empty() { "(crate root)" } else { m.as_str() }).collect::<Vec<_>>().join(" -> ")
}

#[test]
fn the_driver_module_graph_is_acyclic() {
    let graph = graph(&read_sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src")));
    assert!(graph.len() > 20, "found only {} modules under src/", graph.len());
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle: {}", show(&cycle));
    }
}

#[test]
fn the_kernel_layer_imports_no_policy() {
    let graph = graph(&read_sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src")));
    let edges = kernel_imports_policy(&graph);
    assert!(edges.is_empty(), "the kernel layer imports policy modules: {edges:?}");
}

fn sources(files: &[(&str, &str)]) -> Sources {
    files.iter().map(|(path, text)| (module_of(Path::new(path)), (*text).to_owned())).collect()
}

#[test]
fn a_cycle_through_use_and_call_paths_is_found() {
    let tree = sources(&[
        ("lib.rs", "mod a; mod b; mod c;"),
        ("a.rs", "use crate::b::{B, inner::X};"),
        ("b.rs", "pub struct B; fn f() { crate::c::g(); }"),
        ("b/inner.rs", "pub struct X;"),
        ("c.rs", "pub fn g() { let _ = super::a::A; }"),
    ]);
    let cycle = find_cycle(&graph(&tree)).expect("a -> b -> c -> a is a cycle");
    assert_eq!(show(&cycle), "a -> b -> c -> a");
}

#[test]
fn a_parent_and_child_naming_each_other_is_a_cycle() {
    let tree = sources(&[
        ("lib.rs", "mod d;"),
        ("d/mod.rs", "mod read; fn f() { read::go(); }"),
        ("d/read.rs", "use crate::d::Table; pub fn go() {}"),
    ]);
    assert_eq!(find_cycle(&graph(&tree)).map(|c| show(&c)).as_deref(), Some("d -> d::read -> d"));
}

#[test]
fn a_layered_tree_has_no_cycle_and_no_upward_kernel_edge() {
    let tree = sources(&[
        ("lib.rs", "mod kernel; mod queue; pub use queue::Q;"),
        ("kernel/mod.rs", "pub mod sys; pub mod irp;"),
        ("kernel/sys.rs", "pub type PIRP = *mut u8;"),
        ("kernel/irp.rs", "use super::sys::PIRP; mod tests { use super::*; }"),
        ("queue.rs", "use crate::kernel::irp; pub struct Q;"),
    ]);
    let graph = graph(&tree);
    assert_eq!(find_cycle(&graph), None);
    assert!(kernel_imports_policy(&graph).is_empty());
    assert_eq!(graph["kernel::irp"], BTreeSet::from(["kernel::sys".to_owned()]));
}

#[test]
fn a_kernel_module_naming_policy_is_reported() {
    let tree = sources(&[
        ("lib.rs", "mod kernel; mod device;"),
        ("kernel/mod.rs", "pub mod irp;"),
        ("kernel/irp.rs", "fn f(e: &crate::device::Extension) {}"),
        ("device.rs", "pub struct Extension;"),
    ]);
    assert_eq!(kernel_imports_policy(&graph(&tree)), vec![("kernel::irp".to_owned(), "device".to_owned())]);
}

/// `cargo test --test module_graph -- --ignored --nocapture` prints the graph.
#[test]
#[ignore = "prints the graph for a reader"]
fn print_the_graph() {
    for (from, to) in graph(&read_sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))) {
        let to: Vec<&str> = to.iter().map(|m| if m.is_empty() { "(crate root)" } else { m.as_str() }).collect();
        println!("{} -> {}", if from.is_empty() { "(crate root)" } else { &from }, to.join(", "));
    }
}
