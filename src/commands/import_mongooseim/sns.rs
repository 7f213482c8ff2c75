//! `mod_event_pusher`'s sns backend → `[backends.sns.mongooseim]`.
//!
//! Topics, region, account and credentials carry over as they are. The
//! credentials are copied (the MongooseIM file held them in clear too) with
//! a note on how to move them to `${VAR}`s. `sns_host` becomes
//! `endpoint_url` unless it is an AWS host, which the SDK derives from the
//! region; the retry settings become the backend's retry policy.

use super::output::{Line, Section, Value};
use super::reader::{Result, Table};

pub const NAME: &str = "mongooseim";
const DEFAULT_PLUGIN: &str = "mod_event_pusher_sns_defaults";

pub fn import(module: &Table<'_, '_>) -> Result<Vec<Section>> {
    module.check_keys(&[
        "presence_updates_topic",
        "pm_messages_topic",
        "muc_messages_topic",
        "plugin_module",
        "sns_host",
        "region",
        "access_key_id",
        "secret_access_key",
        "account_id",
        "pool_size",
        "publish_retry_count",
        "publish_retry_time_ms",
    ])?;
    // MongooseIM refuses to start without these; so do we.
    let required = |key: &str| -> Result<String> {
        module.str(key)?.map(|v| v.value).ok_or_else(|| {
            module.error(format!(
                "`{key}` is required by MongooseIM's sns backend and is missing"
            ))
        })
    };
    let region = required("region")?;
    let account_id = required("account_id")?;
    let access_key_id = required("access_key_id")?;
    let secret_access_key = required("secret_access_key")?;
    let sns_host = required("sns_host")?;

    let mut s = Section::new(format!("backends.sns.{NAME}"));
    s.notes.push(format!("From [{}].", module.path()));
    s.lines.push(Line::set("region", Value::Str(region)));
    s.lines.push(Line::set("account_id", Value::Str(account_id)));
    match endpoint_url(&sns_host) {
        Some(url) => s
            .lines
            .push(Line::set_noted("endpoint_url", Value::Str(url), "from sns_host")),
        None => s
            .lines
            .extend(module.unmapped("sns_host", "an AWS host: the SDK derives the endpoint from `region`")),
    }
    s.lines.push(Line::set_noted(
        "access_key_id",
        Value::Str(access_key_id),
        "copied; better \"${AWS_ACCESS_KEY_ID}\", or remove both keys to use the standard AWS credential chain",
    ));
    s.lines.push(Line::set_noted(
        "secret_access_key",
        Value::Str(secret_access_key),
        "copied; better \"${AWS_SECRET_ACCESS_KEY}\"",
    ));
    for topic in ["presence_updates_topic", "pm_messages_topic", "muc_messages_topic"] {
        if let Some(t) = module.str(topic)? {
            s.lines.push(Line::set(topic, Value::Str(t.value)));
        }
    }
    if let Some(n) = module.int("pool_size")? {
        if n.value > 0 {
            s.lines
                .push(Line::set_noted("concurrency", Value::Int(n.value), "from pool_size"));
        }
    }
    match module.str("plugin_module")? {
        Some(p) if p.value != DEFAULT_PLUGIN => s.lines.extend(module.unmapped(
            "plugin_module",
            "a custom Erlang plugin cannot run here; messages carry bare JIDs and the event's metadata \
             as message attributes (a [[filters]] entry can add metadata)",
        )),
        _ => {}
    }
    let retries = module.int("publish_retry_count")?;
    let backoff = module.int("publish_retry_time_ms")?;
    let mut sections = vec![s];
    if retries.is_some() || backoff.is_some() {
        let mut r = Section::new(format!("backends.sns.{NAME}.retry"));
        if let Some(n) = retries {
            r.lines.push(Line::set_noted(
                "max_attempts",
                Value::Int(n.value.max(0) + 1),
                "publish_retry_count + the first attempt; what still fails goes to dead letters, not away",
            ));
        }
        if let Some(ms) = backoff {
            r.lines.push(Line::set_noted(
                "initial_backoff_ms",
                Value::Int(ms.value.max(0)),
                "from publish_retry_time_ms",
            ));
        }
        sections.push(r);
    }
    Ok(sections)
}

/// `sns_host` as an endpoint URL, or `None` for an AWS host (which
/// MongooseIM's examples write with or without the `sns.` prefix).
fn endpoint_url(sns_host: &str) -> Option<String> {
    let (scheme, rest) = match sns_host.split_once("://") {
        Some((scheme, rest)) => (scheme, rest),
        None => ("https", sns_host),
    };
    let host = rest.split(['/', ':']).next().unwrap_or(rest);
    if host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn") {
        return None;
    }
    Some(format!("{scheme}://{}", rest.trim_end_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_hosts_are_left_to_the_sdk() {
        assert_eq!(endpoint_url("sns.eu-west-1.amazonaws.com"), None);
        assert_eq!(endpoint_url("eu-west-1.amazonaws.com"), None);
        assert_eq!(endpoint_url("https://sns.eu-west-1.amazonaws.com/"), None);
        assert_eq!(
            endpoint_url("localhost:4566").as_deref(),
            Some("https://localhost:4566")
        );
        assert_eq!(
            endpoint_url("http://127.0.0.1:5000/").as_deref(),
            Some("http://127.0.0.1:5000")
        );
    }
}
