//! The backend: building the AWS client, `Publish` and `PublishBatch`, and
//! mapping each answer back to one result per event.
//!
//! The client is built in `start()` (or on first use), not in `new()`:
//! `new()` runs while the config is read, outside any runtime, and the
//! standard AWS credential chain is async. The SDK's own retries are turned
//! off: the delivery engine already retries with backoff, keeps per-user
//! order, opens its circuit breaker and dead-letters, and two retry layers
//! would multiply attempts and hide failures from it.
//!
//! Batching: the engine hands `deliver` up to `max_batch()` events
//! (one per user at a time). They are grouped by topic and sent as
//! `PublishBatch` calls of at most 10 entries and 256 KiB, all topics at
//! once. Each entry's own Successful/Failed answer becomes that event's
//! result, so only the failed entries are retried.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sns::config::retry::RetryConfig as SdkRetryConfig;
use aws_sdk_sns::config::timeout::TimeoutConfig;
use aws_sdk_sns::config::{BehaviorVersion, Credentials, ProvideCredentials, Region, SharedCredentialsProvider};
use aws_sdk_sns::types::PublishBatchRequestEntry;
use aws_sdk_sns::Client;
use event_pusher_core::{Backend, BackendError, Delivery, DeliveryError, Event};
use tokio::sync::OnceCell;

use super::config::{parse_arn, partition, ArnError, Secret, SnsConfig};
use super::error::{brief, classify, from_sdk};
use super::message::{
    publication, topic_kind, Publication, TopicKind, MAX_BATCH_BYTES, MAX_BATCH_ENTRIES, MAX_MESSAGE_BYTES,
};
use super::topics::{check_topics, create_topics, Topic};

/// What is needed to build the client.
struct Settings {
    region: String,
    endpoint_url: Option<String>,
    credentials: Option<(String, Secret, Option<Secret>)>,
    timeout: Duration,
}

struct Aws {
    client: Client,
    credentials: Option<SharedCredentialsProvider>,
}

pub struct SnsBackend {
    /// `sns.NAME`, for logs and errors.
    label: String,
    settings: Settings,
    presence: Option<Topic>,
    pm: Option<Topic>,
    muc: Option<Topic>,
    batch: bool,
    /// Create the topics at start (emulators, first runs).
    create_topics: bool,
    aws: OnceCell<Aws>,
}

impl SnsBackend {
    pub fn new(name: &str, config: &SnsConfig) -> Result<Self, BackendError> {
        let credentials = match (&config.access_key_id, &config.secret_access_key) {
            (Some(id), Some(secret)) if !id.is_empty() && !secret.expose().is_empty() => Some((
                id.clone(),
                secret.clone(),
                config.session_token.clone().filter(|t| !t.expose().is_empty()),
            )),
            (None, None) if config.session_token.is_none() => None,
            _ => {
                return Err(BackendError::new(
                    "access_key_id and secret_access_key must both be set and non-empty (session_token \
                            optional), or all be left out to use the standard AWS credential chain",
                ))
            }
        };
        let topic = |key: &str, value: &Option<String>| -> Result<Option<Topic>, BackendError> {
            value
                .as_deref()
                .map(|v| {
                    resolve_topic(key, v, &config.region, config.account_id.as_deref())
                        .map_err(BackendError::from_source)
                })
                .transpose()
        };
        let backend = SnsBackend {
            label: format!("sns.{name}"),
            settings: Settings {
                region: config.region.clone(),
                endpoint_url: config
                    .endpoint_url
                    .as_ref()
                    .map(|u| u.as_str().trim_end_matches('/').to_owned()),
                credentials,
                timeout: Duration::from_millis(config.timeout_ms),
            },
            presence: topic("presence_updates_topic", &config.presence_updates_topic)?,
            pm: topic("pm_messages_topic", &config.pm_messages_topic)?,
            muc: topic("muc_messages_topic", &config.muc_messages_topic)?,
            batch: config.batch,
            create_topics: config.create_topics,
            aws: OnceCell::new(),
        };
        if backend.presence.is_none() && backend.pm.is_none() && backend.muc.is_none() {
            tracing::warn!(backend = %format!("sns.{name}"), "no SNS topic is configured; this backend publishes nothing");
        }
        Ok(backend)
    }

