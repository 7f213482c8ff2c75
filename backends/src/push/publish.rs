//! The push backend: in the chain it follows presence and claims one queue
//! item per device of an offline recipient; in its delivery queue it sends
//! each item to its device's provider, prunes devices whose token is gone,
//! and counts per provider.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use event_pusher_core::spool::SpoolError;
use event_pusher_core::state_change::UserPresence;
use event_pusher_core::{
    one_by_one, Attachment, Backend, BackendError, BackendId, Changes, ChatType, Delivery, DeliveryError, Direction,
    Event, EventBody, StateChange, Targets,
};
use serde_json::Value;

use super::coalesce::{Coalescer, Step};
use super::config::{Content, PushConfig};
use super::devices::{provider_name, view, DeviceRegistry, Put, Registered};
use super::fcm::FcmProvider;
use super::metrics::{PushMetrics, Rendered};
use super::mongoosepush::MongoosePushProvider;
use super::notification::{build, collapse_key, has_body, recipient};
use super::presence::PresenceBook;
use super::provider::{Provider, Sent};
use super::registration::{Registration, RegistrationError};
use super::store::Store;

/// The most queue items one `deliver` call takes when coalescing.
const COALESCING_BATCH: usize = 64;

/// Why a registry change was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Bad input: the message names the field.
    #[error(transparent)]
    Invalid(#[from] RegistrationError),
    /// The spool could not store it; try again later.
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// The registry and presence for a cluster store: `(user, device_id,
/// record)` and `(user, presence)`.
pub type Exported = (Vec<(String, String, Value)>, Vec<(String, UserPresence)>);

/// A queue item ready to send (see `PushBackend::prepare`).
struct Prepared<'d> {
    user: &'d str,
    device_id: &'d str,
    registered: Arc<Registered>,
    provider: Arc<dyn Provider>,
    provider_label: &'static str,
    note: super::provider::Notification,
    /// The conversation, when this is its trailing notification.
    trailing_of: Option<String>,
}

pub struct PushBackend {
    name: String,
    /// `push.NAME`: the scope of this backend's state changes.
    scope: String,
    offline_only: bool,
    content: Content,
    providers: Vec<Arc<dyn Provider>>,
    devices: DeviceRegistry,
    presence: PresenceBook,
    store: Store,
    metrics: PushMetrics,
    coalescer: Coalescer,
}

impl PushBackend {
    pub fn new(name: &str, config: &PushConfig) -> Result<Self, BackendError> {
        let mut providers: Vec<Arc<dyn Provider>> = Vec::new();
        if let Some(c) = &config.fcm {
            providers.push(Arc::new(FcmProvider::new(c)?));
        }
        if let Some(c) = &config.mongoosepush {
            providers.push(Arc::new(MongoosePushProvider::new(c)?));
        }
        if let Some(c) = &config.apns {
            providers.push(Arc::new(super::apns::ApnsProvider::new(c)?));
        }
        if let Some(c) = &config.webpush {
            providers.push(Arc::new(super::webpush::WebPushProvider::new(c)?));
        }
        Ok(PushBackend {
            name: name.to_owned(),
            scope: BackendId::new(Self::KIND, name).to_string(),
            offline_only: config.offline_only,
            content: config.content,
            providers,
            devices: DeviceRegistry::default(),
            presence: PresenceBook::default(),
            store: Store::default(),
            metrics: PushMetrics::default(),
            coalescer: Coalescer::new(config.coalesce_ms),
        })
    }

