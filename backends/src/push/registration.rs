//! A device registration as a client sends it (the admin API's PUT body,
//! or a `push_enable` hook call): checked field by field into a
//! [`Registration`], with an error naming the first bad field.

use serde_json::{Map, Value};

use super::provider::{Address, Mode, Priority, PublishOptions, Service};

/// A checked registration body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub address: Address,
    pub silent: bool,
    /// Publish options (`priority`, `sound`, `mutable_content`,
    /// `time_to_live_s`, `topic`, `click_action`); absent keys (and records
    /// stored before they existed) leave the provider's default.
    pub options: PublishOptions,
    /// Which push backend, when there are several (`"backend"`).
    pub backend: Option<String>,
}

/// Longest token, endpoint or key taken (they are stored).
const MAX_FIELD: usize = 4096;

/// Longest `time_to_live_s` taken: 28 days, FCM's limit.
pub const MAX_TTL_S: u64 = 28 * 24 * 3600;

/// Longest `sound`, `topic` or `click_action` taken.
const MAX_OPTION: usize = 256;

/// Longest device id taken.
pub const MAX_DEVICE_ID: usize = 256;

/// Keys a `push_enable` hook call carries besides the registration.
const HOOK_KEYS: [&str; 4] = ["hook", "jid", "device_id", "timestamp"];

impl Registration {
    /// Check a registration body. With `hook`, the body is a `push_enable`
    /// hook call, which also carries `hook`, `jid`, `device_id`, `timestamp`.
    pub fn parse(body: &Value, hook: bool) -> Result<Registration, String> {
        let obj = body.as_object().ok_or("body: must be a JSON object")?;
        let known: &[&str] = &[
            "provider",
            "token",
            "mode",
            "subscription",
            "service",
            "silent",
            "backend",
            "priority",
            "sound",
            "mutable_content",
            "time_to_live_s",
            "topic",
            "click_action",
        ];
        if let Some(k) = obj
            .keys()
            .find(|k| !(known.contains(&k.as_str()) || (hook && HOOK_KEYS.contains(&k.as_str()))))
        {
            return Err(format!("{k}: unknown field"));
        }
        let provider = string(obj, "provider")?.ok_or("provider: required")?;
        let address = match provider {
            "fcm" => Address::Fcm {
                token: required(obj, "token")?,
            },
            "apns" => {
                let token = required(obj, "token")?;
                if !super::apns::is_device_token(&token) {
                    return Err("token: an APNs device token is hexadecimal, at most 200 characters".into());
                }
                Address::Apns {
                    token,
                    mode: mode(obj)?,
                }
            }
            "webpush" => web_push(obj)?,
            "mongoosepush" => Address::MongoosePush {
                service: match string(obj, "service")? {
                    Some("fcm") => Service::Fcm,
                    Some("apns") => Service::Apns,
                    Some(other) => return Err(format!("service: must be \"fcm\" or \"apns\", not \"{other}\"")),
                    None => return Err("service: required for provider \"mongoosepush\"".into()),
                },
                mode: mode(obj)?,
            },
            other => {
                return Err(format!(
                    "provider: must be \"fcm\", \"apns\", \"webpush\" or \"mongoosepush\", not \"{other}\""
                ))
            }
        };
        let silent = match obj.get("silent") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err("silent: must be true or false".into()),
        };
        let backend = string(obj, "backend")?.map(str::to_owned);
        let options = publish_options(obj)?;
        Ok(Registration {
            address,
            silent,
            options,
            backend,
        })
    }
}

/// The publish options of a registration body, naming a bad field.
fn publish_options(obj: &Map<String, Value>) -> Result<PublishOptions, String> {
    let priority = match string(obj, "priority")? {
        None => None,
        Some("high") => Some(Priority::High),
        Some("normal") => Some(Priority::Normal),
        Some(other) => return Err(format!("priority: must be \"high\" or \"normal\", not \"{other}\"")),
    };
    let mutable_content = match obj.get("mutable_content") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("mutable_content: must be true or false".into()),
    };
    let time_to_live_s = match obj.get("time_to_live_s") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(t) if t <= MAX_TTL_S => Some(t),
            _ => {
                return Err(format!(
                    "time_to_live_s: must be a whole number of seconds from 0 to {MAX_TTL_S}"
                ))
            }
        },
        Some(_) => return Err("time_to_live_s: must be a number of seconds".into()),
    };
    // They go into headers and payloads as they are.
    let token = |key: &str| -> Result<Option<String>, String> {
        match string(obj, key)? {
            None => Ok(None),
            Some("") => Err(format!("{key}: must not be empty")),
            Some(s) if s.len() > MAX_OPTION => Err(format!("{key}: longer than {MAX_OPTION} bytes")),
            Some(s) if s.chars().any(char::is_control) => Err(format!("{key}: contains control characters")),
            Some(s) => Ok(Some(s.to_owned())),
        }
    };
    let topic = token("topic")?;
    if let Some(t) = &topic {
        if !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("topic: must be printable ASCII without spaces (an app bundle id)".into());
        }
    }
    Ok(PublishOptions {
        priority,
        sound: token("sound")?,
        mutable_content,
        time_to_live_s,
        topic,
        click_action: token("click_action")?,
    })
}

