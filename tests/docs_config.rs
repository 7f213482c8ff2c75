//! `docs/configuration.md` names every key the config parser accepts.
//!
//! The accepted keys are not listed by hand (a hand list drifts like the
//! docs would): the test asks the real binary. Every table is
//! `deny_unknown_fields`, so `check-config` on a file whose only key in a
//! table is a bogus one answers serde's
//! ``unknown field `…`, expected one of `a`, `b`, …`` — the table's keys.
//! Each of those keys is then probed as a table of its own (`[T.key]` with a
//! bogus key), as a map of named tables (`[T.key.NAME]`) and as an array of
//! tables (`[[T.key]]`); whichever answers with a key list is recursed into.
//! So a key added anywhere, at any depth, shows up here without touching
//! this test.
//!
//! The docs side: a heading naming a table (`` ## `[backends.http.NAME]` ``)
//! followed by table rows whose first cell is the key (`` | `url` | ``).
//! `NAME` stands for any instance name and `KIND` for any backend kind, so
//! the keys every backend has are documented once under
//! `[backends.KIND.NAME]`. Adding a key is one row.

use std::collections::BTreeSet;
use std::process::Command;

const BOGUS: &str = "zz_not_a_key";

/// What `check-config` says about a file holding only `text`.
fn check(text: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("probe.toml");
    std::fs::write(&path, text).expect("write probe");
    let out = Command::new(env!("CARGO_BIN_EXE_event-pusher"))
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("run check-config");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// serde's list of expected fields, if `stderr` is the unknown-field error
/// about our bogus key.
fn expected_fields(stderr: &str) -> Option<Vec<String>> {
    let marker = format!("unknown field `{BOGUS}`");
    let rest = &stderr[stderr.find(&marker)? + marker.len()..];
    let rest = rest.lines().next().unwrap_or("");
    if rest.starts_with(", there are no fields") {
        return Some(Vec::new());
    }
    // serde: "expected `a`", "expected `a` or `b`", "expected one of `a`, `b`, ...".
    let list = rest.strip_prefix(", expected ")?;
    Some(list.split('`').skip(1).step_by(2).map(str::to_owned).collect())
}

/// A table to probe: its dotted path (`NAME` where the name is ours to
/// choose), whether it is an array of tables, and the headers of the arrays
/// of tables around it, which must come first (`[[filters]]` before
/// `[filters.match]`).
#[derive(Clone, Default)]
struct Table {
    path: Vec<String>,
    array: bool,
    outer: Vec<String>,
}

impl Table {
    fn header(&self) -> String {
        let p = self.path.join(".");
        if self.array {
            format!("[[{p}]]")
        } else {
            format!("[{p}]")
        }
    }

    fn child(&self, key: &str, array: bool) -> Table {
        let mut path = self.path.clone();
        path.push(key.to_owned());
        let mut outer = self.outer.clone();
        if self.array {
            outer.push(self.header());
        }
        Table { path, array, outer }
    }

    /// The keys of this table, if it is a table with a fixed set of keys.
    fn keys(&self) -> Option<Vec<String>> {
        let mut text = String::new();
        for header in &self.outer {
            text.push_str(header);
            text.push('\n');
        }
        if !self.path.is_empty() {
            text.push_str(&self.header());
            text.push('\n');
        }
        text.push_str(&format!("{BOGUS} = 1\n"));
        expected_fields(&check(&text))
    }
}

/// Every accepted key below the top-level sections, as dotted paths with
/// `NAME` for chosen names (`backends.http.NAME.retry.max_attempts`).
fn accepted_keys() -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let root = Table::default();
    let root_keys = root.keys().expect("check-config lists the top-level sections");
    let mut todo = vec![(root, root_keys)];
    while let Some((table, keys)) = todo.pop() {
        // Keys of the top level are sections, and keys of a section that
        // hold named instances (`backends.http`) are kinds: containers,
        // whose headings the docs have instead.
        let section = table.path.len() == 1 && !table.array;
        for key in keys {
            let plain = table.child(&key, false);
            let record = !table.path.is_empty();
            if let Some(sub) = plain.keys() {
                if record {
                    found.insert(plain.path.join("."));
                }
                todo.push((plain, sub));
                continue;
            }
            let named = plain.child("NAME", false);
            if let Some(sub) = named.keys() {
                if record && !section {
                    found.insert(plain.path.join("."));
                }
                todo.push((named, sub));
                continue;
            }
            let array = table.child(&key, true);
            if let Some(sub) = array.keys() {
                if record {
                    found.insert(plain.path.join("."));
                }
                todo.push((array, sub));
                continue;
            }
            if record {
                found.insert(plain.path.join("."));
            }
        }
    }
    found
}

