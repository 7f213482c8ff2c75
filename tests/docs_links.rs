//! The docs stand on their own: no file of the repository points at a
//! document outside it (the design notes the code was written from are not
//! shipped), every relative link of the Markdown files leads to a file that
//! exists, and every `#anchor` to a heading of that file (GitHub's slugs),
//! and the README stays a short entry point.

use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Text files of the repository (not `target/`, not `.git/`).
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("dir entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if !name.starts_with('.') && name != "target" {
                files(&path, out);
            }
        } else if [
            "rs", "md", "toml", "sh", "yml", "yaml", "json", "service", "rhai", "html", "js",
        ]
        .iter()
        .any(|e| name.ends_with(&format!(".{e}")))
            || name == "Dockerfile"
        {
            out.push(path);
        }
    }
}

fn all_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    files(Path::new(ROOT), &mut out);
    out
}

#[test]
fn no_file_refers_to_a_document_outside_the_repository() {
    // Written split, so this file does not match itself.
    let design_md = format!("{}{}", "DESIGN", ".md");
    let shared = format!("{}{}", "shared/", "design");
    let design_dir = format!("{}{}", "design", "/");
    let mut hits = Vec::new();
    for file in all_files() {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            let outside = line.contains(&design_md)
                || line.contains(&shared)
                || (line.contains(&design_dir) && line.contains(".md"));
            if outside {
                hits.push(format!(
                    "{}:{}: {}",
                    file.strip_prefix(ROOT).unwrap_or(&file).display(),
                    n + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        hits.is_empty(),
        "references to documents outside the repository (point into docs/ instead):\n{}",
        hits.join("\n")
    );
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces
/// to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(markdown: &str) -> Vec<String> {
    let mut in_fence = false;
    markdown
        .lines()
        .filter(|l| {
            if l.trim_start().starts_with("```") {
                in_fence = !in_fence;
            }
            !in_fence && l.starts_with('#')
        })
        .map(|l| slug(l.trim_start_matches('#')))
        .collect()
}

/// `(target, line)` of each inline link `](target)` outside code blocks.
fn links(markdown: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut in_fence = false;
    for (n, line) in markdown.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            if let Some(end) = rest.find(')') {
                out.push((rest[..end].to_owned(), n + 1));
                rest = &rest[end..];
            }
        }
    }
    out
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in all_files()
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "md"))
    {
        let text = std::fs::read_to_string(&file).expect("read");
        let rel = file.strip_prefix(ROOT).unwrap_or(&file).display().to_string();
        for (target, line) in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let dest = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap_or(Path::new(ROOT)).join(path)
            };
            if !dest.exists() {
                broken.push(format!("{rel}:{line}: {target}: no such file"));
                continue;
            }
            if let Some(anchor) = anchor {
                let dest_text = std::fs::read_to_string(&dest).unwrap_or_default();
                if !anchors(&dest_text).iter().any(|a| a == anchor) {
                    broken.push(format!("{rel}:{line}: {target}: no such heading"));
                }
            }
        }
    }
    assert!(checked > 30, "only {checked} links found");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_readme_is_short_and_links_every_docs_page() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).expect("README.md");
    let lines = readme.lines().count();
    assert!(lines <= 200, "README.md has {lines} lines; move content into docs/");
    let mut pages = Vec::new();
    files(&Path::new(ROOT).join("docs"), &mut pages);
    for page in pages.iter().filter(|p| p.extension().is_some_and(|e| e == "md")) {
        let rel = page.strip_prefix(ROOT).unwrap_or(page).display().to_string();
        if rel.starts_with("docs/_incoming") {
            continue;
        }
        assert!(readme.contains(&format!("]({rel})")), "README.md does not link {rel}");
    }
    assert_eq!(slug("`[backends.http.NAME]`"), "backendshttpname");
    assert_eq!(slug("Signals and shutdown"), "signals-and-shutdown");
}
