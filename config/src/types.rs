//! Value types shared by backend and filter configs, each validating
//! itself while it is deserialized, so a bad value is reported at its own
//! line and column.

use std::time::Duration;

use event_pusher_core::{EventClass, EventClasses};
use serde::{Deserialize, Deserializer};

/// A handler's place in the chain; lower runs first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(transparent)]
pub struct Priority(pub i64);

impl Default for Priority {
    fn default() -> Self {
        Priority(50)
    }
}

/// `events = ["chat", "presence"]`: the classes a backend receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventClassList(pub EventClasses);

impl<'de> Deserialize<'de> for EventClassList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        let mut set = EventClasses::NONE;
        for name in &names {
            let class = EventClass::from_name(name).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "unknown event class \"{name}\" (expected presence, chat, groupchat, headline, normal or unacked)"
                ))
            })?;
            set = set.with(class);
        }
        if names.is_empty() {
            return Err(serde::de::Error::custom(
                "`events` is empty: the backend would receive nothing",
            ));
        }
        Ok(EventClassList(set))
    }
}

/// `[backends.KIND.NAME.retry]`
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 8,
            initial_backoff_ms: 500,
            max_backoff_ms: 60_000,
        }
    }
}

impl RetryConfig {
    pub fn policy(&self) -> event_pusher_core::delivery::RetryPolicy {
        event_pusher_core::delivery::RetryPolicy {
            max_attempts: self.max_attempts.max(1),
            initial_backoff: Duration::from_millis(self.initial_backoff_ms),
            max_backoff: Duration::from_millis(self.max_backoff_ms.max(self.initial_backoff_ms)),
        }
    }
}

/// Deserialize a duration in milliseconds that must be at least 1 (timeouts).
pub fn positive_ms<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let ms = u64::deserialize(d)?;
    if ms == 0 {
        return Err(serde::de::Error::custom("must be at least 1 ms"));
    }
    Ok(ms)
}

/// Deserialize a number that must be at least 1 (concurrency, sizes).
pub fn positive<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = usize::deserialize(d)?;
    if n == 0 {
        return Err(serde::de::Error::custom("must be at least 1"));
    }
    Ok(n)
}
