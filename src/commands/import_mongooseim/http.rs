//! `mod_event_pusher`'s http handlers → `[backends.http.NAME]`.
//!
//! Each handler (`pool_name`, `path`, `callback_module`) becomes one backend
//! posting MongooseIM's form body to the pool's host + prefix + path. The
//! default callback posts only one-to-one messages with a body that a user
//! *sent*; event-pusher's http backend has no direction setting, so the
//! imported backends run after a filter that stops outgoing copies.

use super::output::{Line, Section, Value};
use super::pools;
use super::reader::{Result, Table};

const DEFAULT_CALLBACK: &str = "mod_event_pusher_http_defaults";
/// The http backends run after every other imported backend (50) and after
/// the filter below, so stopping `out` messages takes nothing from the others.
const HTTP_PRIORITY: i64 = 60;
const FILTER_PRIORITY: i64 = 55;
pub const FILTER_NAME: &str = "mongooseim-http-sent-only";

/// The handler tables: `http.handlers` (MongooseIM 5.1+) or the older
/// `backend.http` (one table or an array of them).
pub fn handlers<'a, 'i>(current: Option<&Table<'a, 'i>>, legacy: Option<&Table<'a, 'i>>) -> Result<Vec<Table<'a, 'i>>> {
    let mut out = Vec::new();
    if let Some(http) = current {
        http.check_keys(&["handlers"])?;
        out.extend(http.tables("handlers", false)?);
    }
    if let Some(backend) = legacy {
        out.extend(backend.tables("http", true)?);
    }
    Ok(out)
}

/// One backend per handler, preceded by the filter they rely on.
pub fn import(root: &Table<'_, '_>, handlers: &[Table<'_, '_>]) -> Result<Vec<Section>> {
    if handlers.is_empty() {
        return Ok(Vec::new());
    }
    let mut sections = vec![direction_filter()];
    let mut names: Vec<String> = Vec::new();
    for h in handlers {
        h.check_keys(&["pool_name", "path", "callback_module"])?;
        let pool_name = h.str("pool_name")?;
        let pool_label = pool_name.as_ref().map(|p| p.value.as_str()).unwrap_or("http_pool");
        let Some(pool_table) = pools::find(root, "http", pool_label)? else {
            let message =
                format!("handler uses pool \"{pool_label}\", but there is no [outgoing_pools.http.{pool_label}]");
            return Err(match &pool_name {
                Some(p) => h.error_at("pool_name", p.span.clone(), message),
                None => h.error(format!("{message} (\"http_pool\" is the default pool_name)")),
            });
        };
        let pool = pools::http(&pool_table)?;
        let path = h.str("path")?.map(|p| p.value).unwrap_or_default();
        let (url, joined_differently) = join_url(&pool.host.value, &pool.path_prefix, &path);
        let name = unique_name(&mut names, &path, pool_label);

        let mut s = Section::new(format!("backends.http.{name}"));
        s.notes
            .push(format!("From {} (pool \"{pool_label}\", path {:?}).", h.path(), path));
        let url_note = if joined_differently {
            format!(
                "MongooseIM itself joins path_prefix {:?} and path without a '/' ({}); check which one your endpoint serves",
                pool.path_prefix,
                literal_url(&pool.host.value, &pool.path_prefix, &path)
            )
        } else {
            "the pool's host + path_prefix + the handler's path".to_owned()
        };
        s.lines.push(Line::set_noted("url", Value::Str(url), url_note));
        s.lines.push(Line::set_noted(
            "format",
            Value::Str("form".into()),
            "MongooseIM's author=&server=&receiver=&message= body",
        ));
        s.lines.push(Line::set_noted(
            "events",
            Value::List(vec!["chat".into()]),
            "as mod_event_pusher_http_defaults: one-to-one messages with a body",
        ));
        s.lines.push(Line::set_noted(
            "priority",
            Value::Int(HTTP_PRIORITY),
            format!("after the filter \"{FILTER_NAME}\" (only messages a user sent, as in MongooseIM)"),
        ));
        if let Some(ms) = pool.request_timeout_ms {
            s.lines.push(Line::set_noted(
                "timeout_ms",
                Value::Int(ms),
                "the pool's request_timeout",
            ));
        }
        if let Some(w) = pool.workers.filter(|w| *w > 0) {
            s.lines
                .push(Line::set_noted("concurrency", Value::Int(w), "the pool's workers"));
        }
        match h.str("callback_module")? {
            Some(cb) if cb.value != DEFAULT_CALLBACK => s.lines.extend(h.unmapped(
                "callback_module",
                "a custom Erlang callback cannot run here; this backend posts what mod_event_pusher_http_defaults would. \
                 Narrow it with a [[filters]] entry (a declarative match or a script filter)",
            )),
            _ => {}
        }
        s.lines.extend(pool.unmapped);
        sections.push(s);
    }
    Ok(sections)
}

