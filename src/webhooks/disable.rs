//! Auto-disable (`[webhooks] disable_after_s`): a subscription whose
//! deliveries have failed without one success for that long stops
//! delivering, and its new events go straight to its dead letters, so it
//! neither grows without bound nor loses anything. `restart` enables it
//! again; its backlog goes out first.
//!
//! Disabled is stored in the subscription's record (`disabled`: reason and
//! time) together with the paused flag the queue already obeys, so it
//! survives a restart of the sidecar.

use std::sync::atomic::Ordering;
use std::time::Duration;

use event_pusher_backends::webhook::Disabled;
use event_pusher_core::delivery::DeliveryEngine;
use event_pusher_core::operational::Signal;
use event_pusher_core::spool::{now_ms, SpoolError};
use time::OffsetDateTime;

use event_pusher_backends::webhook::WebhookBackend;
use event_pusher_core::Backend;
use event_pusher_core::BackendId;

use super::{Entry, WebhookError, Webhooks};

impl Webhooks {
    /// Disable every started subscription failing for at least `after`.
    pub async fn disable_failing(&self, engine: &DeliveryEngine, after: Duration) {
        let now = now_ms();
        // One change at a time, as the API's: the cluster store sees them in
        // the order they are made here.
        let _op = self.ops.lock().await;
        let store = match self.store() {
            Ok(store) => store,
            // Store down: the subscription stays enabled until it is back
            // (disabling it here alone would undo at the next change).
            Err(e) => {
                tracing::debug!(error = %e, "auto-disable waits for the cluster store");
                return;
            }
        };
        let mut subs = self.subs.lock().await;
        for entry in subs.values_mut() {
            if entry.sub.disabled.is_some() || engine.is_paused(entry.slot) {
                continue;
            }
            let Some(b) = engine.backend(entry.slot) else { continue };
            let since = b.stats.failing_since_ms.load(Ordering::Relaxed);
            if since == 0 || now.saturating_sub(since) < after.as_millis() as u64 {
                continue;
            }
            if let Err(e) = disable(engine, store, entry, since, after).await {
                tracing::warn!(id = %entry.sub.id, error = %e, "cannot disable a failing webhook yet; will retry");
            }
        }
    }

    /// `restart` of a disabled subscription: enable it again (record first,
    /// then new events queue again). Nothing when it is not disabled.
    pub(super) async fn enable(&self, engine: &DeliveryEngine, id: &str) -> Result<(), SpoolError> {
        let mut subs = self.subs.lock().await;
        let Some(entry) = subs.get_mut(id) else { return Ok(()) };
        if entry.sub.disabled.is_none() {
            return Ok(());
        }
        let mut next = entry.sub.clone();
        next.disabled = None;
        store(engine, &next).await?;
        engine.set_diverted(entry.slot, false);
        // A fresh start: the failures before the restart do not count.
        if let Some(b) = engine.backend(entry.slot) {
            b.stats.failing_since_ms.store(0, Ordering::Relaxed);
        }
        entry.sub = next;
        tracing::info!(id, "webhook enabled again");
        Ok(())
    }
}

/// `state` as the API shows it.
pub(super) fn state(entry_disabled: bool, paused: bool) -> &'static str {
    match (entry_disabled, paused) {
        (true, _) => "disabled",
        (false, true) => "paused",
        (false, false) => "started",
    }
}

async fn disable(
    engine: &DeliveryEngine,
    shared: Option<&event_pusher_cluster::ClusterStore>,
    entry: &mut Entry,
    since_ms: u64,
    after: Duration,
) -> Result<(), WebhookError> {
    let since = OffsetDateTime::from_unix_timestamp_nanos(i128::from(since_ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let since = event_pusher_core::event::timestamp_millis::format(&since);
    let reason = format!(
        "deliveries failed without a success for {}s (since {since})",
        after.as_secs()
    );
    let mut next = entry.sub.clone();
    next.disabled = Some(Disabled {
        reason: reason.clone(),
        at: event_pusher_core::event::timestamp_millis::format(&OffsetDateTime::now_utc()),
    });
    // Shared first: every sidecar stops delivering to it (disabled is part
    // of the record, paused the store's flag).
    if let Some(shared) = shared {
        shared
            .update_subscription(&next.id, &super::record_json(&next), true)
            .await
            .map_err(crate::cluster::SharedError::from)?;
    }
    store(engine, &next).await?;
    engine.set_diverted(entry.slot, true);
    engine.set_paused(entry.slot, true).await?;
    entry.sub = next;
    tracing::warn!(id = %entry.sub.id, %reason, "webhook disabled");
    engine.reporter().report(Signal::WebhookDisabled {
        slot: entry.slot,
        backend: BackendId::new(WebhookBackend::KIND, &entry.sub.id).to_string(),
        reason,
        failing_since: since,
    });
    Ok(())
}

async fn store(engine: &DeliveryEngine, sub: &event_pusher_backends::webhook::Subscription) -> Result<(), SpoolError> {
    engine.spool().put_record(super::record_of(sub)).await
}
