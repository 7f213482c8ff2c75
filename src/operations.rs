//! The sidecar's own upkeep while it runs (operations contract): the
//! operational-event producer, auto-disable of failing webhook
//! subscriptions, and the dead-letter retention sweep; plus per-user
//! erasure, shared by `DELETE /v1/users/{jid}` and `erase-user`.
//!
//! Each task sleeps between rounds; none runs when its setting is 0.

use std::sync::Arc;
use std::time::Duration;

use event_pusher_core::operational::{self, Reporter};
use event_pusher_core::spool::{Erased, SpoolError};
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::config::SidecarConfig;
use crate::state::AppState;

/// The settings the upkeep tasks run with.
#[derive(Debug, Clone, Copy)]
pub struct Upkeep {
    /// `[webhooks] disable_after_s` (zero: never).
    pub disable_after: Duration,
    /// `[spool] dead_letter_retention_s` (zero: forever).
    pub retention: Duration,
}

impl Upkeep {
    pub fn of(config: &SidecarConfig) -> Self {
        Upkeep {
            disable_after: Duration::from_secs(config.webhooks.disable_after_s),
            retention: Duration::from_secs(config.spool.dead_letter_retention_s),
        }
    }
}

/// The running upkeep tasks; stopped before the engine drains.
pub struct Running(Vec<JoinHandle<()>>);

impl Running {
    pub fn stop(self) {
        for task in self.0 {
            task.abort();
        }
    }
}

/// Connect the engine's queues to the operational-event producer and start
/// the tasks. Call before `DeliveryEngine::start`.
pub fn start(state: &Arc<AppState>, upkeep: Upkeep) -> Running {
    let (reporter, signals) = Reporter::channel();
    state.engine.set_reporter(reporter);
    let mut tasks = Vec::new();
    let s = state.clone();
    tasks.push(tokio::spawn(
        async move { operational::run(signals, &s.pipeline).await },
    ));
    if !upkeep.disable_after.is_zero() {
        let s = state.clone();
        tasks.push(tokio::spawn(async move {
            // A fraction of the limit, so a subscription is disabled close
            // to it; never more often than 4 times a second.
            let every = (upkeep.disable_after / 8).clamp(Duration::from_millis(250), Duration::from_secs(60));
            loop {
                tokio::time::sleep(every).await;
                s.webhooks.disable_failing(&s.engine, upkeep.disable_after).await;
            }
        }));
    }
    if !upkeep.retention.is_zero() {
        let s = state.clone();
        tasks.push(tokio::spawn(async move {
            // Dead letters expire by the second at best; a sweep reads
            // nothing when no backend holds any (a few atomic loads).
            let every = (upkeep.retention / 4).clamp(Duration::from_millis(500), Duration::from_secs(300));
            loop {
                tokio::time::sleep(every).await;
                match s.spool().expire_dead(upkeep.retention).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(expired = n, "expired dead letters deleted"),
                    Err(e) => tracing::warn!(error = %e, "dead-letter retention sweep failed; will retry"),
                }
            }
        }));
    }
    Running(tasks)
}

/// What `DELETE /v1/users/{jid}` answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Erasure {
    pub queued: u64,
    pub dead_letters: u64,
    pub devices: u64,
}

/// Why an erasure failed part way (what went before it is gone; running it
/// again finishes it).
#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    #[error("backend {backend}: {message}")]
    Backend { backend: String, message: String },
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// Erase everything held about `user` (a bare JID): backends' per-user
/// state first (devices, presence), then every queued event and dead letter.
/// Idempotent. Logged at WARN with counts only.
pub async fn erase_user(state: &AppState, user: &str) -> Result<Erasure, EraseError> {
    let mut devices = 0;
    for b in state.engine.backends() {
        devices += b.backend.erase_user(user).await.map_err(|e| EraseError::Backend {
            backend: format!("{}.{}", b.kind, b.name),
            message: e.to_string(),
        })?;
    }
    let Erased { queued, dead_letters } = state.spool().erase_user(user).await?;
    let erased = Erasure {
        queued,
        dead_letters,
        devices,
    };
    tracing::warn!(queued, dead_letters, devices, "user data erased");
    Ok(erased)
}
