//! A configured topic, and at start: check that the configured topics
//! exist, or create them when `create_topics = true` (emulators, first
//! runs).
//!
//! Creating is opt-in: in production topics usually belong to
//! infrastructure code and the sidecar's role may not be allowed to create
//! them. `CreateTopic` is idempotent, so a restart with the flag on is
//! harmless.

use aws_sdk_sns::error::ProvideErrorMetadata;
use aws_sdk_sns::Client;
use event_pusher_core::BackendError;

use super::error::brief;

/// One configured topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Topic {
    pub arn: String,
    /// `.fifo` topics need a group id and take a deduplication id.
    pub fifo: bool,
}

/// The topic's name: the last field of its ARN.
fn topic_name(arn: &str) -> &str {
    arn.rsplit(':').next().unwrap_or(arn)
}

/// Create each topic (with `FifoTopic` for `.fifo` names). Fails when a
/// topic cannot be created, or is created under another ARN than the one
/// configured (wrong `region` or `account_id` for this endpoint), since
/// publishing would then go to a topic that does not exist.
pub(crate) async fn create_topics<'a>(
    client: &Client,
    label: &str,
    topics: impl Iterator<Item = &'a Topic>,
) -> Result<(), BackendError> {
    for topic in topics {
        let name = topic_name(&topic.arn);
        let mut req = client.create_topic().name(name);
        if topic.fifo {
            req = req.attributes("FifoTopic", "true");
        }
        let created = req.send().await.map_err(|e| {
            let message = format!("{label}: cannot create SNS topic {name}: {}", brief(&e));
            BackendError::with_source(message, e)
        })?;
        match created.topic_arn() {
            Some(arn) if arn == topic.arn => {
                tracing::info!(backend = %label, topic = %arn, "SNS topic created (or already there)")
            }
            other => {
                return Err(BackendError::new(format!(
                    "{label}: created SNS topic {name} as {}, but the config publishes to {}; check region and \
                     account_id",
                    other.unwrap_or("(no ARN)"),
                    topic.arn
                )))
            }
        }
    }
    Ok(())
}

/// Log whether each topic exists. Missing topics are only logged:
/// publishing may be allowed where `GetTopicAttributes` is not.
pub(crate) async fn check_topics<'a>(client: &Client, label: &str, topics: impl Iterator<Item = &'a Topic>) {
    for topic in topics {
        match client.get_topic_attributes().topic_arn(&topic.arn).send().await {
            Ok(_) => tracing::debug!(backend = %label, topic = %topic.arn, "SNS topic found"),
            Err(e) if e.code().is_some_and(|c| c.starts_with("NotFound")) => tracing::warn!(
                backend = %label,
                topic = %topic.arn,
                "SNS topic does not exist; events for it will be dead-lettered until it is created \
                 (create_topics = true creates it at start)"
            ),
            Err(e) => {
                tracing::debug!(backend = %label, topic = %topic.arn, error = %brief(&e), "cannot check SNS topic")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_arns() {
        assert_eq!(
            topic_name("arn:aws:sns:eu-west-1:123456789012:user_presence"),
            "user_presence"
        );
        assert_eq!(topic_name("arn:aws:sns:eu-west-1:123456789012:t.fifo"), "t.fifo");
    }
}