/// The filter that keeps `out` copies of messages from the http backends.
fn direction_filter() -> Section {
    let mut f = Section::new("filters");
    f.array = true;
    f.notes = vec![
        "MongooseIM's http handlers post only messages a user sent (direction in).".into(),
        format!("The http backends below run at priority {HTTP_PRIORITY}; this filter stops messages being delivered"),
        "to a user (direction out) before they get there. Backends at a lower priority (the".into(),
        "default is 50) have already received them.".into(),
    ];
    f.lines = vec![
        Line::set("name", Value::Str(FILTER_NAME.into())),
        Line::set("priority", Value::Int(FILTER_PRIORITY)),
        Line::set("match", Value::Toml("{ event = \"chat\", direction = \"out\" }".into())),
        Line::set("action", Value::Str("stop".into())),
    ];
    f
}

/// The URL the handler's posts go to: host + path_prefix + path with
/// exactly one `/` between prefix and path, as MongooseIM's documentation
/// describes. Also says whether MongooseIM's own code would have built
/// something else (it strips path's leading `/` and concatenates, so a
/// prefix without a trailing `/` runs into the path).
pub fn join_url(host: &str, prefix: &str, path: &str) -> (String, bool) {
    let host = host.trim_end_matches('/');
    let prefix = if prefix.starts_with('/') {
        prefix.to_owned()
    } else {
        format!("/{prefix}")
    };
    let path = path.trim_start_matches('/');
    let joined = if path.is_empty() || prefix.ends_with('/') {
        format!("{host}{prefix}{path}")
    } else {
        format!("{host}{prefix}/{path}")
    };
    let differs = joined != literal_url(host, &prefix, path);
    (joined, differs)
}

/// What MongooseIM's `mongoose_http_client` requests: prefix ++ path
/// without its leading `/`.
fn literal_url(host: &str, prefix: &str, path: &str) -> String {
    format!("{}{prefix}{}", host.trim_end_matches('/'), path.trim_start_matches('/'))
}

/// A backend name from the path's last segment (else the pool's name),
/// made of the characters names allow, unique among `taken`.
fn unique_name(taken: &mut Vec<String>, path: &str, pool: &str) -> String {
    let seg = path.rsplit('/').find(|s| !s.is_empty()).unwrap_or(pool);
    let base: String = seg
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let base = if base.is_empty() { "mongooseim".to_owned() } else { base };
    let mut name = base.clone();
    let mut n = 2;
    while taken.contains(&name) {
        name = format!("{base}_{n}");
        n += 1;
    }
    taken.push(name.clone());
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_join_with_one_slash() {
        assert_eq!(
            join_url("http://localhost:8000", "/webservice", "/notifications"),
            ("http://localhost:8000/webservice/notifications".into(), true)
        );
        assert_eq!(
            join_url("http://h/", "/", "/notifications"),
            ("http://h/notifications".into(), false)
        );
        assert_eq!(join_url("http://h", "/api/", "x"), ("http://h/api/x".into(), false));
        assert_eq!(join_url("http://h", "/api", ""), ("http://h/api".into(), false));
    }

    #[test]
    fn names_are_unique_and_clean() {
        let mut taken = Vec::new();
        assert_eq!(unique_name(&mut taken, "/notifications", "http_pool"), "notifications");
        assert_eq!(
            unique_name(&mut taken, "/a/notifications/", "http_pool"),
            "notifications_2"
        );
        assert_eq!(unique_name(&mut taken, "", "http_pool"), "http_pool");
        assert_eq!(unique_name(&mut taken, "/ü x", "p"), "__x");
    }
}