/// A device id from a URL or a hook call.
pub fn check_device_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("device_id: must not be empty".into());
    }
    if id.len() > MAX_DEVICE_ID {
        return Err(format!("device_id: longer than {MAX_DEVICE_ID} bytes"));
    }
    if id.chars().any(char::is_control) {
        return Err("device_id: contains control characters".into());
    }
    if id == "." || id == ".." {
        // A path segment of its own would climb the provider's URL path.
        return Err(format!("device_id: \"{id}\" is not a device id"));
    }
    Ok(())
}

/// A user's JID from a URL or a hook call, reduced to its bare JID.
pub fn bare_jid(jid: &str) -> Result<String, String> {
    event_pusher_core::jid::validate(jid).map_err(|why| format!("jid: {why}"))?;
    Ok(event_pusher_core::jid::bare(jid).to_owned())
}

fn string<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() > MAX_FIELD => Err(format!("{key}: longer than {MAX_FIELD} bytes")),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{key}: must be a string")),
    }
}

fn required(obj: &Map<String, Value>, key: &str) -> Result<String, String> {
    match string(obj, key)? {
        Some(s) if !s.trim().is_empty() => Ok(s.to_owned()),
        Some(_) => Err(format!("{key}: must not be empty")),
        None => Err(format!("{key}: required")),
    }
}

fn mode(obj: &Map<String, Value>) -> Result<Mode, String> {
    match string(obj, "mode")? {
        None | Some("prod") => Ok(Mode::Prod),
        Some("dev") => Ok(Mode::Dev),
        Some(other) => Err(format!("mode: must be \"prod\" or \"dev\", not \"{other}\"")),
    }
}

/// A browser's `PushSubscription.toJSON()`.
fn web_push(obj: &Map<String, Value>) -> Result<Address, String> {
    let sub = match obj.get("subscription") {
        Some(Value::Object(s)) => s,
        Some(_) => return Err("subscription: must be an object".into()),
        None => return Err("subscription: required for provider \"webpush\"".into()),
    };
    let endpoint = match string(sub, "endpoint").map_err(|e| format!("subscription.{e}"))? {
        Some(e) => e,
        None => return Err("subscription.endpoint: required".into()),
    };
    let keys = match sub.get("keys") {
        Some(Value::Object(k)) => k,
        _ => return Err("subscription.keys: required (an object with p256dh and auth)".into()),
    };
    let key =
        |name: &str| -> Result<String, String> { required(keys, name).map_err(|e| format!("subscription.keys.{e}")) };
    let (p256dh, auth) = (key("p256dh")?, key("auth")?);
    // The Web Push provider's own check: a key that cannot encrypt is
    // refused now, naming the field, not at every send.
    let checked =
        super::webpush::Subscription::parse(endpoint, &p256dh, &auth).map_err(|e| format!("subscription.{e}"))?;
    // Chosen by whoever registers, not by the operator: `[egress]` applies.
    super::webpush::check_egress(&checked.endpoint).map_err(|e| format!("subscription.{e}"))?;
    Ok(Address::WebPush {
        endpoint: endpoint.to_owned(),
        p256dh,
        auth,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn each_provider_parses_and_errors_name_the_field() {
        let fcm = Registration::parse(&json!({"provider": "fcm", "token": "t1", "silent": true}), false).unwrap();
        assert_eq!(fcm.address, Address::Fcm { token: "t1".into() });
        assert!(fcm.silent);
        let mp = Registration::parse(
            &json!({"provider": "mongoosepush", "service": "apns", "mode": "dev"}),
            false,
        )
        .unwrap();
        assert_eq!(
            mp.address,
            Address::MongoosePush {
                service: Service::Apns,
                mode: Mode::Dev
            }
        );
        let err = |body| Registration::parse(&body, false).unwrap_err();
        assert!(err(json!({"token": "t"})).starts_with("provider:"));
        assert!(err(json!({"provider": "fcm"})).starts_with("token:"));
        assert!(err(json!({"provider": "apns", "token": "zz"})).starts_with("token:"));
        assert!(err(json!({"provider": "fcm", "token": "t", "silent": 1})).starts_with("silent:"));
        assert!(err(json!({"provider": "fcm", "token": "t", "x": 1})).starts_with("x:"));
        assert!(err(
            json!({"provider": "webpush", "subscription": {"endpoint": "https://e/x", "keys": {"auth": "a"}}})
        )
        .starts_with("subscription.keys.p256dh:"));
        let with = Registration::parse(
            &json!({"provider": "fcm", "token": "t", "priority": "normal", "sound": "ping.caf",
                "mutable_content": true, "time_to_live_s": 60, "topic": "com.x", "click_action": "OPEN"}),
            false,
        )
        .unwrap();
        assert_eq!(with.options.priority, Some(Priority::Normal));
        assert_eq!(with.options.time_to_live_s, Some(60));
        assert!(with.options.mutable_content);
        assert_eq!(fcm.options, PublishOptions::default());
        for (k, v) in [
            ("priority", json!("urgent")),
            ("sound", json!(1)),
            ("mutable_content", json!("yes")),
            ("time_to_live_s", json!(-1)),
            ("time_to_live_s", json!(1.5)),
            ("time_to_live_s", json!(MAX_TTL_S + 1)),
            ("topic", json!("com x")),
            ("click_action", json!("")),
        ] {
            let mut body = json!({"provider": "fcm", "token": "t"});
            body[k] = v;
            assert!(err(body).starts_with(&format!("{k}:")), "{k}");
        }
        assert!(Registration::parse(
            &json!({"hook": "push_enable", "jid": "a@b", "device_id": "d", "provider": "fcm", "token": "t"}),
            true
        )
        .is_ok());
    }
}
