//! `mod_event_pusher`'s push backend → `[backends.push.mongooseim]` with a
//! `mongoosepush` provider pointing at the MongoosePush pool.
//!
//! The pool is the one `[modules.mod_push_service_mongoosepush]` names
//! (`pool_name`), else `[outgoing_pools.http.mongoose_push_http]` as in
//! MongooseIM's examples. Devices are registered through event-pusher
//! (`push_enable` hook calls or the admin API), not through MongooseIM's
//! PubSub, so the written backend works as soon as devices register.
//! Without that pool the backend is written without a provider (valid:
//! `check-config` passes) and a note says to configure one.

use super::http::join_url;
use super::output::{Line, Section, Value};
use super::pools;
use super::reader::{Result, Table};

pub const NAME: &str = "mongooseim";
const DEFAULT_POOL: &str = "mongoose_push_http";

pub fn import(root: &Table<'_, '_>, module: &Table<'_, '_>) -> Result<Vec<Section>> {
    module.check_keys(&["iqdisc", "backend", "wpool", "plugin_module", "virtual_pubsub_hosts"])?;
    let mut s = Section::new(format!("backends.push.{NAME}"));
    s.notes.push(format!("From [{}].", module.path()));
    s.lines.push(Line::set_noted(
        "events",
        Value::List(vec!["chat".into(), "groupchat".into(), "unacked".into()]),
        "what MongooseIM's push backend notifies about",
    ));
    if let Some(wpool) = module.table("wpool")? {
        wpool.check_keys(&["workers", "strategy", "call_timeout", "max_worker_queue_len"])?;
        if let Some(w) = wpool.int("workers")?.filter(|w| w.value > 0) {
            s.lines.push(Line::set_noted(
                "concurrency",
                Value::Int(w.value),
                "from wpool.workers",
            ));
        }
        for key in ["strategy", "call_timeout", "max_worker_queue_len"] {
            s.lines.extend(wpool.unmapped(
                key,
                "worker-pool tuning: deliveries are queued in the spool and sent `concurrency` at a time",
            ));
        }
    }
    s.lines
        .extend(module.unmapped("backend", "the device registry is kept in event-pusher's spool"));
    s.lines.extend(module.unmapped(
        "iqdisc",
        "event-pusher handles no XMPP IQs; devices are registered through its admin API or push_enable hook calls",
    ));
    s.lines.extend(module.unmapped(
        "virtual_pubsub_hosts",
        "no PubSub here: devices are registered through the admin API or push_enable hook calls",
    ));
    s.lines.extend(module.unmapped(
        "plugin_module",
        "a custom Erlang plugin cannot run here; `content` and `offline_only` choose what is sent, filters can narrow it",
    ));

    let mut sections = vec![s];
    let service = root
        .table("modules")?
        .map(|m| m.table("mod_push_service_mongoosepush"))
        .transpose()?
        .flatten();
    let mut pool_name = DEFAULT_POOL.to_owned();
    let mut provider_notes = Vec::new();
    if let Some(svc) = &service {
        svc.check_keys(&["pool_name", "api_version", "max_http_connections"])?;
        if let Some(p) = svc.str("pool_name")? {
            pool_name = p.value;
        }
        if let Some(v) = svc.str("api_version")? {
            if v.value != "v3" {
                provider_notes.extend(svc.unmapped(
                    "api_version",
                    "the mongoosepush provider speaks MongoosePush's v3 API only",
                ));
            }
        }
        provider_notes.extend(svc.unmapped(
            "max_http_connections",
            "the backend's `concurrency` bounds requests in flight",
        ));
    }
    match pools::find(root, "http", &pool_name)? {
        Some(pool_table) => {
            let pool = pools::http(&pool_table)?;
            let (url, _) = join_url(&pool.host.value, &pool.path_prefix, "");
            let mut p = Section::new(format!("backends.push.{NAME}.mongoosepush"));
            p.notes.push(format!("MongoosePush, from [{}].", pool_table.path()));
            p.lines.push(Line::set_noted(
                "url",
                Value::Str(url.trim_end_matches('/').to_owned()),
                "the pool's host + path_prefix",
            ));
            p.lines.extend(provider_notes);
            p.lines.extend(pool.unmapped);
            sections.push(p);
        }
        None => {
            sections[0].lines.push(Line::Note(format!(
                "No [outgoing_pools.http.{pool_name}] for MongoosePush: configure a provider (fcm, apns, webpush or mongoosepush)."
            )));
            sections[0].lines.extend(provider_notes);
        }
    }
    Ok(sections)
}
