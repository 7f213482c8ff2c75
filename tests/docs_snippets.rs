//! Config examples that readers copy are configs `check-config` accepts:
//! every `examples/*.toml`, and every TOML snippet of `README.md` and
//! `docs/**/*.md`.
//!
//! A fenced block is checked by its info string:
//! - ```` ```toml ````: a whole config file, checked as it is;
//! - ```` ```toml continued ````: more of the previous checked block of the
//!   same page (e.g. a sub-table shown after its table), checked appended
//!   to it;
//! - ```` ```toml mongooseim ````: a MongooseIM config, checked the way
//!   `docs/mongooseim.md` says to use it: `import-mongooseim` reads it and
//!   `check-config` accepts what it wrote;
//! - any other language (```` ```rhai ````, ```` ```sh ````) is not TOML and
//!   not checked. There is no way to skip a TOML block: a snippet that is
//!   not a valid config on its own is written as a continuation.
//!
//! `${VAR}` in a snippet is given a value that every key taking a variable
//! accepts (a Standard Webhooks secret is also a fine token and password).
//! Relative paths resolve as for `examples/`: the snippet is checked in a
//! directory holding a copy of `examples/filters/`.

use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// What every `${VAR}` of a snippet is set to.
const VAR_VALUE: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwZfjQ";

/// `check-config` on `text`, written as `name` next to a copy of
/// `examples/filters/`; `Err` with what it said when it refuses.
fn check(name: &str, text: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    copy_dir(&Path::new(ROOT).join("examples/filters"), &dir.path().join("filters"));
    let path = dir.path().join(name);
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_event-pusher"));
    cmd.arg("check-config").arg(&path).current_dir(dir.path());
    for var in variables(text) {
        cmd.env(var, VAR_VALUE);
    }
    let out = cmd.output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `import-mongooseim` on a MongooseIM config, then `check-config` on
/// what it wrote.
fn check_imported(text: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let input = dir.path().join("mongooseim.toml");
    let output = dir.path().join("event-pusher.toml");
    std::fs::write(&input, text).map_err(|e| e.to_string())?;
    let out = Command::new(env!("CARGO_BIN_EXE_event-pusher"))
        .arg("import-mongooseim")
        .arg(&input)
        .arg("-o")
        .arg(&output)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("import-mongooseim: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let imported = std::fs::read_to_string(&output).map_err(|e| e.to_string())?;
    check("imported.toml", &imported).map_err(|e| format!("check-config of the import: {e}"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read examples/filters") {
        let entry = entry.expect("dir entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

/// The `NAME`s of `${NAME}` in `text` (not `$${`, a literal).
fn variables(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("${") {
        let start = i + at;
        i = start + 2;
        if start > 0 && bytes[start - 1] == b'$' {
            continue;
        }
        if let Some(end) = text[i..].find('}') {
            out.push(text[i..i + end].to_owned());
        }
    }
    out
}

/// A fenced TOML block: where it starts, and whether it continues the
/// previous one.
struct Snippet {
    line: usize,
    continued: bool,
    mongooseim: bool,
    text: String,
}

fn toml_snippets(markdown: &str) -> Vec<Snippet> {
    let mut out = Vec::new();
    let mut current: Option<Snippet> = None;
    let mut in_other_fence = false;
    for (n, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(s) = current.as_mut() {
            if trimmed.starts_with("```") {
                out.extend(current.take());
            } else {
                s.text.push_str(line);
                s.text.push('\n');
            }
            continue;
        }
        if let Some(info) = trimmed.strip_prefix("```") {
            if in_other_fence {
                // Only a bare fence closes a block.
                in_other_fence = !info.trim().is_empty();
                continue;
            }
            let words: Vec<&str> = info.split_whitespace().collect();
            if words.first() == Some(&"toml") {
                current = Some(Snippet {
                    line: n + 1,
                    continued: words.contains(&"continued"),
                    mongooseim: words.contains(&"mongooseim"),
                    text: String::new(),
                });
            } else {
                in_other_fence = true;
            }
        }
    }
    out
}

fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![Path::new(ROOT).join("README.md")];
    let mut dirs = vec![Path::new(ROOT).join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read docs/") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_toml_snippet_in_the_docs_passes_check_config() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).expect("read markdown");
        let rel = file.strip_prefix(ROOT).unwrap_or(&file).display().to_string();
        let mut previous = String::new();
        for snippet in toml_snippets(&text) {
            let whole = if snippet.continued {
                format!("{previous}\n{}", snippet.text)
            } else {
                snippet.text.clone()
            };
            checked += 1;
            if snippet.mongooseim {
                if let Err(e) = check_imported(&snippet.text) {
                    failures.push(format!("{rel}:{}: {e}", snippet.line));
                }
                continue;
            }
            if let Err(e) = check("snippet.toml", &whole) {
                failures.push(format!("{rel}:{}: {e}", snippet.line));
            }
            previous = whole;
        }
    }
    // The docs do have TOML blocks: finding none means the reader broke.
    assert!(checked >= 10, "only {checked} TOML snippets found in the docs");
    assert!(
        failures.is_empty(),
        "TOML snippets check-config refuses:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_example_config_passes_check_config() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for entry in std::fs::read_dir(Path::new(ROOT).join("examples")).expect("read examples/") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        checked += 1;
        // In place: their relative paths (scripts) are relative to them.
        let out = Command::new(env!("CARGO_BIN_EXE_event-pusher"))
            .arg("check-config")
            .arg(&path)
            .current_dir(ROOT)
            .output()
            .expect("run check-config");
        if !out.status.success() {
            failures.push(format!("{}: {}", path.display(), String::from_utf8_lossy(&out.stderr)));
        }
    }
    assert!(checked >= 3, "only {checked} example configs found");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_snippet_reader_finds_blocks_and_continuations() {
    let md =
        "text\n```toml\n[server]\n```\n```sh\n```toml\n```\n```toml continued\n[spool]\n```\n```toml mongooseim\n```\n";
    let s = toml_snippets(md);
    assert_eq!(s.len(), 3, "the ```toml inside the sh block is not a snippet");
    assert!(!s[0].continued && s[1].continued && s[2].mongooseim);
    assert_eq!(s[1].text, "[spool]\n");
    assert_eq!(variables("a = \"${A}\" b = \"$${B}\" c = \"${C}\""), ["A", "C"]);
}
