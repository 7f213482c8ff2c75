//! Value types shared by backend and filter configs, each validating
//! itself while it is deserialized, so a bad value is reported at its own
//! line and column.

use std::time::Duration;

use event_pusher_core::delivery::{BreakerPolicy, DeliveryOptions, RetryPolicy};
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
                    "unknown event class \"{name}\" (expected presence, chat, groupchat, headline, normal, unacked or operational)"
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

/// `[backends.KIND.NAME.retry]`, checked as a whole once its keys are read
/// (so a bad combination is reported at the table, with its key).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "RawRetryConfig")]
pub struct RetryConfig {
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

/// The keys as written; [`RetryConfig`] is what passed the checks.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRetryConfig {
    #[serde(deserialize_with = "at_least_one_attempt")]
    max_attempts: u32,
    initial_backoff_ms: u64,
    max_backoff_ms: u64,
}

impl Default for RawRetryConfig {
    fn default() -> Self {
        let d = RetryConfig::default();
        RawRetryConfig {
            max_attempts: d.max_attempts,
            initial_backoff_ms: d.initial_backoff_ms,
            max_backoff_ms: d.max_backoff_ms,
        }
    }
}

/// A `[retry]` whose first backoff is longer than its longest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("initial_backoff_ms ({initial_backoff_ms}) is greater than max_backoff_ms ({max_backoff_ms})")]
pub struct BackoffOrder {
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

impl TryFrom<RawRetryConfig> for RetryConfig {
    type Error = BackoffOrder;

    fn try_from(raw: RawRetryConfig) -> Result<Self, BackoffOrder> {
        if raw.initial_backoff_ms > raw.max_backoff_ms {
            return Err(BackoffOrder {
                initial_backoff_ms: raw.initial_backoff_ms,
                max_backoff_ms: raw.max_backoff_ms,
            });
        }
        Ok(RetryConfig {
            max_attempts: raw.max_attempts,
            initial_backoff_ms: raw.initial_backoff_ms,
            max_backoff_ms: raw.max_backoff_ms,
        })
    }
}

/// `max_attempts` counts the first attempt, so 0 would mean "never deliver".
fn at_least_one_attempt<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = u32::deserialize(d)?;
    if n == 0 {
        return Err(serde::de::Error::custom(
            "must be at least 1 (the first attempt counts as one)",
        ));
    }
    Ok(n)
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
    pub fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts,
            initial_backoff: Duration::from_millis(self.initial_backoff_ms),
            max_backoff: Duration::from_millis(self.max_backoff_ms),
        }
    }
}

/// `ordering`: whether a backend keeps each user's events in order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderingConfig {
    /// One event per user in flight, in order (the default).
    #[default]
    PerUser,
    /// No per-user order: a user's backlog drains at full concurrency.
    None,
}

impl OrderingConfig {
    pub fn delivery_order(self) -> event_pusher_core::delivery::DeliveryOrder {
        match self {
            OrderingConfig::PerUser => event_pusher_core::delivery::DeliveryOrder::PerUser,
            OrderingConfig::None => event_pusher_core::delivery::DeliveryOrder::Unordered,
        }
    }
}

/// The delivery keys every backend table has, translated once into what the
/// delivery engine runs with (`concurrency`, `breaker_threshold`, `retry`).
pub fn delivery_options(concurrency: usize, breaker_threshold: u32, retry: &RetryConfig) -> DeliveryOptions {
    let retry = retry.policy();
    DeliveryOptions {
        concurrency,
        retry,
        breaker: BreakerPolicy {
            threshold: breaker_threshold,
            // Never back off the whole endpoint for longer than a single
            // event would wait, so short test backoffs stay short.
            initial_cooldown: retry.initial_backoff.max(Duration::from_millis(100)),
            max_cooldown: retry.max_backoff.min(Duration::from_secs(30)),
        },
        ..DeliveryOptions::default()
    }
}

/// Deserialize an optional rate per second that must be above 0
/// (`rate_limit_per_s`).
pub fn rate_per_s<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let rate = f64::deserialize(d)?;
    if !(rate.is_finite() && rate > 0.0) {
        return Err(serde::de::Error::custom(
            "must be a number above 0 (leave the key out for no limit)",
        ));
    }
    Ok(Some(rate))
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
