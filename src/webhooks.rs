//! Webhook subscriptions at runtime: attach, change, pause, restart and
//! detach while the sidecar runs (`/v1/webhooks`, `event-pusher webhooks`).
//!
//! A subscription is a slot of kind `webhook` named by its id. Its slot's
//! lifecycle (registry, spool tables and record, queue, subscription index)
//! belongs to the [`DeliveryEngine`]; this module maps requests and
//! answers onto it, keeps the subscriptions' settings for the views, and
//! writes to the cluster store first when there is one. At start the
//! stored records are loaded and their slots attached in one commit.
//!
//! Changes run one at a time.
//!
//! With a cluster store (`[cluster]`), every change is written to the store
//! first and answered once it committed (`503 cluster store unavailable`
//! while it cannot be reached, changing nothing); changes made on other
//! sidecars arrive through [`Webhooks::apply_shared`] and are applied here
//! the same way, locally only.

mod disable;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use event_pusher_backends::webhook::{
    check_egress, shown_url, AttachRequest, FieldError, PatchRequest, Subscription, WebhookBackend,
};
use event_pusher_core::delivery::{AttachError, BackendHandle, DeliveryEngine, SlotSpec};
use event_pusher_core::spool::{Record, Spool, SpoolError};
use event_pusher_core::{AnyBackend, Backend, BackendId, Slot, SlotRegistry};
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::Mutex;

use crate::cluster::{Cluster, SharedError};

/// How long a changed or removed subscription's in-flight attempts may take.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The live subscriptions of a process.
#[derive(Default)]
pub struct Webhooks {
    subs: Mutex<BTreeMap<String, Entry>>,
    /// Held through each change, so an API change and one learned from
    /// the cluster store never interleave.
    ops: Mutex<()>,
    cluster: Option<Arc<Cluster>>,
}

#[derive(Clone)]
struct Entry {
    sub: Subscription,
    slot: Slot,
}

