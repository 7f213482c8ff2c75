//! `event-pusher import-mongooseim mongooseim.toml [-o FILE] [--force]`:
//! turn MongooseIM's `mod_event_pusher` settings (and the outgoing pools
//! they use) into an event-pusher config that `check-config` accepts.
//!
//! - `reader`: the MongooseIM file with positions; typed getters, key checks.
//! - `pools`: `[outgoing_pools.http.*]` and `[outgoing_pools.rabbit.event_pusher]`.
//! - `http`, `rabbit`, `sns`, `push`: one backend's mapping each.
//! - `output`: sections and comments, rendered as TOML.
//!
//! Every MongooseIM setting read here either lands in a key or comes back
//! as a comment saying why it has no equivalent; an unknown or mistyped one
//! is an error at its `file:line:column`, as in our own config.

mod http;
mod output;
mod pools;
mod push;
mod rabbit;
mod reader;
mod sns;

use std::io::Write;
use std::path::Path;

use event_pusher_config::ConfigError;

use super::CommandError;
use output::Section;
use reader::{Document, Result};

/// Run the command. Without `output` the config is returned (to print);
/// with it, it is written there (an existing file only with `force`).
pub fn run(input: &Path, output: Option<&Path>, force: bool) -> std::result::Result<String, CommandError> {
    let text = std::fs::read_to_string(input).map_err(|e| ConfigError::io(input, e))?;
    let config = import(&input.display().to_string(), &text)?;
    let Some(out) = output else {
        return Ok(config);
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .create_new(!force)
        .truncate(true)
        .open(out)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                CommandError(format!("{}: already exists (use --force to overwrite)", out.display()))
            } else {
                CommandError(format!("{}: cannot write: {e}", out.display()))
            }
        })?;
    file.write_all(config.as_bytes())
        .map_err(|e| CommandError(format!("{}: cannot write: {e}", out.display())))?;
    Ok(format!(
        "wrote {}; check it with: event-pusher check-config {}\n",
        out.display(),
        out.display()
    ))
}

/// The event-pusher config for MongooseIM config `text` (named `file` in
/// errors and in the header).
pub fn import(file: &str, text: &str) -> Result<String> {
    let doc = Document::parse(file, text)?;
    let root = doc.root();
    let module = root
        .table("modules")?
        .map(|m| m.table("mod_event_pusher"))
        .transpose()?
        .flatten()
        .ok_or_else(|| root.error("no [modules.mod_event_pusher] section: nothing to import"))?;
    module.check_keys(&["http", "rabbit", "sns", "push", "backend"])?;
    // MongooseIM before 5.1 nested the backends under `backend`.
    let legacy = module.table("backend")?;
    if let Some(l) = &legacy {
        l.check_keys(&["http", "rabbit", "sns", "push"])?;
    }
    let current_or_legacy = |key: &str| -> Result<Option<(reader::Table<'_, '_>, bool)>> {
        if let Some(t) = module.table(key)? {
            return Ok(Some((t, false)));
        }
        match &legacy {
            Some(l) => Ok(l.table(key)?.map(|t| (t, true))),
            None => Ok(None),
        }
    };

    let mut sections: Vec<Section> = Vec::new();
    let handlers = http::handlers(module.table("http")?.as_ref(), legacy.as_ref())?;
    sections.extend(http::import(&root, &handlers)?);
    if let Some((t, is_legacy)) = current_or_legacy("rabbit")? {
        sections.extend(rabbit::import(&root, &t, is_legacy)?);
    }
    if let Some((t, _)) = current_or_legacy("sns")? {
        sections.extend(sns::import(&t)?);
    }
    if let Some((t, _)) = current_or_legacy("push")? {
        sections.extend(push::import(&root, &t)?);
    }

    let mut preamble = vec![
        format!("event-pusher config imported from the MongooseIM config {file}"),
        "by `event-pusher import-mongooseim`. MongooseIM settings without an equivalent".into(),
        "are kept as comments saying why. [server] and [spool] take their defaults".into(),
        "(listen 127.0.0.1:8088, spool ./data).".into(),
    ];
    preamble.extend(host_config_notes(&root)?);
    if sections.iter().all(|s| s.disabled.is_some() || s.array) {
        preamble.push(String::new());
        preamble.push("No backend could be enabled: accepted events would go nowhere.".into());
    }
    Ok(output::render(&preamble, &sections))
}

