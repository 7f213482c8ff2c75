//! The push backend: in the chain it follows presence and claims one queue
//! item per device of an offline recipient; in its delivery queue it sends
//! each item to its device's provider, prunes devices whose token is gone,
//! and counts per provider.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use event_pusher_core::spool::SpoolError;
use event_pusher_core::{
    one_by_one, Attachment, Backend, BackendError, ChatType, Delivery, DeliveryError, Direction, Event, EventBody,
    Targets,
};
use serde_json::Value;

use super::config::{Content, PushConfig};
use super::devices::{provider_name, view, DeviceRegistry, Put};
use super::fcm::FcmProvider;
use super::metrics::{PushMetrics, Rendered};
use super::mongoosepush::MongoosePushProvider;
use super::notification::{build, recipient};
use super::presence::PresenceBook;
use super::provider::{Provider, Sent};
use super::registration::Registration;
use super::store::Store;

/// Why a registry change was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Bad input: the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// The spool could not store it; try again later.
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

pub struct PushBackend {
    name: String,
    offline_only: bool,
    content: Content,
    providers: Vec<Arc<dyn Provider>>,
    devices: DeviceRegistry,
    presence: PresenceBook,
    store: Store,
    metrics: PushMetrics,
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
            offline_only: config.offline_only,
            content: config.content,
            providers,
            devices: DeviceRegistry::default(),
            presence: PresenceBook::default(),
            store: Store::default(),
            metrics: PushMetrics::default(),
        })
    }

    /// The instance name (`mobile` of `[backends.push.mobile]`).
    pub fn name(&self) -> &str {
        &self.name
    }

    fn provider(&self, name: &str) -> Option<&Arc<dyn Provider>> {
        self.providers.iter().find(|p| p.name() == name)
    }

    /// Register a device for `jid` (reduced to its bare JID); answers once
    /// it is stored.
    pub async fn register(&self, jid: &str, device_id: &str, reg: &Registration) -> Result<Put, RegistryError> {
        let user = self.check(jid, device_id, reg).map_err(RegistryError::Invalid)?;
        let provider = provider_name(&reg.address);
        let put = self.devices.put(&user, device_id, reg, &self.store).await?;
        tracing::info!(backend = %self.name, user = %user, device_id, provider, "push device registered");
        Ok(put)
    }

    /// Check a registration without storing it: the user's bare JID, or
    /// what is wrong (naming the field).
    pub fn check(&self, jid: &str, device_id: &str, reg: &Registration) -> Result<String, String> {
        let user = super::registration::bare_jid(jid)?;
        super::registration::check_device_id(device_id)?;
        let provider = provider_name(&reg.address);
        if self.provider(provider).is_none() {
            return Err(format!(
                "provider: \"{provider}\" is not configured on push backend \"{}\"",
                self.name
            ));
        }
        Ok(user)
    }

    /// Remove a device; false when there was none.
    pub async fn unregister(&self, jid: &str, device_id: &str) -> Result<bool, RegistryError> {
        let user = super::registration::bare_jid(jid).map_err(RegistryError::Invalid)?;
        let removed = self.devices.remove(&user, device_id, &self.store).await?;
        if removed {
            tracing::info!(backend = %self.name, user = %user, device_id, "push device removed");
        }
        Ok(removed)
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

    /// Whether this event calls for a notification, and to whom.
    fn recipient_to_notify<'e>(&self, event: &'e Event) -> Option<&'e str> {
        match &event.body {
            EventBody::Chat(c)
                if c.direction == Direction::Out && matches!(c.chat_type, ChatType::Chat | ChatType::Groupchat) =>
            {
                let user = recipient(event)?;
                (!self.offline_only || !self.presence.is_online(user)).then_some(user)
            }
            EventBody::Unacked(_) => recipient(event),
            _ => None,
        }
    }

    /// Send one queue item to its device.
    async fn push(&self, delivery: &Delivery) -> Result<(), DeliveryError> {
        let Some(device_id) = delivery.target.as_deref() else {
            return Err(DeliveryError::permanent("push queue item without a device"));
        };
        let Some(user) = recipient(&delivery.event) else {
            return Err(DeliveryError::permanent("not a message event"));
        };
        // Removed (or pruned) since it was claimed: nothing to send.
        let Some(registered) = self.devices.get(user, device_id) else {
            tracing::debug!(backend = %self.name, user, device_id, "device gone before its push; skipped");
            return Ok(());
        };
        let device = &registered.device;
        let provider_label = provider_name(&device.address);
        let Some(provider) = self.provider(provider_label) else {
            return Err(DeliveryError::permanent(format!(
                "provider \"{provider_label}\" is not configured any more"
            )));
        };
        let counters = self.metrics.provider(provider_label);
        let note = build(
            &delivery.event,
            self.content,
            self.presence.message_count(user),
            device.silent,
        );
        let started = Instant::now();
        let sent = provider.send(device, &note).await;
        counters.latency.observe(started.elapsed().as_secs_f64());
        match sent {
            Ok(Sent::Delivered) => {
                counters.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.devices.pushed(user, device_id, &self.store);
                Ok(())
            }
            Ok(Sent::Invalid { reason }) => {
                if self.devices.prune(user, device_id, &self.store) {
                    counters.pruned.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::info!(backend = %self.name, user, device_id, provider = provider_label, %reason, "push device pruned: token no longer valid");
                }
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

    fn observe(&self, event: &Event) {
        self.presence.observe(event, &self.store);
    }

    /// One queue item per device of the recipient; none when the event
    /// calls for no notification or the recipient has no device.
    fn targets(&self, event: &Event) -> Targets {
        let Some(user) = self.recipient_to_notify(event) else {
            return Targets::Each(Vec::new());
        };
        let devices = self.devices.device_ids(user);
        if !devices.is_empty() {
            self.presence.count_notification(user, &self.store);
        }
        Targets::Each(devices)
    }

    /// Remove the user's devices and presence and badge count (each
    /// through the registry's and the presence book's own paths, so memory
    /// and spool agree): online then offline on the bare JID leaves the
    /// book with nothing for the user, and an empty entry is deleted.
    async fn erase_user(&self, user: &str) -> Result<u64, BackendError> {
        let mut removed = 0;
        for device in self.devices.device_ids(user) {
            if self
                .unregister(user, &device)
                .await
                .map_err(|e| BackendError::new(format!("cannot remove a push device: {e}")))?
            {
                removed += 1;
            }
        }
        for (jid, status) in [
            (format!("{user}/erase"), event_pusher_core::PresenceStatus::Online),
            (user.to_owned(), event_pusher_core::PresenceStatus::Offline),
        ] {
            let event = Event {
                id: Event::new_id(),
                body: event_pusher_core::EventBody::Presence(event_pusher_core::Presence { jid, status }),
                timestamp: time::OffsetDateTime::now_utc(),
                metadata: Default::default(),
            };
            self.presence.observe(&event, &self.store);
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
        Ok(())
    }

    async fn start(&self) -> Result<(), BackendError> {
        for p in &self.providers {
            p.start().await?;
        }
        Ok(())
    }

    /// Not ready while a provider's credential is being refused.
    fn is_ready(&self) -> bool {
        self.providers.iter().all(|p| p.is_ready())
    }

    async fn deliver(&self, batch: &[Delivery]) -> Vec<Result<(), DeliveryError>> {
        one_by_one(batch, |d| self.push(d)).await
    }
}