    /// The instance name (`mobile` of `[backends.push.mobile]`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `push.NAME`, the scope of this backend's state changes.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    fn provider(&self, name: &str) -> Option<&Arc<dyn Provider>> {
        self.providers.iter().find(|p| p.name() == name)
    }

    /// Register a device for `jid` (reduced to its bare JID); answers once
    /// it is stored.
    pub async fn register(&self, jid: &str, device_id: &str, reg: &Registration) -> Result<Put, RegistryError> {
        let (change, put) = self
            .registration_change(jid, device_id, reg, &Changes::new())
            .map_err(RegistryError::Invalid)?;
        self.commit(change).await?;
        Ok(put)
    }

    /// The change that registers a device, and whether it adds or replaces
    /// one (with the request's `pending` changes applied); or what is wrong
    /// with the registration, naming the field.
    pub fn registration_change(
        &self,
        jid: &str,
        device_id: &str,
        reg: &Registration,
        pending: &Changes,
    ) -> Result<(StateChange, Put), RegistrationError> {
        let user = self.check(jid, device_id, reg)?;
        let put = if self.devices.has(&user, device_id, pending.about(&self.scope, &user)) {
            Put::Replaced
        } else {
            Put::Created
        };
        Ok((self.devices.put_change(&self.scope, &user, device_id, reg), put))
    }

    /// The change that removes a device, if `jid` has it (with `pending`
    /// applied).
    pub fn removal_change(
        &self,
        jid: &str,
        device_id: &str,
        pending: &Changes,
    ) -> Result<Option<StateChange>, RegistrationError> {
        let user = super::registration::bare_jid(jid)?;
        Ok(self
            .devices
            .has(&user, device_id, pending.about(&self.scope, &user))
            .then(|| StateChange::DeviceRemove {
                scope: self.scope.clone(),
                user,
                device_id: device_id.to_owned(),
            }))
    }

    /// The registry and presence, for merging into a cluster store:
    /// `(user, device_id, record)` and `(user, presence)`.
    pub fn export(&self) -> Exported {
        (self.devices.all(), self.presence.all())
    }

    /// Replace the registry and presence with a cluster store's.
    pub fn replace_shared<'a>(
        &self,
        devices: impl IntoIterator<Item = (&'a str, &'a str, &'a Value)>,
        presence: impl IntoIterator<Item = (String, UserPresence)>,
    ) {
        self.devices.replace(devices);
        self.presence.replace(presence);
    }

    /// A device as a cluster store now holds it (`None`: removed).
    pub fn set_shared_device(&self, user: &str, device_id: &str, record: Option<&Value>) {
        self.devices.set(user, device_id, record);
    }

    /// A user's presence as a cluster store now holds it.
    pub fn set_shared_presence(&self, user: &str, presence: UserPresence) {
        self.presence.set(user, presence);
    }

    /// Store a registry change that a cluster store has already (written
    /// there first): kept here and applied, not relayed again.
    pub async fn commit_local(&self, change: StateChange) -> Result<(), SpoolError> {
        if !self.store.commit_local(vec![change.clone()]).await? {
            Backend::apply(self, &change);
        }
        Ok(())
    }

    /// Store a registry change (applied in memory once committed).
    async fn commit(&self, change: StateChange) -> Result<(), SpoolError> {
        if !self.store.commit(vec![change.clone()]).await? {
            Backend::apply(self, &change);
        }
        Ok(())
    }

    /// Check a registration without storing it: the user's bare JID, or
    /// what is wrong (naming the field).
    pub fn check(&self, jid: &str, device_id: &str, reg: &Registration) -> Result<String, RegistrationError> {
        let user = super::registration::bare_jid(jid)?;
        super::registration::check_device_id(device_id)?;
        let provider = provider_name(&reg.address);
        if self.provider(provider).is_none() {
            return Err(RegistrationError::ProviderNotConfigured {
                provider,
                backend: self.name.clone(),
            });
        }
        Ok(user)
    }

    /// Remove a device; false when there was none.
    pub async fn unregister(&self, jid: &str, device_id: &str) -> Result<bool, RegistryError> {
        match self
            .removal_change(jid, device_id, &Changes::new())
            .map_err(RegistryError::Invalid)?
        {
            Some(change) => {
                self.commit(change).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// What the admin API shows of a user's devices (no tokens).
    pub fn device_views(&self, jid: &str) -> Vec<Value> {
        let user = event_pusher_core::jid::bare(jid);
        self.devices.list(user).iter().map(|r| view(r)).collect()
    }

    /// This backend's series for `/metrics`.
    pub fn metrics(&self) -> Rendered<'_> {
        Rendered {
            name: &self.name,
            metrics: &self.metrics,
            devices: self.devices.counts(),
        }
    }

    /// Whether this event calls for a notification, and to whom (presence
    /// as if the request's `pending` changes were applied).
    fn recipient_to_notify<'e>(&self, event: &'e Event, pending: &Changes) -> Option<&'e str> {
        match &event.body {
            EventBody::Chat(c)
                if c.direction == Direction::Out && matches!(c.chat_type, ChatType::Chat | ChatType::Groupchat) =>
            {
                if !has_body(event) {
                    return None;
                }
                let user = recipient(event)?;
                let online = || {
                    self.presence
                        .effective(user, pending.about(&self.scope, user))
                        .is_online()
                };
                (!self.offline_only || !online()).then_some(user)
            }
            EventBody::Unacked(_) => recipient(event),
            _ => None,
        }
    }

    /// Send one queue item to its device.
    async fn push(&self, delivery: &Delivery) -> Result<(), DeliveryError> {
        match self.prepare(delivery)? {
            Some(prepared) => self.send(delivery, prepared).await,
            None => Ok(()),
        }
    }

    /// Everything about a queue item that needs no I/O: its device and
    /// provider, the coalescing decision, the notification. `None`:
    /// nothing to send (the device is gone, or a sent notification covered
    /// it); an error: held or failed without sending.
    fn prepare<'d>(&self, delivery: &'d Delivery) -> Result<Option<Prepared<'d>>, DeliveryError> {
        let Some(device_id) = delivery.target.as_deref() else {
            return Err(DeliveryError::permanent("push queue item without a device"));
        };
        let Some(user) = recipient(&delivery.event) else {
            return Err(DeliveryError::permanent("not a message event"));
        };
        // Removed (or pruned) since it was claimed: nothing to send.
        let Some(registered) = self.devices.get(user, device_id) else {
            tracing::debug!(backend = %self.name, user, device_id, "device gone before its push; skipped");
            return Ok(None);
        };
        let provider_label = provider_name(&registered.device.address);
        let Some(provider) = self.provider(provider_label).cloned() else {
            return Err(DeliveryError::permanent(format!(
                "provider \"{provider_label}\" is not configured any more"
            )));
        };
        if let Some(wait) = provider.not_ready_for() {
            // Its credential is being refused: this device waits, not
            // sent and not counted; other providers' devices go on.
            return Err(DeliveryError::held(
                format!("provider \"{provider_label}\" is not ready: its credential was refused"),
                wait,
            ));
        }
        // Coalescing: send now, hold, send the trailing notification of a
        // conversation, or ack an event one already covered.
        let conversation = collapse_key(&delivery.event);
        let (step, stored) = match &conversation {
            Some(c) => self.coalescer.decide(user, device_id, c, &delivery.event, delivery.seq),
            None => (Step::SendNow, None),
        };
        if let Some((key, value)) = stored {
            self.store.put_soon(&key, value);
        }
        let trailing: Box<Event>;
        let (event, coalesced) = match step {
            Step::SendNow => (&delivery.event, None),
            Step::Covered => return Ok(None),
            Step::Wait(wait) => {
                return Err(DeliveryError::held(
                    "coalescing: waiting for the conversation's trailing notification",
                    wait,
                ))
            }
            Step::SendTrailing { latest, count } => {
                trailing = latest;
                (&*trailing, Some(count))
            }
        };
        let mut note = build(
            event,
            self.content,
            self.presence.message_count(user),
            registered.device.silent,
        );
        if let Some(count) = coalesced {
            note.data.insert("coalesced".into(), count.to_string());
        }
        Ok(Some(Prepared {
            user,
            device_id,
            registered,
            provider,
            provider_label,
            note,
            trailing_of: coalesced.and(conversation),
        }))
    }

    /// Send a prepared notification and settle its outcome.
    async fn send(&self, delivery: &Delivery, p: Prepared<'_>) -> Result<(), DeliveryError> {
        let Prepared {
            user,
            device_id,
            registered,
            provider,
            provider_label,
            note,
            trailing_of,
        } = p;
        let device = &registered.device;
        let counters = self.metrics.provider(provider_label);
        let started = Instant::now();
        let sent = provider.send(device, &note).await;
        counters.latency.observe(started.elapsed().as_secs_f64());
        if let Some(c) = &trailing_of {
            let ok = sent.is_ok();
            if let Some((key, value)) = self.coalescer.sent(user, device_id, c, &delivery.event, ok) {
                self.store.put_soon(&key, value);
            }
        }
        match sent {
            Ok(Sent::Delivered) => {
                counters.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.devices.pushed(user, device_id, &self.store);
                Ok(())
            }
            Ok(Sent::Invalid { reason }) => {
                let prune = StateChange::DeviceRemove {
                    scope: self.scope.clone(),
                    user: user.to_owned(),
                    device_id: device_id.to_owned(),
                };
                // Not awaited: a crash before the commit costs one more
                // refusal, never a device.
                if !self.store.commit_soon(vec![prune.clone()]) {
                    Backend::apply(self, &prune);
                }
                counters.pruned.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(backend = %self.name, user, device_id, provider = provider_label, %reason, "push device pruned: token no longer valid");
                Ok(())
            }
            Err(e) => {
                counters.failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Err(e)
            }
        }
    }
}

