//! A device registration as a client sends it (the admin API's PUT body,
//! or a `push_enable` hook call): checked field by field into a
//! [`Registration`], with an error naming the first bad field.

use serde_json::{Map, Value};

use super::provider::{Address, Mode, Priority, PublishOptions, Service};
pub use super::registration_error::RegistrationError;

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
    pub fn parse(body: &Value, hook: bool) -> Result<Registration, RegistrationError> {
        let obj = body.as_object().ok_or(RegistrationError::NotAnObject)?;
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
            return Err(RegistrationError::UnknownField { field: k.clone() });
        }
        let provider = string(obj, "provider")?.ok_or_else(|| RegistrationError::Required {
            field: "provider".into(),
        })?;
        let address = match provider {
            "fcm" => Address::Fcm {
                token: required(obj, "token")?,
            },
            "apns" => {
                let token = required(obj, "token")?;
                if !super::apns::is_device_token(&token) {
                    return Err(RegistrationError::ApnsToken);
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
                    Some(other) => return Err(not_one_of("service", "\"fcm\" or \"apns\"", other)),
                    None => {
                        return Err(RegistrationError::RequiredFor {
                            field: "service",
                            provider: "mongoosepush",
                        })
                    }
                },
                mode: mode(obj)?,
            },
            other => {
                return Err(not_one_of(
                    "provider",
                    "\"fcm\", \"apns\", \"webpush\" or \"mongoosepush\"",
                    other,
                ))
            }
        };
        let silent = match obj.get("silent") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(RegistrationError::NotABool { field: "silent" }),
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
fn publish_options(obj: &Map<String, Value>) -> Result<PublishOptions, RegistrationError> {
    let priority = match string(obj, "priority")? {
        None => None,
        Some("high") => Some(Priority::High),
        Some("normal") => Some(Priority::Normal),
        Some(other) => return Err(not_one_of("priority", "\"high\" or \"normal\"", other)),
    };
    let mutable_content = match obj.get("mutable_content") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(RegistrationError::NotABool {
                field: "mutable_content",
            })
        }
    };
    let time_to_live_s = match obj.get("time_to_live_s") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(t) if t <= MAX_TTL_S => Some(t),
            _ => return Err(RegistrationError::TtlOutOfRange { max: MAX_TTL_S }),
        },
        Some(_) => return Err(RegistrationError::TtlNotANumber),
    };
    // They go into headers and payloads as they are.
    let token = |key: &str| -> Result<Option<String>, RegistrationError> {
        let field = || key.to_owned();
        match string(obj, key)? {
            None => Ok(None),
            Some("") => Err(RegistrationError::Empty { field: field() }),
            Some(s) if s.len() > MAX_OPTION => Err(RegistrationError::TooLong {
                field: field(),
                max: MAX_OPTION,
            }),
            Some(s) if s.chars().any(char::is_control) => Err(RegistrationError::ControlCharacters { field: field() }),
            Some(s) => Ok(Some(s.to_owned())),
        }
    };
    let topic = token("topic")?;
    if let Some(t) = &topic {
        if !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(RegistrationError::TopicNotPrintable);
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
pub fn check_device_id(id: &str) -> Result<(), RegistrationError> {
    let field = || "device_id".to_owned();
    if id.is_empty() {
        return Err(RegistrationError::Empty { field: field() });
    }
    if id.len() > MAX_DEVICE_ID {
        return Err(RegistrationError::TooLong {
            field: field(),
            max: MAX_DEVICE_ID,
        });
    }
    if id.chars().any(char::is_control) {
        return Err(RegistrationError::ControlCharacters { field: field() });
    }
    if id == "." || id == ".." {
        return Err(RegistrationError::DotDeviceId(id.to_owned()));
    }
    Ok(())
}

/// A user's JID from a URL or a hook call, reduced to its bare JID.
pub fn bare_jid(jid: &str) -> Result<String, RegistrationError> {
    event_pusher_core::jid::validate(jid).map_err(RegistrationError::InvalidJid)?;
    Ok(event_pusher_core::jid::bare(jid).to_owned())
}

fn not_one_of(field: &'static str, allowed: &'static str, value: &str) -> RegistrationError {
    RegistrationError::NotOneOf {
        field,
        allowed,
        value: value.to_owned(),
    }
}

fn string<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, RegistrationError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() > MAX_FIELD => Err(RegistrationError::TooLong {
            field: key.to_owned(),
            max: MAX_FIELD,
        }),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(RegistrationError::NotAString { field: key.to_owned() }),
    }
}

fn required(obj: &Map<String, Value>, key: &str) -> Result<String, RegistrationError> {
    match string(obj, key)? {
        Some(s) if !s.trim().is_empty() => Ok(s.to_owned()),
        Some(_) => Err(RegistrationError::Empty { field: key.to_owned() }),
        None => Err(RegistrationError::Required { field: key.to_owned() }),
    }
}

fn mode(obj: &Map<String, Value>) -> Result<Mode, RegistrationError> {
    match string(obj, "mode")? {
        None | Some("prod") => Ok(Mode::Prod),
        Some("dev") => Ok(Mode::Dev),
        Some(other) => Err(not_one_of("mode", "\"prod\" or \"dev\"", other)),
    }
}

/// A browser's `PushSubscription.toJSON()`.
fn web_push(obj: &Map<String, Value>) -> Result<Address, RegistrationError> {
    let sub = match obj.get("subscription") {
        Some(Value::Object(s)) => s,
        Some(_) => return Err(RegistrationError::SubscriptionNotAnObject),
        None => {
            return Err(RegistrationError::RequiredFor {
                field: "subscription",
                provider: "webpush",
            })
        }
    };
    let endpoint = match string(sub, "endpoint").map_err(|e| e.within("subscription"))? {
        Some(e) => e,
        None => {
            return Err(RegistrationError::Required {
                field: "subscription.endpoint".into(),
            })
        }
    };
    let keys = match sub.get("keys") {
        Some(Value::Object(k)) => k,
        _ => return Err(RegistrationError::SubscriptionKeys),
    };
    let key = |name: &str| required(keys, name).map_err(|e| e.within("subscription.keys"));
    let (p256dh, auth) = (key("p256dh")?, key("auth")?);
    // The Web Push provider's own check: a key that cannot encrypt is
    // refused now, naming the field, not at every send.
    let checked =
        super::webpush::Subscription::parse(endpoint, &p256dh, &auth).map_err(RegistrationError::Subscription)?;
    // Chosen by whoever registers, not by the operator: `[egress]` applies.
    super::webpush::check_egress(&checked.endpoint).map_err(RegistrationError::Subscription)?;
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
        let err = |body| Registration::parse(&body, false).unwrap_err().to_string();
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