/// Why a request on subscriptions failed.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{0}")]
    Invalid(#[from] FieldError),
    #[error("already_exists")]
    AlreadyExists(String),
    #[error("no webhook subscription \"{0}\"")]
    NotFound(String),
    /// `?drain=true` ran out of time; nothing was removed.
    #[error("drain timed out with {queued} events still queued; the subscription is kept")]
    DrainTimeout { queued: u64 },
    #[error("{0}")]
    Spool(#[from] SpoolError),
    #[error("{0}")]
    Backend(String),
    /// The cluster store could not take the change; nothing changed.
    #[error("{0}")]
    Shared(#[from] SharedError),
}

/// A subscription as the API shows it (never its secret).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    /// `started`, `paused` or `disabled`.
    pub state: &'static str,
    /// Why and when it was disabled (auto-disable), while it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_at: Option<String>,
    /// `refuse` or `dead_letter`: what a full queue does to new events.
    #[schema(value_type = String, example = "dead_letter")]
    pub overflow: event_pusher_core::spool::Overflow,
    pub rate_limit_per_s: Option<f64>,
    pub created_at: String,
    pub queued: u64,
    pub in_flight: u64,
    pub delivered: u64,
    pub failed: u64,
    pub dead_letters: u64,
    /// Only in the answer to the attach (or a rotation): the secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// The answer to a detach.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Detached {
    pub id: String,
    /// Queued events dropped with the subscription.
    pub discarded: u64,
}

impl Webhooks {
    /// The subscriptions of a sidecar; with `cluster`, shared through it.
    pub fn new(cluster: Option<Arc<Cluster>>) -> Self {
        Webhooks {
            cluster,
            ..Self::default()
        }
    }

    /// The cluster store to write to first, if there is one.
    fn store(&self) -> Result<Option<&event_pusher_cluster::ClusterStore>, WebhookError> {
        match &self.cluster {
            None => Ok(None),
            Some(c) => Ok(Some(c.store()?)),
        }
    }

    /// Load the stored subscriptions and attach their slots (before the
    /// engine starts; it starts their queues). A record that no longer
    /// builds is logged and left in the spool.
    pub async fn load(&self, engine: &DeliveryEngine) -> Result<usize, SpoolError> {
        let spool = engine.spool().clone();
        let records = tokio::task::spawn_blocking(move || spool.records())
            .await
            .map_err(SpoolError::io)??;
        let mut specs = Vec::with_capacity(records.len());
        let mut loaded = Vec::with_capacity(records.len());
        for record in records {
            let sub = match Subscription::from_json(&record.value) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(key = %record.key, error = %e, "unreadable webhook subscription record; skipped");
                    continue;
                }
            };
            match spec(&sub, None) {
                Ok(spec) => {
                    specs.push(spec);
                    loaded.push(sub);
                }
                Err(e) => tracing::error!(id = %sub.id, error = %e, "webhook subscription not loaded"),
            }
        }
        // The records are in the spool already: the slots' tables are
        // attached in one commit without writing them again.
        let attached = engine.attach_all(specs).await?;
        let mut subs = self.subs.lock().await;
        for (sub, result) in loaded.into_iter().zip(attached) {
            match result {
                Ok(slot) => {
                    subs.insert(sub.id.clone(), Entry { sub, slot });
                }
                Err(e) => tracing::error!(id = %sub.id, error = %e, "webhook subscription not loaded"),
            }
        }
        Ok(subs.len())
    }

    /// `POST /v1/webhooks`.
    pub async fn attach(&self, engine: &DeliveryEngine, body: &serde_json::Value) -> Result<WebhookView, WebhookError> {
        let sub = AttachRequest::parse(body)?.into_subscription(OffsetDateTime::now_utc());
        check_egress(&sub.url).await?;
        let _op = self.ops.lock().await;
        if let Some(store) = self.store()? {
            if self.subs.lock().await.contains_key(&sub.id) {
                return Err(WebhookError::AlreadyExists(sub.id));
            }
            let record = record_json(&sub);
            match store
                .create_subscription(&sub.id, &record, false)
                .await
                .map_err(SharedError::from)?
            {
                event_pusher_cluster::CreateOutcome::Created => {}
                event_pusher_cluster::CreateOutcome::AlreadyExists => return Err(WebhookError::AlreadyExists(sub.id)),
            }
        }
        // The registry refuses a taken id: that is the 409, and it holds
        // the id while the spool commit runs (attaches commit together).
        let slot = match attach_slot(engine, &sub).await {
            Ok(slot) => slot,
            Err(e) => {
                // Refused here: take it back out of the cluster store, so
                // the refusal changes nothing anywhere.
                if let Some(store) = self.store().ok().flatten() {
                    if let Err(undo) = store.delete_subscription(&sub.id).await {
                        tracing::error!(id = %sub.id, error = %undo, "webhook refused here but left in the cluster store");
                    }
                }
                return Err(e);
            }
        };
        let mut subs = self.subs.lock().await;
        subs.insert(sub.id.clone(), Entry { sub: sub.clone(), slot });
        tracing::info!(id = %sub.id, url = %sub.url, events = ?sub.events, "webhook attached");
        let mut view = view(engine, &sub, slot);
        view.secret = Some(sub.secret);
        Ok(view)
    }

    pub async fn list(&self, engine: &DeliveryEngine) -> Vec<WebhookView> {
        let subs = self.subs.lock().await;
        subs.values().map(|e| view(engine, &e.sub, e.slot)).collect()
    }

    pub async fn get(&self, engine: &DeliveryEngine, id: &str) -> Result<WebhookView, WebhookError> {
        let e = self.entry(id).await?;
        Ok(view(engine, &e.sub, e.slot))
    }

    async fn entry(&self, id: &str) -> Result<Entry, WebhookError> {
        self.subs
            .lock()
            .await
            .get(id)
            .cloned()
            .ok_or_else(|| WebhookError::NotFound(id.to_owned()))
    }

    /// `PATCH /v1/webhooks/{id}`: store the new settings, then restart the
    /// subscription's queue on them.
    pub async fn patch(
        &self,
        engine: &DeliveryEngine,
        id: &str,
        body: &serde_json::Value,
    ) -> Result<WebhookView, WebhookError> {
        let patch = PatchRequest::parse(body)?;
        if let Some(url) = &patch.url {
            check_egress(url).await?;
        }
        let rotated = patch.rotate_secret;
        let _op = self.ops.lock().await;
        let mut subs = self.subs.lock().await;
        let entry = subs
            .get(id)
            .cloned()
            .ok_or_else(|| WebhookError::NotFound(id.to_owned()))?;
        let next = patch.apply(&entry.sub, OffsetDateTime::now_utc());
        let spec = spec(&next, Some(record_of(&next)))?;
        if let Some(store) = self.store()? {
            let paused = engine.status_of(entry.slot).paused;
            if !store
                .update_subscription(id, &record_json(&next), paused)
                .await
                .map_err(SharedError::from)?
            {
                return Err(WebhookError::NotFound(id.to_owned()));
            }
        }
        engine.change(entry.slot, spec, STOP_GRACE).await?;
        subs.insert(
            id.to_owned(),
            Entry {
                sub: next.clone(),
                slot: entry.slot,
            },
        );
        tracing::info!(id, rotated, "webhook changed");
        let mut view = view(engine, &next, entry.slot);
        if rotated {
            view.secret = Some(next.secret);
        }
        Ok(view)
    }

    /// `pause` / `restart`: the flag is stored; a paused subscription keeps
    /// queueing.
    pub async fn set_paused(
        &self,
        engine: &DeliveryEngine,
        id: &str,
        paused: bool,
    ) -> Result<WebhookView, WebhookError> {
        let _op = self.ops.lock().await;
        let e = self.entry(id).await?;
        if let Some(store) = self.store()? {
            // `restart` also enables a disabled subscription.
            let mut shared = e.sub.clone();
            if !paused {
                shared.disabled = None;
            }
            if !store
                .update_subscription(id, &record_json(&shared), paused)
                .await
                .map_err(SharedError::from)?
            {
                return Err(WebhookError::NotFound(id.to_owned()));
            }
        }
        if !paused {
            self.enable(engine, id).await?;
        }
        let e = self.entry(id).await?;
        engine.set_paused(e.slot, paused).await?;
        tracing::info!(id, paused, "webhook {}", if paused { "paused" } else { "restarted" });
        Ok(view(engine, &e.sub, e.slot))
    }

    /// `DELETE /v1/webhooks/{id}`; with `drain`, first wait up to that
    /// long for its queue to empty (and give up, keeping it, if it does not).
    pub async fn detach(
        &self,
        engine: &DeliveryEngine,
        id: &str,
        drain: Option<Duration>,
    ) -> Result<Detached, WebhookError> {
        let _op = self.ops.lock().await;
        // The store is checked before anything changes here.
        let store = self.store()?;
        let entry = self.entry(id).await?;
        // No new claims from here on; given up (the withdrawal dropped on
        // an early return), the slot claims again as before.
        let withdrawal = engine.withdraw(entry.slot);
        if let Some(timeout) = drain {
            if let Err(queued) = withdrawal.drained(timeout).await {
                return Err(WebhookError::DrainTimeout { queued });
            }
        }
        if let Some(store) = store {
            store.delete_subscription(id).await.map_err(SharedError::from)?;
        }
        let discarded = withdrawal.remove(id.to_owned(), STOP_GRACE).await?;
        self.subs.lock().await.remove(id);
        crate::memory::trim_soon();
        tracing::info!(id, discarded, "webhook detached");
        Ok(Detached {
            id: id.to_owned(),
            discarded,
        })
    }
}

