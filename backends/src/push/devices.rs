//! The device registry: each user's devices, the push backend's in-memory
//! view (the chain reads it), stored in the spool under
//! `push.NAME/device/{bare JID}/{device_id}` (value: the registration body
//! plus `registered_at` and `last_push_at`).
//!
//! Registrations and removals, through the admin API or a hook call, are
//! [`StateChange`]s (`DevicePut`, `DeviceRemove`) built here
//! ([`DeviceRegistry::put_change`]) and applied here only once committed
//! ([`DeviceRegistry::apply`]). `last_push_at` is bookkeeping written
//! without waiting: losing one to a crash costs a stale timestamp.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

use event_pusher_core::StateChange;
use serde_json::{json, Map, Value};
use time::OffsetDateTime;

use super::provider::{Address, Device, Mode, PublishOptions, Service};
use super::registration::{Registration, RegistrationError};
use super::store::Store;

const PREFIX: &str = "device/";

/// A device with what the registry knows about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub device: Device,
    pub registered_at: String,
    pub last_push_at: Option<String>,
}

/// Whether a registration added a device or replaced one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Created,
    Replaced,
}

/// Every user's devices.
#[derive(Default)]
pub struct DeviceRegistry {
    users: RwLock<HashMap<String, BTreeMap<String, Arc<Registered>>>>,
}

impl DeviceRegistry {
    /// Load what was stored (rows are `(key, value)` of this backend).
    pub fn load(&self, rows: &[(String, Vec<u8>)]) {
        for (key, value) in rows {
            let Some(rest) = key.strip_prefix(PREFIX) else { continue };
            // A bare JID has no '/', so the first one ends it.
            let Some((user, device_id)) = rest.split_once('/') else {
                continue;
            };
            match decode(user, device_id, value) {
                Ok(r) => self.insert(user, device_id, r),
                Err(e) => tracing::warn!(user, device_id, error = %e, "unreadable stored device skipped"),
            }
        }
    }

    fn insert(&self, user: &str, device_id: &str, r: Registered) {
        let mut users = self.users.write().unwrap_or_else(PoisonError::into_inner);
        users
            .entry(user.to_owned())
            .or_default()
            .insert(device_id.to_owned(), Arc::new(r));
    }

