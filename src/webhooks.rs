//! Webhook subscriptions at runtime: attach, change, pause, restart and
//! detach while the sidecar runs (`/v1/webhooks`, `event-pusher webhooks`).
//!
//! A subscription is a slot of kind `webhook` named by its id. Attaching
//! registers the slot with the engine (which refuses a taken id), creates
//! its spool tables and stores its record in one fsync'd commit, starts its
//! delivery queue, and only then adds it to the pipeline's subscription
//! index, so an event accepted after the `201` is queued for it. Detaching
//! runs the other way: out of the index, queue stopped (in-flight attempts
//! finish), tables and record dropped, slot retired. At start the stored
//! records are loaded and their slots attached in one commit.
//!
//! Changes run one at a time per id; the index is rebuilt whole after each
//! (one vector push per subscription and class: cheap next to the fsync).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use event_pusher_backends::webhook::{AttachRequest, FieldError, PatchRequest, Subscription, WebhookBackend};
use event_pusher_core::delivery::{BackendHandle, DeliveryEngine};
use event_pusher_core::spool::{Record, Spool, SpoolError};
use event_pusher_core::{AnyBackend, Backend, Pipeline, Slot, SlotRegistry};
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::Mutex;

/// How long a changed or removed subscription's in-flight attempts may take.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The live subscriptions of a process.
#[derive(Default)]
pub struct Webhooks {
    subs: Mutex<BTreeMap<String, Entry>>,
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
}

/// A subscription as the API shows it (never its secret).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    /// `started` or `paused`.
    pub state: &'static str,
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
    pub fn new() -> Self {
        Self::default()
    }

    /// Load the stored subscriptions and attach their slots (before the
    /// engine starts; it starts their queues). A record that no longer
    /// builds is logged and left in the spool.
    pub async fn load(&self, engine: &DeliveryEngine, pipeline: &Pipeline) -> Result<usize, SpoolError> {
        let spool = engine.spool().clone();
        let records = tokio::task::spawn_blocking(move || spool.records())
            .await
            .map_err(SpoolError::io)??;
        let mut attach = Vec::with_capacity(records.len());
        let mut subs = self.subs.lock().await;
        for record in records {
            let sub = match Subscription::from_json(&record.value) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(key = %record.key, error = %e, "unreadable webhook subscription record; skipped");
                    continue;
                }
            };
            match register(engine, &sub) {
                Ok(slot) => {
                    attach.push((slot, slot_name(&sub.id), None));
                    subs.insert(sub.id.clone(), Entry { sub, slot });
                }
                Err(e) => tracing::error!(id = %sub.id, error = %e, "webhook subscription not loaded"),
            }
        }
        let n = attach.len();
        engine.spool().attach_slots(attach).await?;
        rebuild_index(pipeline, &subs);
        Ok(n)
    }

    /// `POST /v1/webhooks`.
    pub async fn attach(
        &self,
        engine: &DeliveryEngine,
        pipeline: &Pipeline,
        body: &serde_json::Value,
    ) -> Result<WebhookView, WebhookError> {
        let sub = AttachRequest::parse(body)?.into_subscription(OffsetDateTime::now_utc());
        // The registry refuses a taken id: that is the 409, and it holds
        // the id while the spool commit runs (attaches commit together).
        let slot = register(engine, &sub)?;
        let record = Record {
            key: sub.id.clone(),
            value: sub.to_json(),
        };
        if let Err(e) = engine
            .spool()
            .attach_slots(vec![(slot, slot_name(&sub.id), Some(record))])
            .await
        {
            engine.forget(slot);
            return Err(e.into());
        }
        engine.start_slot(slot);
        let mut subs = self.subs.lock().await;
        subs.insert(sub.id.clone(), Entry { sub: sub.clone(), slot });
        rebuild_index(pipeline, &subs);
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
        pipeline: &Pipeline,
        id: &str,
        body: &serde_json::Value,
    ) -> Result<WebhookView, WebhookError> {
        let patch = PatchRequest::parse(body)?;
        let rotated = patch.rotate_secret;
        let mut subs = self.subs.lock().await;
        let entry = subs
            .get(id)
            .cloned()
            .ok_or_else(|| WebhookError::NotFound(id.to_owned()))?;
        let next = patch.apply(&entry.sub, OffsetDateTime::now_utc());
        let handle = handle(&next)?;
        engine
            .spool()
            .put_record(Record {
                key: next.id.clone(),
                value: next.to_json(),
            })
            .await?;
        engine.replace(entry.slot, handle, STOP_GRACE).await;
        subs.insert(
            id.to_owned(),
            Entry {
                sub: next.clone(),
                slot: entry.slot,
            },
        );
        rebuild_index(pipeline, &subs);
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
        pipeline: &Pipeline,
        id: &str,
        drain: Option<Duration>,
    ) -> Result<Detached, WebhookError> {
        let entry = {
            let mut subs = self.subs.lock().await;
            let entry = subs.remove(id).ok_or_else(|| WebhookError::NotFound(id.to_owned()))?;
            // No new claims from here on.
            rebuild_index(pipeline, &subs);
            entry
        };
        if let Some(timeout) = drain {
            if let Err(queued) = drained(engine, entry.slot, timeout).await {
                let mut subs = self.subs.lock().await;
                subs.insert(id.to_owned(), entry);
                rebuild_index(pipeline, &subs);
                return Err(WebhookError::DrainTimeout { queued });
            }
        }
        let discarded = engine.remove(entry.slot, id.to_owned(), STOP_GRACE).await?;
        tracing::info!(id, discarded, "webhook detached");
        Ok(Detached {
            id: id.to_owned(),
            discarded,
        })
    }
}

