//! The modules of `proxy/src` depend on each other in one direction: no module reaches, through
//! any chain of `crate::` paths, back to itself. Read from the source text, so a new upward
//! import fails here with the cycle it closes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read source dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules each top-level module names through `crate::` (or, from a file that
/// sits directly in the crate root's module, `super::`), comments left out.
fn dependencies(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let module_of = |path: &Path| -> Option<String> {
        let rel = path.strip_prefix(src).ok()?;
        let first = rel.components().next()?.as_os_str().to_str()?;
        let name = first.strip_suffix(".rs").unwrap_or(first);
        (name != "main" && name != "lib").then(|| name.to_owned())
    };
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(f)).collect();
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(module) = module_of(file) else {
            continue;
        };
        let rel = file.strip_prefix(src).expect("under src");
        // `super::` from `x.rs` or `x/mod.rs` is the crate root.
        let root_super = rel.components().count() == 1 || rel.ends_with("mod.rs");
        let text = std::fs::read_to_string(file).expect("read source");
        let entry = deps.entry(module.clone()).or_default();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or_default();
            let mut named = |rest: &str| {
                // `crate::a::...`, or `crate::{a, b::c}`.
                let list = match rest.strip_prefix('{') {
                    Some(group) => group.split('}').next().unwrap_or_default().to_owned(),
                    None => rest.to_owned(),
                };
                for item in list.split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if modules.contains(&name) && name != module {
                        entry.insert(name);
                    }
                }
            };
            for (i, _) in code.match_indices("crate::") {
                named(&code[i + "crate::".len()..]);
            }
            if root_super {
                for (i, _) in code.match_indices("super::") {
                    named(&code[i + "super::".len()..]);
                }
            }
        }
    }
    deps
}

/// A cycle through `deps`, as the modules along it, if there is one.
fn find_cycle(deps: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        deps: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut cycle = path[at..].to_vec();
            cycle.push(m.to_owned());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_owned());
        for next in deps.get(m).into_iter().flatten() {
            if let Some(cycle) = visit(next, deps, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    deps.keys()
        .find_map(|m| visit(m, deps, &mut Vec::new(), &mut done))
}

#[test]
fn no_module_reaches_back_to_itself() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let deps = dependencies(&src);
    assert!(deps.len() > 10, "the modules were found: {deps:?}");
    if let Some(cycle) = find_cycle(&deps) {
        panic!(
            "module cycle: {}\nall dependencies: {deps:#?}",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn the_checker_sees_a_cycle() {
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, to) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        deps.entry(from.into()).or_default().insert(to.into());
    }
    assert_eq!(
        find_cycle(&deps),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    deps.get_mut("c").unwrap().remove("a");
    assert_eq!(find_cycle(&deps), None);
}