    /// The device ids of a user, in id order, as if `pending` (the
    /// request's earlier changes to this user) were applied already.
    pub fn device_ids<'c>(&self, user: &str, pending: impl Iterator<Item = &'c StateChange>) -> Vec<Arc<str>> {
        let users = self.users.read().unwrap_or_else(PoisonError::into_inner);
        let mut ids: Vec<Arc<str>> = users
            .get(user)
            .map(|d| d.keys().map(|k| Arc::from(k.as_str())).collect())
            .unwrap_or_default();
        drop(users);
        for change in pending {
            match change {
                StateChange::DevicePut { device_id, .. } => {
                    if let Err(at) = ids.binary_search_by(|d| (**d).cmp(device_id.as_str())) {
                        ids.insert(at, Arc::from(device_id.as_str()));
                    }
                }
                StateChange::DeviceRemove { device_id, .. } => ids.retain(|d| **d != **device_id),
                _ => {}
            }
        }
        ids
    }

    /// Whether `user` has `device_id`, `pending` applied.
    pub fn has<'c>(&self, user: &str, device_id: &str, pending: impl Iterator<Item = &'c StateChange>) -> bool {
        self.device_ids(user, pending).iter().any(|d| &**d == device_id)
    }

    pub fn get(&self, user: &str, device_id: &str) -> Option<Arc<Registered>> {
        let users = self.users.read().unwrap_or_else(PoisonError::into_inner);
        users.get(user)?.get(device_id).cloned()
    }

    /// A user's devices, in id order.
    pub fn list(&self, user: &str) -> Vec<Arc<Registered>> {
        let users = self.users.read().unwrap_or_else(PoisonError::into_inner);
        users
            .get(user)
            .map(|d| d.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every device, for merging into a cluster store: `(user, id, record)`.
    pub fn all(&self) -> Vec<(String, String, Value)> {
        let users = self.users.read().unwrap_or_else(PoisonError::into_inner);
        users
            .iter()
            .flat_map(|(u, d)| d.iter().map(move |(id, r)| (u.clone(), id.clone(), record(r))))
            .collect()
    }

    /// Devices per provider name, for the gauge.
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        let users = self.users.read().unwrap_or_else(PoisonError::into_inner);
        let mut out = BTreeMap::new();
        for r in users.values().flat_map(BTreeMap::values) {
            *out.entry(provider_name(&r.device.address)).or_default() += 1;
        }
        out
    }

    /// The change that registers (or replaces) a device, as `scope`'s.
    pub fn put_change(&self, scope: &str, user: &str, device_id: &str, registration: &Registration) -> StateChange {
        let existing = self.get(user, device_id);
        let registered = Registered {
            device: Device {
                jid: user.to_owned(),
                device_id: device_id.to_owned(),
                address: registration.address.clone(),
                silent: registration.silent,
                options: registration.options.clone(),
            },
            registered_at: now(),
            last_push_at: existing.as_ref().and_then(|e| e.last_push_at.clone()),
        };
        StateChange::DevicePut {
            scope: scope.to_owned(),
            user: user.to_owned(),
            device_id: device_id.to_owned(),
            record: record(&registered),
        }
    }

    /// Apply a committed `DevicePut` / `DeviceRemove`.
    pub fn apply(&self, change: &StateChange) {
        match change {
            StateChange::DevicePut {
                user,
                device_id,
                record,
                ..
            } => match serde_json::to_vec(record)
                .map_err(Unreadable::Json)
                .and_then(|b| decode(user, device_id, &b))
            {
                Ok(r) => self.insert(user, device_id, r),
                Err(e) => tracing::warn!(user, device_id, error = %e, "unreadable device record skipped"),
            },
            StateChange::DeviceRemove { user, device_id, .. } => {
                self.forget(user, device_id);
            }
            _ => {}
        }
    }

    /// Set or remove a device as a cluster store holds it.
    pub fn set(&self, user: &str, device_id: &str, record: Option<&Value>) {
        match record {
            Some(record) => self.apply(&StateChange::DevicePut {
                scope: String::new(),
                user: user.to_owned(),
                device_id: device_id.to_owned(),
                record: record.clone(),
            }),
            None => {
                self.forget(user, device_id);
            }
        }
    }

    /// Replace every device (a cluster store's snapshot).
    pub fn replace<'a>(&self, all: impl IntoIterator<Item = (&'a str, &'a str, &'a Value)>) {
        self.users.write().unwrap_or_else(PoisonError::into_inner).clear();
        for (user, device_id, record) in all {
            self.set(user, device_id, Some(record));
        }
    }

    fn forget(&self, user: &str, device_id: &str) -> bool {
        let mut users = self.users.write().unwrap_or_else(PoisonError::into_inner);
        let Some(devices) = users.get_mut(user) else {
            return false;
        };
        let removed = devices.remove(device_id).is_some();
        if devices.is_empty() {
            users.remove(user);
        }
        removed
    }

    /// Note a notification accepted by the provider.
    pub fn pushed(&self, user: &str, device_id: &str, store: &Store) {
        let mut users = self.users.write().unwrap_or_else(PoisonError::into_inner);
        let Some(r) = users.get_mut(user).and_then(|d| d.get_mut(device_id)) else {
            return;
        };
        let mut updated = (**r).clone();
        updated.last_push_at = Some(now());
        store.put_soon(&key(user, device_id), encode(&updated));
        *r = Arc::new(updated);
    }
}

/// A device's stored record.
fn record(r: &Registered) -> Value {
    serde_json::from_slice(&encode(r)).unwrap_or(Value::Null)
}

fn key(user: &str, device_id: &str) -> String {
    format!("{PREFIX}{user}/{device_id}")
}

fn now() -> String {
    event_pusher_core::event::timestamp_millis::format(&OffsetDateTime::now_utc())
}

/// `fcm`, `apns`, `webpush` or `mongoosepush`.
pub fn provider_name(address: &Address) -> &'static str {
    match address {
        Address::Fcm { .. } => "fcm",
        Address::Apns { .. } => "apns",
        Address::WebPush { .. } => "webpush",
        Address::MongoosePush { .. } => "mongoosepush",
    }
}

pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Prod => "prod",
        Mode::Dev => "dev",
    }
}

pub fn service_name(service: Service) -> &'static str {
    match service {
        Service::Fcm => "fcm",
        Service::Apns => "apns",
    }
}

/// The registration body of a device (what a client PUTs).
fn body(device: &Device) -> Map<String, Value> {
    let mut b = Map::new();
    b.insert("provider".into(), json!(provider_name(&device.address)));
    match &device.address {
        Address::Fcm { token } => {
            b.insert("token".into(), json!(token));
        }
        Address::Apns { token, mode } => {
            b.insert("token".into(), json!(token));
            b.insert("mode".into(), json!(mode_name(*mode)));
        }
        Address::WebPush { endpoint, p256dh, auth } => {
            b.insert(
                "subscription".into(),
                json!({"endpoint": endpoint, "keys": {"p256dh": p256dh, "auth": auth}}),
            );
        }
        Address::MongoosePush { service, mode } => {
            b.insert("service".into(), json!(service_name(*service)));
            b.insert("mode".into(), json!(mode_name(*mode)));
        }
    }
    b.insert("silent".into(), json!(device.silent));
    options(&device.options, &mut b);
    b
}

