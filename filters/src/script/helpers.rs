//! Functions a script may call besides Rhai's own: the JID parts `bare`,
//! `domain` and `resource`, and `matches(text, regex)` with its patterns
//! compiled once per filter.

use std::sync::Arc;

use event_pusher_core::jid;
use rhai::{Engine, EvalAltResult};

use super::RegexCache;

pub fn register(engine: &mut Engine, regexes: Arc<RegexCache>) {
    engine.register_fn("bare", |j: &str| jid::bare(j).to_owned());
    engine.register_fn("domain", |j: &str| jid::domain(j).to_owned());
    // `resource("a@b/phone")` is `"phone"`; empty when the JID has none.
    engine.register_fn("resource", |j: &str| jid::resourcepart(j).to_owned());
    // A missing field reads as `()` (an unacked event has no `from` and no
    // `jid`), so `domain(event.from ?? event.jid)` must not fail on it: the
    // JID helpers give `()` back and `matches` is false, instead of an error
    // that would hit `on_error` for every such event.
    engine.register_fn("bare", |_: ()| ());
    engine.register_fn("domain", |_: ()| ());
    engine.register_fn("resource", |_: ()| ());
    engine.register_fn("matches", |_: (), _: &str| false);
    engine.register_fn(
        "matches",
        move |text: &str, pattern: &str| -> Result<bool, Box<EvalAltResult>> {
            let re = regexes
                .get(pattern)
                .map_err(|e| format!("matches(): invalid regular expression: {e}"))?;
            Ok(re.is_match(text))
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_part() {
        assert_eq!(jid::resourcepart("a@b/phone/x"), "phone/x");
        assert_eq!(jid::resourcepart("a@b"), "");
    }
}