/// `[[host_config]]` entries that configure `mod_event_pusher` for one host
/// type are not imported: event-pusher's backends serve every host.
fn host_config_notes(root: &reader::Table<'_, '_>) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    for h in root.tables("host_config", false)? {
        let has = h.table("modules")?.is_some_and(|m| m.contains("mod_event_pusher"));
        if has {
            notes.push(format!(
                "Not imported: {}.modules.mod_event_pusher (a per-host-type setting; event-pusher's backends serve every host).",
                h.path()
            ));
        }
    }
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> ConfigError {
        import("mim.toml", text).expect_err("should fail")
    }

    const HTTP_POOL: &str = "[outgoing_pools.http.http_pool.connection]\nhost = \"http://h:8000\"\n";

    #[test]
    fn unknown_setting_is_named_at_its_position() {
        let e = err("[modules.mod_event_pusher.sns]\nregion = \"eu-west-1\"\nregoin = \"x\"\n");
        assert_eq!((e.line, e.column), (3, 1), "{e}");
        assert_eq!(e.key.as_deref(), Some("modules.mod_event_pusher.sns.regoin"));
        assert!(e.message.contains("unknown MongooseIM setting `regoin`"), "{e}");
        assert!(e.to_string().starts_with("mim.toml:3:1: "), "{e}");
        let e = err(&format!(
            "{HTTP_POOL}[modules.mod_event_pusher.http]\nhandlers = [{{path = \"/n\", pool = \"x\"}}]\n"
        ));
        assert_eq!(e.line, 4, "{e}");
        assert!(e.key.as_deref().unwrap_or("").ends_with("handlers[0].pool"), "{e}");
        let e = err("[modules.mod_event_pusher.kafka]\n");
        assert!(
            e.message.contains("`kafka`") && e.message.contains("http, rabbit, sns, push"),
            "{e}"
        );
    }

    #[test]
    fn wrong_types_and_syntax_point_at_the_value() {
        let e = err(&format!(
            "{HTTP_POOL}[modules.mod_event_pusher.http]\nhandlers = [{{path = 5}}]\n"
        ));
        assert_eq!((e.line, e.column), (4, 21), "{e}");
        assert!(e.message.contains("expected a string, found integer"), "{e}");
        let e = err("[modules.mod_event_pusher.sns\nregion = 1\n");
        assert_eq!(e.line, 1, "{e}");
        let e = err("[general]\nloglevel = \"warning\"\n");
        assert!(e.message.contains("no [modules.mod_event_pusher]"), "{e}");
    }

    #[test]
    fn a_missing_pool_is_reported_where_it_is_named() {
        let e = err("[modules.mod_event_pusher.http]\nhandlers = [{pool_name = \"nope\"}]\n");
        assert_eq!((e.line, e.column), (2, 26), "{e}");
        assert!(e.message.contains("[outgoing_pools.http.nope]"), "{e}");
        let e = err("[modules.mod_event_pusher.rabbit]\npresence_exchange.name = \"p\"\n");
        assert!(e.message.contains("[outgoing_pools.rabbit.event_pusher]"), "{e}");
        let e = err("[outgoing_pools.http.http_pool.connection]\nhost = \"localhost:8000\"\n[modules.mod_event_pusher.http]\nhandlers = [{}]\n");
        assert_eq!((e.line, e.column), (2, 8), "{e}");
    }

    #[test]
    fn default_handler_uses_http_pool_and_posts_forms() {
        let out = import(
            "mim.toml",
            &format!("{HTTP_POOL}[modules.mod_event_pusher.http]\nhandlers = [{{}}]\n"),
        )
        .unwrap();
        assert!(
            out.contains("[backends.http.http_pool]\nurl = \"http://h:8000/\""),
            "{out}"
        );
        assert!(out.contains("format = \"form\""), "{out}");
        assert!(out.contains("events = [\"chat\"]"), "{out}");
        assert!(out.contains("name = \"mongooseim-http-sent-only\""), "{out}");
    }

    #[test]
    fn legacy_rabbit_turns_on_every_exchange_and_keeps_them_transient() {
        let out = import(
            "mim.toml",
            "[outgoing_pools.rabbit.event_pusher.connection]\nvirtual_host = \"prod/eu\"\npassword = \"a${b}\"\n\
             [modules.mod_event_pusher]\nbackend.rabbit.presence_exchange.name = \"pres\"\n",
        )
        .unwrap();
        assert!(
            out.contains("url = \"amqp://guest:a%24%7Bb%7D@localhost:5672/prod%2Feu\""),
            "{out}"
        );
        for ex in ["presence_exchange", "chat_msg_exchange", "groupchat_msg_exchange"] {
            assert!(
                out.contains(&format!("[backends.rabbit.mongooseim.{ex}]")),
                "{ex}: {out}"
            );
        }
        assert!(out.contains("name = \"pres\""), "{out}");
        assert_eq!(out.matches("durable = false").count(), 3, "{out}");
    }

    #[test]
    fn unsupported_exchange_type_is_an_error() {
        let e = err("[outgoing_pools.rabbit.event_pusher]\n[modules.mod_event_pusher.rabbit]\nchat_msg_exchange.type = \"x-delayed\"\n");
        assert_eq!((e.line, e.column), (3, 26), "{e}");
        assert!(e.message.contains("x-delayed"), "{e}");
    }

    #[test]
    fn sns_retries_and_custom_endpoint() {
        let out = import(
            "mim.toml",
            "[modules.mod_event_pusher.sns]\nsns_host = \"http://127.0.0.1:5000\"\nregion = \"us-east-1\"\n\
             access_key_id = \"k\"\nsecret_access_key = \"s\"\naccount_id = \"123456789012\"\n\
             publish_retry_count = 4\nplugin_module = \"my_plugin\"\n",
        )
        .unwrap();
        assert!(out.contains("endpoint_url = \"http://127.0.0.1:5000\""), "{out}");
        assert!(
            out.contains("[backends.sns.mongooseim.retry]\nmax_attempts = 5"),
            "{out}"
        );
        assert!(
            out.contains("# modules.mod_event_pusher.sns.plugin_module = \"my_plugin\"  # not carried over"),
            "{out}"
        );
        let e = err("[modules.mod_event_pusher.sns]\nregion = \"us-east-1\"\n");
        assert!(e.message.contains("`account_id` is required"), "{e}");
    }
}