    /// Publish one event with `Publish`.
    pub async fn publish(&self, delivery: &Delivery) -> Result<(), DeliveryError> {
        let (topic, p) = self.prepare(&delivery.event)?;
        publish_one(&self.aws().await.client, topic, p).await
    }

    /// The ARN an event would be published to, if any.
    pub fn topic_arn(&self, event: &Event) -> Option<&str> {
        self.topic(event).map(|t| t.arn.as_str())
    }

    fn topic(&self, event: &Event) -> Option<&Topic> {
        match topic_kind(event)? {
            TopicKind::Presence => self.presence.as_ref(),
            TopicKind::Pm => self.pm.as_ref(),
            TopicKind::Muc => self.muc.as_ref(),
        }
    }

    fn topics(&self) -> impl Iterator<Item = &Topic> {
        [&self.presence, &self.pm, &self.muc].into_iter().flatten()
    }

    async fn aws(&self) -> &Aws {
        self.aws.get_or_init(|| build_client(&self.settings)).await
    }

    /// The topic and message for one event, or why it cannot be published.
    fn prepare<'a>(&'a self, event: &Event) -> Result<(&'a Topic, Publication), DeliveryError> {
        let Some(topic) = self.topic(event) else {
            // `wants` keeps these out of the queue; an event spooled before
            // a topic was removed from the config can still get here.
            return Err(DeliveryError::permanent(format!(
                "SNS backend {} has no topic for this event (presence needs presence_updates_topic, incoming chat \
                 pm_messages_topic, incoming groupchat muc_messages_topic)",
                self.label
            )));
        };
        let p = publication(event).map_err(|e| DeliveryError::permanent(e.to_string()))?;
        if p.size > MAX_MESSAGE_BYTES {
            return Err(DeliveryError::permanent(format!(
                "message for SNS topic {} is {} bytes with its attributes, over SNS's limit of {MAX_MESSAGE_BYTES}",
                topic.arn, p.size
            )));
        }
        Ok((topic, p))
    }
}

/// Why a configured topic names no topic this backend can publish to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum TopicError {
    #[error("{key}: {source}")]
    Arn { key: String, source: ArnError },
    #[error(
        "{key}: topic {arn} is in region {topic_region}, but this backend's region is {region}; SNS publishes \
         only to topics of the client's region"
    )]
    OtherRegion {
        key: String,
        arn: String,
        topic_region: String,
        region: String,
    },
    #[error("{key} = \"{name}\" needs account_id to build its ARN (or give the topic as a full ARN)")]
    NeedsAccountId { key: String, name: String },
}

/// `arn:PARTITION:sns:REGION:ACCOUNT:NAME` for a name; a full ARN as it is.
fn resolve_topic(key: &str, value: &str, region: &str, account_id: Option<&str>) -> Result<Topic, TopicError> {
    if value.starts_with("arn:") {
        let parts = parse_arn(value).map_err(|source| TopicError::Arn {
            key: key.to_owned(),
            source,
        })?;
        if parts.region != region {
            return Err(TopicError::OtherRegion {
                key: key.to_owned(),
                arn: value.to_owned(),
                topic_region: parts.region.to_owned(),
                region: region.to_owned(),
            });
        }
        return Ok(Topic {
            arn: value.to_owned(),
            fifo: parts.name.ends_with(".fifo"),
        });
    }
    let account = account_id.ok_or_else(|| TopicError::NeedsAccountId {
        key: key.to_owned(),
        name: value.to_owned(),
    })?;
    Ok(Topic {
        arn: format!("arn:{}:sns:{region}:{account}:{value}", partition(region)),
        fifo: value.ends_with(".fifo"),
    })
}

async fn build_client(settings: &Settings) -> Aws {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
        .operation_attempt_timeout(settings.timeout)
        .operation_timeout(settings.timeout)
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(settings.region.clone()))
        .retry_config(SdkRetryConfig::disabled())
        .timeout_config(timeouts);
    if let Some(url) = &settings.endpoint_url {
        loader = loader.endpoint_url(url.clone());
    }
    if let Some((id, secret, token)) = &settings.credentials {
        let creds = Credentials::new(
            id.clone(),
            secret.expose().to_owned(),
            token.as_ref().map(|t| t.expose().to_owned()),
            None,
            "event-pusher-config",
        );
        loader = loader.credentials_provider(creds);
    }
    let sdk = loader.load().await;
    Aws {
        client: Client::new(&sdk),
        credentials: sdk.credentials_provider(),
    }
}