/// `(table, key)` pairs documented in `docs/configuration.md`.
fn documented_keys() -> BTreeSet<String> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md"))
        .expect("docs/configuration.md");
    let mut out = BTreeSet::new();
    let mut table: Option<String> = None;
    for line in text.lines() {
        if line.starts_with('#') {
            // A heading naming a table: `[x.y]` or `[[x]]` in backticks.
            table = line
                .split('`')
                .nth(1)
                .filter(|t| t.starts_with('['))
                .map(|t| t.trim_matches(|c| c == '[' || c == ']').to_owned());
            continue;
        }
        let (Some(table), Some(cell)) = (&table, line.strip_prefix('|')) else {
            continue;
        };
        let cell = cell.split('|').next().unwrap_or("");
        for key in cell
            .split(',')
            .filter_map(|k| k.trim().strip_prefix('`')?.strip_suffix('`'))
        {
            out.insert(format!("{table}.{key}"));
        }
    }
    out
}

/// `backends.KIND.NAME.priority` documents `backends.http.NAME.priority`.
fn is_documented(key: &str, documented: &BTreeSet<String>) -> bool {
    if documented.contains(key) {
        return true;
    }
    let parts: Vec<&str> = key.split('.').collect();
    parts.len() > 2 && parts[0] == "backends" && {
        let mut general = parts.clone();
        general[1] = "KIND";
        documented.contains(&general.join("."))
    }
}

#[test]
fn every_accepted_config_key_is_in_configuration_md() {
    let accepted = accepted_keys();
    // The probe itself must work, or this test could never fail: keys we
    // know exist, at several depths, must have been found.
    for known in [
        "server.listen",
        "spool.dir",
        "filters.name",
        "filters.match.body_regex",
        "backends.http.NAME.url",
        "backends.http.NAME.retry.max_attempts",
        "backends.gateway.NAME.clients.NAME.token",
    ] {
        assert!(
            accepted.contains(known),
            "the probe did not find {known}; found:\n{accepted:#?}"
        );
    }
    let documented = documented_keys();
    let missing: Vec<&String> = accepted.iter().filter(|k| !is_documented(k, &documented)).collect();
    assert!(
        missing.is_empty(),
        "config keys the parser accepts but docs/configuration.md does not document \
         (add a row `| `KEY` | type | default | what |` under the table's heading):\n{missing:#?}"
    );
}

#[test]
fn configuration_md_documents_no_key_the_parser_refuses() {
    let accepted = accepted_keys();
    let stale: Vec<String> = documented_keys()
        .into_iter()
        .filter(|d| {
            !accepted.contains(d)
                && !accepted.iter().any(|a| {
                    let (a, d): (Vec<&str>, Vec<&str>) = (a.split('.').collect(), d.split('.').collect());
                    a.len() == d.len() && a.iter().zip(&d).all(|(a, d)| a == d || *d == "KIND")
                })
        })
        .collect();
    assert!(
        stale.is_empty(),
        "docs/configuration.md documents keys the parser does not accept:\n{stale:#?}"
    );
}