impl Webhooks {
    /// Every subscription with its stored record and paused flag (to merge
    /// into a cluster store).
    pub async fn shared_records(&self, engine: &DeliveryEngine) -> Vec<(String, serde_json::Value, bool)> {
        let subs = self.subs.lock().await;
        subs.values()
            .map(|e| (e.sub.id.clone(), record_json(&e.sub), engine.status_of(e.slot).paused))
            .collect()
    }

    /// A subscription as the cluster store now holds it (`None`: detached
    /// there): attached, changed, paused or detached here to match, locally
    /// only. A detach elsewhere discards this sidecar's queue for it.
    pub async fn apply_shared(
        &self,
        engine: &DeliveryEngine,
        id: &str,
        record: Option<serde_json::Value>,
        paused: bool,
    ) {
        let _op = self.ops.lock().await;
        if let Err(e) = self.apply_shared_locked(engine, id, record, paused).await {
            tracing::error!(id, error = %e, "webhook subscription from the cluster store not applied");
        }
    }

    /// Match every subscription to the store's list (after a load).
    pub async fn reconcile_shared(&self, engine: &DeliveryEngine, shared: &[(String, serde_json::Value, bool)]) {
        let _op = self.ops.lock().await;
        let local: Vec<String> = self.subs.lock().await.keys().cloned().collect();
        for id in local.iter().filter(|id| !shared.iter().any(|(s, _, _)| s == *id)) {
            if let Err(e) = self.apply_shared_locked(engine, id, None, false).await {
                tracing::error!(id, error = %e, "webhook subscription not detached");
            }
        }
        for (id, record, paused) in shared {
            if let Err(e) = self
                .apply_shared_locked(engine, id, Some(record.clone()), *paused)
                .await
            {
                tracing::error!(id, error = %e, "webhook subscription from the cluster store not applied");
            }
        }
    }