/// The publish options that are set, as registered.
fn options(o: &PublishOptions, b: &mut Map<String, Value>) {
    if let Some(p) = o.priority {
        b.insert("priority".into(), json!(p.as_str()));
    }
    if let Some(s) = &o.sound {
        b.insert("sound".into(), json!(s));
    }
    if o.mutable_content {
        b.insert("mutable_content".into(), json!(true));
    }
    if let Some(t) = o.time_to_live_s {
        b.insert("time_to_live_s".into(), json!(t));
    }
    if let Some(t) = &o.topic {
        b.insert("topic".into(), json!(t));
    }
    if let Some(c) = &o.click_action {
        b.insert("click_action".into(), json!(c));
    }
}

fn encode(r: &Registered) -> Vec<u8> {
    let mut b = body(&r.device);
    b.insert("registered_at".into(), json!(r.registered_at));
    if let Some(t) = &r.last_push_at {
        b.insert("last_push_at".into(), json!(t));
    }
    serde_json::to_vec(&b).unwrap_or_default()
}

/// Why a stored device record was skipped.
#[derive(Debug, thiserror::Error)]
enum Unreadable {
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// Stored before a check that now refuses it.
    #[error(transparent)]
    Registration(#[from] RegistrationError),
}

fn decode(user: &str, device_id: &str, value: &[u8]) -> Result<Registered, Unreadable> {
    let mut b: Map<String, Value> = serde_json::from_slice(value)?;
    let text = |v: Option<Value>| v.and_then(|v| v.as_str().map(str::to_owned));
    let registered_at = text(b.remove("registered_at")).unwrap_or_default();
    let last_push_at = text(b.remove("last_push_at"));
    let reg = Registration::parse(&Value::Object(b), false)?;
    Ok(Registered {
        device: Device {
            jid: user.to_owned(),
            device_id: device_id.to_owned(),
            address: reg.address,
            silent: reg.silent,
            options: reg.options,
        },
        registered_at,
        last_push_at,
    })
}

/// What the admin API shows of a device: never the token itself.
pub fn view(r: &Registered) -> Value {
    let mode = match &r.device.address {
        Address::Apns { mode, .. } | Address::MongoosePush { mode, .. } => Some(mode_name(*mode)),
        _ => None,
    };
    let mut v = json!({
        "device_id": r.device.device_id,
        "provider": provider_name(&r.device.address),
        "mode": mode,
        "silent": r.device.silent,
        "registered_at": r.registered_at,
        "last_push_at": r.last_push_at,
    });
    if let Address::MongoosePush { service, .. } = &r.device.address {
        v["service"] = json!(service_name(*service));
    }
    let mut set = Map::new();
    options(&r.device.options, &mut set);
    if let Value::Object(view) = &mut v {
        view.extend(set);
    }
    // A hint to tell devices apart, never enough to use the token.
    let hint = match &r.device.address {
        Address::Fcm { token } | Address::Apns { token, .. } => Some(token_hint(token)),
        Address::WebPush { endpoint, .. } => url::Url::parse(endpoint)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned)),
        Address::MongoosePush { .. } => None,
    };
    if let Some(h) = hint {
        v["token_hint"] = json!(h);
    }
    v
}

/// The last 4 characters of a token, prefixed with "…".
fn token_hint(token: &str) -> String {
    let tail: String = token
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_form_round_trips_and_the_view_hides_the_token() {
        let r = Registered {
            device: Device {
                jid: "bob@x".into(),
                device_id: "d1".into(),
                address: Address::Apns {
                    token: "abcdef0123456789".into(),
                    mode: Mode::Dev,
                },
                silent: true,
                options: PublishOptions {
                    sound: Some("ping.caf".into()),
                    time_to_live_s: Some(0),
                    ..PublishOptions::default()
                },
            },
            registered_at: "2026-01-01T00:00:00.000Z".into(),
            last_push_at: Some("2026-01-02T00:00:00.000Z".into()),
        };
        assert_eq!(decode("bob@x", "d1", &encode(&r)).unwrap(), r);
        // A record stored before publish options existed reads with none.
        let old = br#"{"provider":"fcm","token":"t","silent":false,"registered_at":"2026-01-01T00:00:00.000Z"}"#;
        assert_eq!(
            decode("bob@x", "d2", old).unwrap().device.options,
            PublishOptions::default()
        );
        let v = view(&r).to_string();
        assert!(!v.contains("abcdef0123456789"), "{v}");
        assert!(v.contains("\"mode\":\"dev\""), "{v}");
    }
}