/// Publish one message with `Publish`.
async fn publish_one(client: &Client, topic: &Topic, p: Publication) -> Result<(), DeliveryError> {
    let mut req = client
        .publish()
        .topic_arn(&topic.arn)
        .message(p.message)
        .set_message_attributes(Some(p.attributes));
    if topic.fifo {
        req = req
            .message_group_id(p.group_id)
            .message_deduplication_id(p.deduplication_id);
    }
    req.send().await.map(|_| ()).map_err(|e| from_sdk(&topic.arn, e))
}

/// Publish up to 10 messages to one topic with `PublishBatch`; one result
/// per entry, in the order given. Entry ids are positions in the chunk.
async fn publish_chunk(client: &Client, topic: &Topic, chunk: Vec<Publication>) -> Vec<Result<(), DeliveryError>> {
    let n = chunk.len();
    let mut entries = Vec::with_capacity(n);
    for (i, p) in chunk.into_iter().enumerate() {
        let mut entry = PublishBatchRequestEntry::builder()
            .id(i.to_string())
            .message(p.message)
            .set_message_attributes(Some(p.attributes));
        if topic.fifo {
            entry = entry
                .message_group_id(p.group_id)
                .message_deduplication_id(p.deduplication_id);
        }
        match entry.build() {
            Ok(e) => entries.push(e),
            // Only fails without id or message, which are always set.
            Err(e) => {
                let err = DeliveryError::permanent(format!("cannot build a PublishBatch entry: {e}"));
                return vec![Err(err); n];
            }
        }
    }
    let out = match client
        .publish_batch()
        .topic_arn(&topic.arn)
        .set_publish_batch_request_entries(Some(entries))
        .send()
        .await
    {
        Ok(out) => out,
        Err(e) => {
            let err = from_sdk(&topic.arn, e);
            return vec![Err(err); n];
        }
    };
    let mut results: Vec<Option<Result<(), DeliveryError>>> = vec![None; n];
    for ok in out.successful() {
        if let Some(slot) = ok
            .id()
            .and_then(|id| id.parse::<usize>().ok())
            .and_then(|i| results.get_mut(i))
        {
            *slot = Some(Ok(()));
        }
    }
    for failed in out.failed() {
        if let Some(slot) = failed.id().parse::<usize>().ok().and_then(|i| results.get_mut(i)) {
            let message = failed.message().unwrap_or("");
            *slot = Some(Err(classify(
                &topic.arn,
                failed.code(),
                message,
                0,
                Some(failed.sender_fault()),
            )));
        }
    }
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(DeliveryError::retryable(format!(
                    "SNS PublishBatch to {} returned no result for this entry",
                    topic.arn
                )))
            })
        })
        .collect()
}

/// Split one topic's messages into `PublishBatch` chunks: at most 10
/// entries and 256 KiB each, keeping the order. Items are (index in the
/// delivery batch, publication).
fn chunks(items: Vec<(usize, Publication)>) -> Vec<Vec<(usize, Publication)>> {
    let mut out: Vec<Vec<(usize, Publication)>> = Vec::new();
    let mut bytes = 0;
    for item in items {
        let size = item.1.size;
        match out.last_mut() {
            Some(last) if last.len() < MAX_BATCH_ENTRIES && bytes + size <= MAX_BATCH_BYTES => {
                bytes += size;
                last.push(item);
            }
            _ => {
                bytes = size;
                out.push(vec![item]);
            }
        }
    }
    out
}

#[async_trait]
impl Backend for SnsBackend {
    const KIND: &'static str = "sns";

    fn wants(&self, event: &Event) -> bool {
        self.topic(event).is_some()
    }

    /// Build the client and check that credentials can be found, so that a
    /// machine without any keeps its events queued (and `/ready` false)
    /// instead of burning their attempts. Then create the topics
    /// (`create_topics = true`) or check that they exist (see `topics.rs`).
    async fn start(&self) -> Result<(), BackendError> {
        let aws = self.aws().await;
        match &aws.credentials {
            Some(provider) => {
                if let Err(e) = provider.provide_credentials().await {
                    return Err(BackendError::with_source(
                        format!(
                            "{}: no AWS credentials ({}); set access_key_id and secret_access_key (any \
                             non-empty pair for an emulator), or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a \
                             profile, or an instance role",
                            self.label,
                            brief(&e)
                        ),
                        e,
                    ));
                }
            }
            None => return Err(BackendError::new(format!("{}: no AWS credential provider", self.label))),
        }
        if self.create_topics {
            create_topics(&aws.client, &self.label, self.topics()).await?;
        } else {
            check_topics(&aws.client, &self.label, self.topics()).await;
        }
        Ok(())
    }

