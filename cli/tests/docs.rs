//! The documents a newcomer reads stay true: the crate graph drawn in `docs/design.md` is the
//! one the `Cargo.toml` files declare, and the README stays short enough to read in ten
//! minutes while pointing at every document under `docs/`.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;

mod common;

/// (crate, a kfcache crate it depends on), by folder name.
type Edges = BTreeSet<(String, String)>;

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The workspace members' `[dependencies]` on one another, from their `Cargo.toml` files.
fn declared_edges(root: &Path) -> Edges {
    let workspace: toml::Table = read(&root.join("Cargo.toml")).parse().unwrap();
    let members: Vec<String> = workspace["workspace"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect();
    let mut by_package = std::collections::BTreeMap::new();
    let mut manifests = Vec::new();
    for member in &members {
        let manifest: toml::Table = read(&root.join(member).join("Cargo.toml")).parse().unwrap();
        let package = manifest["package"]["name"].as_str().unwrap().to_string();
        by_package.insert(package, member.clone());
        manifests.push((member.clone(), manifest));
    }
    let mut edges = Edges::new();
    for (member, manifest) in manifests {
        let Some(dependencies) = manifest.get("dependencies").and_then(|d| d.as_table()) else {
            continue;
        };
        for name in dependencies.keys() {
            if let Some(dependency) = by_package.get(name) {
                edges.insert((member.clone(), dependency.clone()));
            }
        }
    }
    edges
}

/// The `A --> B` lines of the Mermaid block after the crate-graph marker.
fn drawn_edges(design: &str) -> Edges {
    let marker = design
        .find("<!-- crate-graph")
        .expect("docs/design.md has a crate-graph marker");
    let block = &design[marker..];
    let open = block
        .find("```mermaid")
        .expect("a mermaid block after the marker");
    let body = &block[open + "```mermaid".len()..];
    let close = body.find("```").expect("the mermaid block is closed");
    body[..close]
        .lines()
        .filter_map(|line| {
            let (from, to) = line.trim().split_once("-->")?;
            Some((from.trim().to_string(), to.trim().to_string()))
        })
        .collect()
}

#[test]
fn the_crate_graph_in_the_design_document_is_the_one_cargo_declares() {
    let root = common::workspace();
    let declared = declared_edges(&root);
    assert!(
        declared.contains(&("cli".to_string(), "ops".to_string())),
        "the manifests were read: {declared:?}"
    );
    let drawn = drawn_edges(&read(&root.join("docs/design.md")));
    let missing: Vec<_> = declared.difference(&drawn).collect();
    let extra: Vec<_> = drawn.difference(&declared).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "docs/design.md's crate graph differs from the Cargo.toml files:\n  \
         declared but not drawn: {missing:?}\n  drawn but not declared: {extra:?}"
    );
}

#[test]
fn the_readme_is_short_and_links_every_document() {
    let root = common::workspace();
    let readme = read(&root.join("README.md"));
    let lines = readme.lines().count();
    assert!(lines <= 220, "README.md has {lines} lines; at most 220");
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".md") {
            assert!(
                readme.contains(&format!("docs/{name}")),
                "README.md does not point at docs/{name}"
            );
        }
    }
}