#[async_trait]
impl Backend for PushBackend {
    const KIND: &'static str = "push";

    /// A presence event becomes a `Presence` change (when it changes
    /// anything); applied once the request is stored.
    fn observe(&self, event: &Event, changes: &mut Changes) {
        let Some(p) = event.presence() else { return };
        let user = event_pusher_core::jid::bare(&p.jid);
        let change = StateChange::Presence {
            scope: self.scope.clone(),
            user: user.to_owned(),
            resource: event_pusher_core::jid::resourcepart(&p.jid).to_owned(),
            online: p.status == event_pusher_core::PresenceStatus::Online,
        };
        let mut now = self.presence.effective(user, changes.about(&self.scope, user));
        if now.apply(&change) {
            changes.push(change);
        }
    }

    /// One queue item per device of the recipient; none when the event
    /// calls for no notification or the recipient has no device. A
    /// notification counts one more for the badge (a `Count` change).
    fn targets(&self, event: &Event, changes: &mut Changes) -> Targets {
        let Some(user) = self.recipient_to_notify(event, changes) else {
            return Targets::Each(Vec::new());
        };
        let devices = self.devices.device_ids(user, changes.about(&self.scope, user));
        if !devices.is_empty() {
            changes.push(StateChange::Count {
                scope: self.scope.clone(),
                user: user.to_owned(),
            });
        }
        Targets::Each(devices)
    }