    async fn apply_shared_locked(
        &self,
        engine: &DeliveryEngine,
        id: &str,
        record: Option<serde_json::Value>,
        paused: bool,
    ) -> Result<(), WebhookError> {
        let current = self.subs.lock().await.get(id).cloned();
        let Some(record) = record else {
            if let Some(entry) = current {
                let discarded = engine.remove(entry.slot, id.to_owned(), STOP_GRACE).await?;
                self.subs.lock().await.remove(id);
                crate::memory::trim_soon();
                tracing::info!(id, discarded, "webhook detached on another sidecar");
            }
            return Ok(());
        };
        let sub: Subscription = serde_json::from_value(record).map_err(|e| WebhookError::Backend(e.to_string()))?;
        let slot = match current {
            None => {
                let slot = attach_slot(engine, &sub).await?;
                tracing::info!(id, url = %sub.url, "webhook attached on another sidecar");
                slot
            }
            Some(entry) if entry.sub != sub => {
                engine
                    .change(entry.slot, spec(&sub, Some(record_of(&sub)))?, STOP_GRACE)
                    .await?;
                tracing::info!(id, "webhook changed on another sidecar");
                entry.slot
            }
            Some(entry) => entry.slot,
        };
        self.subs.lock().await.insert(id.to_owned(), Entry { sub, slot });
        if engine.status_of(slot).paused != paused {
            engine.set_paused(slot, paused).await?;
        }
        Ok(())
    }
}

/// A subscription's record as the cluster store keeps it.
pub(crate) fn record_json(sub: &Subscription) -> serde_json::Value {
    serde_json::to_value(sub).unwrap_or(serde_json::Value::Null)
}

/// Register and attach the slots of the stored subscriptions in a registry
/// of the config's backends, without delivering (the offline `dlq`: no
/// engine runs there).
pub async fn attach_stored(spool: &Spool, slots: &mut SlotRegistry) -> Result<(), SpoolError> {
    let reader = spool.clone();
    let records = tokio::task::spawn_blocking(move || reader.records())
        .await
        .map_err(SpoolError::io)??;
    let mut attach = Vec::with_capacity(records.len());
    for r in records {
        if let Ok(slot) = slots.register_runtime(WebhookBackend::KIND, r.key.clone()) {
            attach.push((slot, BackendId::new(WebhookBackend::KIND, &r.key).to_string(), None));
        }
    }
    spool.attach_slots(attach).await
}

/// A subscription's slot as the engine attaches it: its backend, `record`
/// to store with it, its classes, and diverted while it is disabled.
fn spec(sub: &Subscription, record: Option<Record>) -> Result<SlotSpec, WebhookError> {
    let (backend, options) = WebhookBackend::new(sub).map_err(|e| WebhookError::Backend(e.to_string()))?;
    let handle = BackendHandle::new(sub.id.clone(), AnyBackend::new(backend), options);
    Ok(SlotSpec::new(handle, record, sub.classes()).diverted(sub.disabled.is_some()))
}

/// A subscription as the spool's `subscriptions` table keeps it.
pub(super) fn record_of(sub: &Subscription) -> Record {
    Record {
        key: sub.id.clone(),
        value: sub.to_json(),
    }
}

/// Attach a subscription's slot in one call (the engine rolls back what
/// it did if the spool refuses).
async fn attach_slot(engine: &DeliveryEngine, sub: &Subscription) -> Result<Slot, WebhookError> {
    engine
        .attach(spec(sub, Some(record_of(sub)))?)
        .await
        .map_err(|e| match e {
            AttachError::Taken(_) => WebhookError::AlreadyExists(sub.id.clone()),
            AttachError::Spool(e) => WebhookError::Spool(e),
        })
}

fn view(engine: &DeliveryEngine, sub: &Subscription, slot: Slot) -> WebhookView {
    let s = engine.status_of(slot);
    WebhookView {
        id: sub.id.clone(),
        url: shown_url(&sub.url),
        events: sub.events.clone(),
        state: disable::state(sub.disabled.is_some(), s.paused),
        disabled_reason: sub.disabled.as_ref().map(|d| d.reason.clone()),
        disabled_at: sub.disabled.as_ref().map(|d| d.at.clone()),
        overflow: sub.overflow,
        rate_limit_per_s: sub.rate_limit_per_s,
        created_at: sub.created_at.clone(),
        queued: s.queued,
        in_flight: s.in_flight,
        delivered: s.delivered,
        failed: s.failed,
        dead_letters: s.dead_letters,
        secret: None,
    }
}
