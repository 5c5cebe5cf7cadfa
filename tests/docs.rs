//! The docs stand alone: `docs/design.md`'s module map names every file
//! under `src/`, every conformance ID the tests and docs cite is listed in
//! `docs/conformance.md`, and nothing cites notes kept outside the
//! repository.
//!
//! Plain file reads, no pool: this binary has no worker entry.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// Every file under `dir` (relative to the crate root) whose name ends with
/// one of `exts`, as paths relative to the crate root with `/` separators.
fn files(dir: &str, exts: &[&str]) -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("list {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(&root().join(dir), &mut found);
    let mut rel: Vec<String> = found
        .iter()
        .filter(|p| exts.iter().any(|e| p.to_string_lossy().ends_with(e)))
        .map(|p| {
            let r = p.strip_prefix(root()).expect("under the crate root");
            r.components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect();
    rel.sort();
    rel
}

/// The rows of the table under `## Layout` in `docs/design.md`: the first
/// cell, and the whole row.
fn layout_rows() -> Vec<(String, String)> {
    let design = read("docs/design.md");
    let start = design
        .find("\n## Layout\n")
        .expect("docs/design.md has a `## Layout` section");
    let rest = &design[start + "\n## Layout\n".len()..];
    let section = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
    section
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|---") && !l.starts_with("| file"))
        .map(|l| {
            let first = l.trim_start_matches('|').split('|').next().unwrap_or("");
            (first.trim().to_string(), l.to_string())
        })
        .collect()
}

/// Whether the module map names `file` (`src/a/b.rs`): as `` `src/a/b.rs` ``
/// in any row, or as `` `b.rs` `` in the row of its folder (`` `src/a/` ``).
fn named(rows: &[(String, String)], file: &str) -> bool {
    let whole = format!("`{file}`");
    if rows.iter().any(|(_, row)| row.contains(&whole)) {
        return true;
    }
    let Some((folder, name)) = file.rsplit_once('/') else {
        return false;
    };
    let folder_cell = format!("`{folder}/`");
    let short = format!("`{name}`");
    rows.iter()
        .any(|(first, row)| *first == folder_cell && row.contains(&short))
}

#[test]
fn the_module_map_names_every_file_under_src() {
    let rows = layout_rows();
    assert!(rows.len() > 10, "no Layout table found: {rows:?}");
    let missing: Vec<String> = files("src", &[".rs"])
        .into_iter()
        .filter(|f| !named(&rows, f))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/design.md's Layout table does not name {missing:?}: add each as \
         `src/<path>` in a row, or as `<file>` in its folder's row (`src/<folder>/`)"
    );
}

#[test]
fn the_module_map_names_no_file_that_is_gone() {
    // A folder row's short names are checked against the folder's files; a
    // full path against the file itself.
    for (first, row) in layout_rows() {
        for cell in row.split('`').skip(1).step_by(2) {
            if cell.starts_with("src/") && cell.ends_with(".rs") {
                assert!(
                    root().join(cell).is_file(),
                    "{cell} is in the map but not in src/"
                );
            } else if first.starts_with("`src/") && first.ends_with("/`") && cell.ends_with(".rs") {
                let folder = first.trim_matches('`');
                let path = format!("{folder}{cell}");
                assert!(
                    root().join(&path).is_file(),
                    "{path} is in the map but not in src/"
                );
            }
        }
    }
}

/// The conformance IDs (`F8`, `T4`, `E2-E13`, ...) that `text` cites.
fn cited_ids(text: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if !b"FAWETPSI".contains(&b) {
            continue;
        }
        if i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_') {
            continue;
        }
        let digits = bytes[i + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        let after = bytes.get(i + 1 + digits).copied().unwrap_or(b' ');
        if (1..=2).contains(&digits) && !(after.is_ascii_alphanumeric() || after == b'_') {
            ids.insert(text[i..i + 1 + digits].to_string());
        }
    }
    ids
}

#[test]
fn every_conformance_id_cited_is_in_docs_conformance_md() {
    let conformance = read("docs/conformance.md");
    // The IDs the page defines: lines that start with `| F8 |` or `- **F8**`.
    let defined = cited_ids(
        &conformance
            .lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| ID"))
            .map(|l| l.split('|').nth(1).unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    assert!(
        defined.len() > 60,
        "docs/conformance.md defines only {defined:?}"
    );
    let mut sources = files("tests", &[".rs"]);
    sources.extend(files("docs", &[".md"]));
    sources.push("README.md".to_string());
    for file in sources {
        if file == "docs/conformance.md" || file == "tests/docs.rs" {
            continue;
        }
        let undefined: Vec<String> = cited_ids(&read(&file))
            .into_iter()
            .filter(|id| !defined.contains(id))
            .collect();
        assert!(
            undefined.is_empty(),
            "{file} cites {undefined:?}, which docs/conformance.md does not list"
        );
    }
}

#[test]
fn nothing_cites_notes_outside_the_repository() {
    // Spelled in pieces, so that this file does not match itself.
    let outside = [
        concat!("../", "shared"),
        concat!("shared/", "DESIGN.md"),
        concat!("shared/", "docs/conformance.md"),
        concat!("shared/", "STYLE.md"),
        concat!("shared/", "bench"),
    ];
    let mut sources = Vec::new();
    for dir in ["src", "tests", "docs", "benches", "examples", "scripts"] {
        sources.extend(files(dir, &[".rs", ".md", ".py", ""]));
    }
    sources.push("README.md".to_string());
    sources.push("Cargo.toml".to_string());
    for file in sources {
        let Ok(text) = fs::read_to_string(root().join(&file)) else {
            continue; // not text
        };
        for cite in outside {
            assert!(
                !text.contains(cite),
                "{file} cites {cite}, which is not in the repository"
            );
        }
    }
    // The bare names, without a path: cite docs/conformance.md and
    // docs/design.md instead.
    for file in files("tests", &[".rs"])
        .into_iter()
        .chain(files("docs", &[".md"]))
    {
        if file == "tests/docs.rs" {
            continue;
        }
        let text = read(&file);
        for bare in [concat!("CONFORMANCE", ".md"), concat!("DESIGN", ".md")] {
            assert!(
                !text.contains(bare),
                "{file} cites {bare}: cite docs/conformance.md or docs/design.md"
            );
        }
    }
}