    fn max_batch(&self) -> usize {
        if self.batch {
            MAX_BATCH_ENTRIES
        } else {
            1
        }
    }

    /// Events for the same topic go out with `PublishBatch`, up to ten per
    /// call; a lone one with `Publish`.
    async fn deliver(&self, batch: &[Delivery]) -> Vec<Result<(), DeliveryError>> {
        let mut results: Vec<Option<Result<(), DeliveryError>>> = vec![None; batch.len()];
        // Group by topic, in order of first appearance.
        let mut groups: Vec<(&Topic, Vec<(usize, Publication)>)> = Vec::new();
        for (i, d) in batch.iter().enumerate() {
            match self.prepare(&d.event) {
                Ok((topic, p)) => match groups.iter_mut().find(|(t, _)| *t == topic) {
                    Some((_, items)) => items.push((i, p)),
                    None => groups.push((topic, vec![(i, p)])),
                },
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        if !groups.is_empty() {
            let client = &self.aws().await.client;
            let calls = groups.into_iter().flat_map(|(topic, items)| {
                chunks(items).into_iter().map(move |chunk| async move {
                    let (idx, pubs): (Vec<usize>, Vec<Publication>) = chunk.into_iter().unzip();
                    // A lone message goes out with plain Publish: same cost,
                    // and its error is the call's own, not an entry's.
                    let res = match <[Publication; 1]>::try_from(pubs) {
                        Ok([p]) => vec![publish_one(client, topic, p).await],
                        Err(pubs) => publish_chunk(client, topic, pubs).await,
                    };
                    idx.into_iter().zip(res).collect::<Vec<_>>()
                })
            });
            for (i, r) in futures::future::join_all(calls).await.into_iter().flatten() {
                results[i] = Some(r);
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(DeliveryError::retryable(
                        "SNS backend produced no result for this event",
                    ))
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_arns() {
        let t = resolve_topic("k", "presence", "eu-west-1", Some("123456789012")).unwrap();
        assert_eq!(
            t,
            Topic {
                arn: "arn:aws:sns:eu-west-1:123456789012:presence".into(),
                fifo: false
            }
        );
        let t = resolve_topic("k", "m.fifo", "cn-north-1", Some("123456789012")).unwrap();
        assert_eq!(
            t,
            Topic {
                arn: "arn:aws-cn:sns:cn-north-1:123456789012:m.fifo".into(),
                fifo: true
            }
        );
        let full = "arn:aws:sns:eu-west-1:210987654321:x.fifo";
        assert_eq!(
            resolve_topic("k", full, "eu-west-1", None).unwrap(),
            Topic {
                arn: full.into(),
                fifo: true
            }
        );
        assert!(resolve_topic("k", full, "us-east-1", None)
            .unwrap_err()
            .to_string()
            .contains("region"));
        assert!(resolve_topic("k", "x", "us-east-1", None)
            .unwrap_err()
            .to_string()
            .contains("account_id"));
    }

    fn publication_of(size: usize) -> Publication {
        Publication {
            message: String::new(),
            attributes: Default::default(),
            group_id: String::new(),
            deduplication_id: String::new(),
            size,
        }
    }

    #[test]
    fn chunks_respect_count_and_bytes() {
        let sizes = |c: &Vec<Vec<(usize, Publication)>>| c.iter().map(|v| v.len()).collect::<Vec<_>>();
        let items = (0..23).map(|i| (i, publication_of(100))).collect();
        assert_eq!(sizes(&chunks(items)), vec![10, 10, 3]);
        let items = (0..5).map(|i| (i, publication_of(100_000))).collect();
        assert_eq!(sizes(&chunks(items)), vec![2, 2, 1]);
        let c = chunks((0..12).map(|i| (i, publication_of(1))).collect());
        let order: Vec<usize> = c.into_iter().flatten().map(|(i, _)| i).collect();
        assert_eq!(order, (0..12).collect::<Vec<_>>());
    }
}