    fn apply(&self, change: &StateChange) {
        if change.scope() != self.scope {
            return;
        }
        match change {
            StateChange::Presence { user, .. } | StateChange::Count { user, .. } => self.presence.apply(user, change),
            StateChange::DevicePut { .. } | StateChange::DeviceRemove { .. } => self.devices.apply(change),
        }
    }

    /// Remove the user's devices, presence and badge count, as state
    /// changes committed like any other (so memory, spool and a cluster
    /// store agree): online then offline on every resource leaves the book
    /// with nothing for the user, and an empty entry is deleted.
    async fn erase_user(&self, user: &str) -> Result<u64, BackendError> {
        let user = event_pusher_core::jid::bare(user).to_owned();
        let mut changes: Vec<StateChange> = self
            .devices
            .device_ids(&user, std::iter::empty())
            .into_iter()
            .map(|device_id| StateChange::DeviceRemove {
                scope: self.scope.clone(),
                user: user.clone(),
                device_id: device_id.to_string(),
            })
            .collect();
        let removed = changes.len() as u64;
        self.store.delete_soon(self.coalescer.forget(&user));
        for (resource, online) in [("erase", true), ("", false)] {
            changes.push(StateChange::Presence {
                scope: self.scope.clone(),
                user: user.clone(),
                resource: resource.to_owned(),
                online,
            });
        }
        let stored = self
            .store
            .commit(changes.clone())
            .await
            .map_err(|e| BackendError::with_source(format!("cannot erase push state of {user}: {e}"), e))?;
        if !stored {
            for change in &changes {
                Backend::apply(self, change);
            }
        }
        Ok(removed)
    }

    fn attach(&self, attachment: &Attachment) -> Result<(), BackendError> {
        let rows = self
            .store
            .attach(attachment)
            .map_err(|e| BackendError::with_source(format!("cannot load the push registry: {e}"), e))?;
        self.devices.load(&rows);
        self.presence.load(&rows);
        self.store.delete_soon(self.coalescer.load(&rows));
        Ok(())
    }

    async fn start(&self) -> Result<(), BackendError> {
        for p in &self.providers {
            p.start().await?;
        }
        Ok(())
    }

    /// Not ready only while every provider's credential is being refused:
    /// a provider that is not ready holds its own devices' notifications
    /// (see `push`), not the others'.
    fn is_ready(&self) -> bool {
        self.providers.is_empty() || self.providers.iter().any(|p| p.is_ready())
    }

    /// Coalescing needs a device's queue items together: unordered.
    fn ordering(&self) -> Option<event_pusher_core::delivery::DeliveryOrder> {
        self.coalescer
            .is_on()
            .then_some(event_pusher_core::delivery::DeliveryOrder::Unordered)
    }

    fn providers_ready(&self) -> Option<Vec<(&'static str, bool)>> {
        Some(self.providers.iter().map(|p| (p.name(), p.is_ready())).collect())
    }

    /// Coalescing takes the ready items in batches: decided in queue
    /// order (so the first of a burst is the one sent at once), then sent
    /// together.
    fn max_batch(&self) -> usize {
        if self.coalescer.is_on() {
            COALESCING_BATCH
        } else {
            1
        }
    }

    async fn deliver(&self, batch: &[Delivery]) -> Vec<Result<(), DeliveryError>> {
        if batch.len() == 1 {
            return one_by_one(batch, |d| self.push(d)).await;
        }
        let prepared: Vec<_> = batch.iter().map(|d| (d, self.prepare(d))).collect();
        futures::future::join_all(prepared.into_iter().map(|(d, p)| async move {
            match p? {
                Some(p) => self.send(d, p).await,
                None => Ok(()),
            }
        }))
        .await
    }
}