/// Register and attach the slots of the stored subscriptions in a registry
/// of the config's backends, without delivering (the offline `dlq`).
pub async fn attach_stored(spool: &Spool, slots: &mut SlotRegistry) -> Result<(), SpoolError> {
    let reader = spool.clone();
    let records = tokio::task::spawn_blocking(move || reader.records())
        .await
        .map_err(SpoolError::io)??;
    let mut attach = Vec::with_capacity(records.len());
    for r in records {
        if let Ok(slot) = slots.register_runtime(WebhookBackend::KIND, r.key.clone()) {
            attach.push((slot, slot_name(&r.key), None));
        }
    }
    spool.attach_slots(attach).await
}

/// Wait until the slot has nothing queued or in flight; `Err(queued)` at
/// the deadline.
async fn drained(engine: &DeliveryEngine, slot: Slot, timeout: Duration) -> Result<(), u64> {
    let deadline = Instant::now() + timeout;
    loop {
        let s = engine.status_of(slot);
        if s.queued == 0 && s.in_flight == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(s.queued);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `webhook.ID`: the slot's spool tables.
fn slot_name(id: &str) -> String {
    format!("{}.{id}", WebhookBackend::KIND)
}

fn handle(sub: &Subscription) -> Result<BackendHandle, WebhookError> {
    let (backend, options) = WebhookBackend::new(sub).map_err(|e| WebhookError::Backend(e.to_string()))?;
    Ok(BackendHandle::new(sub.id.clone(), AnyBackend::new(backend), options))
}

fn register(engine: &DeliveryEngine, sub: &Subscription) -> Result<Slot, WebhookError> {
    engine
        .add(handle(sub)?)
        .map_err(|_| WebhookError::AlreadyExists(sub.id.clone()))
}

fn rebuild_index(pipeline: &Pipeline, subs: &BTreeMap<String, Entry>) {
    pipeline
        .subscriptions()
        .rebuild(subs.values().map(|e| (e.slot, e.sub.classes())));
}

fn view(engine: &DeliveryEngine, sub: &Subscription, slot: Slot) -> WebhookView {
    let s = engine.status_of(slot);
    WebhookView {
        id: sub.id.clone(),
        url: sub.url.clone(),
        events: sub.events.clone(),
        state: if s.paused { "paused" } else { "started" },
        created_at: sub.created_at.clone(),
        queued: s.queued,
        in_flight: s.in_flight,
        delivered: s.delivered,
        failed: s.failed,
        dead_letters: s.dead_letters,
        secret: None,
    }
}
