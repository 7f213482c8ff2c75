//! `[backends.sns.NAME]`
//!
//! ```toml
//! [backends.sns.main]
//! region = "eu-west-1"
//! account_id = "123456789012"
//! endpoint_url = "http://127.0.0.1:5000"   # optional: a local emulator
//! access_key_id = "${AWS_KEY}"             # optional, with secret_access_key;
//! secret_access_key = "${AWS_SECRET}"      # else the standard AWS chain
//! presence_updates_topic = "user_presence_updated"   # each topic is opt-in
//! pm_messages_topic = "user_message_sent"
//! muc_messages_topic = "arn:aws:sns:eu-west-1:123456789012:muc.fifo"
//! batch = true                             # PublishBatch, up to 10 a call
//! ```
//!
//! Every value that can be checked on its own is checked while it is
//! deserialized, so a bad one is reported at its own line and column. What
//! depends on several keys (the credential pair, an account id needed to
//! build an ARN, a full ARN in another region) is checked when the backend
//! is built, and reported at the backend's table.

use serde::{Deserialize, Deserializer};

use crate::common::backend_config;

backend_config! {
pub struct SnsConfig {
    /// The AWS region of the topics and of the API endpoint.
    #[serde(deserialize_with = "region")]
    pub region: String,
    /// Needed to build the ARN of every topic given by name.
    #[serde(default, deserialize_with = "account_id")]
    pub account_id: Option<String>,
    /// Another SNS endpoint (an emulator, a VPC endpoint).
    #[serde(default, deserialize_with = "endpoint_url")]
    pub endpoint_url: Option<url::Url>,
    /// Static credentials; both or neither. Without them the standard AWS
    /// chain is used (environment, profile, web identity, ECS, IMDS).
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<Secret>,
    /// For temporary static credentials.
    #[serde(default)]
    pub session_token: Option<Secret>,
    /// Presence changes go here; unset: not published.
    #[serde(default, deserialize_with = "topic")]
    pub presence_updates_topic: Option<String>,
    /// One-to-one messages (`type = "chat"`, direction in).
    #[serde(default, deserialize_with = "topic")]
    pub pm_messages_topic: Option<String>,
    /// Group messages (`type = "groupchat"`, direction in).
    #[serde(default, deserialize_with = "topic")]
    pub muc_messages_topic: Option<String>,
    /// Create the configured topics at start (`CreateTopic`, idempotent):
    /// for emulators and first runs. Off by default: production topics
    /// usually belong to infrastructure code.
    #[serde(default)]
    pub create_topics: bool,
    /// Send waiting events for the same topic in one `PublishBatch` call.
    #[serde(default = "default_batch")]
    pub batch: bool,
    /// Limit on one API call (connect, send, answer).
    #[serde(
        default = "default_timeout_ms",
        deserialize_with = "event_pusher_config::types::positive_ms"
    )]
    pub timeout_ms: u64,
}
}

/// A secret config value: kept out of `Debug` output and logs.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

fn default_batch() -> bool {
    true
}

fn default_timeout_ms() -> u64 {
    10_000
}

fn region<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    check_region(&s).map_err(serde::de::Error::custom)?;
    Ok(s)
}

fn account_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    check_account_id(&s).map_err(serde::de::Error::custom)?;
    Ok(Some(s))
}

fn endpoint_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<url::Url>, D::Error> {
    let s = String::deserialize(d)?;
    let url = url::Url::parse(&s).map_err(|e| serde::de::Error::custom(format!("invalid URL \"{s}\": {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(serde::de::Error::custom(format!(
            "endpoint_url \"{s}\" must be http:// or https://, not {}://",
            url.scheme()
        )));
    }
    Ok(Some(url))
}

fn topic<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    if s.starts_with("arn:") {
        parse_arn(&s).map_err(serde::de::Error::custom)?;
    } else {
        check_topic_name(&s).map_err(serde::de::Error::custom)?;
    }
    Ok(Some(s))
}

/// A region, account id or topic name that AWS would not take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NameError {
    #[error("invalid region \"{0}\": expected a region code such as \"eu-west-1\"")]
    Region(String),
    #[error("invalid account_id \"{0}\": an AWS account id is 12 digits")]
    AccountId(String),
    #[error(
        "invalid topic \"{0}\": a topic name is 1 to 256 letters, digits, '-' and '_' \
         (plus \".fifo\" for a FIFO topic), or give a full ARN \"arn:aws:sns:REGION:ACCOUNT:NAME\""
    )]
    TopicName(String),
}

/// A topic ARN that is not `arn:PARTITION:sns:REGION:ACCOUNT:NAME`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid topic ARN \"{arn}\": {problem} (expected arn:aws:sns:REGION:ACCOUNT:NAME)")]
pub(crate) struct ArnError {
    arn: String,
    #[source]
    problem: ArnProblem,
}

/// What is wrong with a topic ARN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ArnProblem {
    #[error("it does not have six ':'-separated parts")]
    NotSixParts,
    #[error("the partition is empty")]
    EmptyPartition,
    #[error("the service is \"{0}\", not \"sns\"")]
    NotSns(String),
    #[error(transparent)]
    Part(#[from] NameError),
}

pub(crate) fn check_region(s: &str) -> Result<(), NameError> {
    if s.is_empty()
        || !s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(NameError::Region(s.to_owned()));
    }
    Ok(())
}

pub(crate) fn check_account_id(s: &str) -> Result<(), NameError> {
    if s.len() != 12 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(NameError::AccountId(s.to_owned()));
    }
    Ok(())
}

/// A topic name: 1 to 256 letters, digits, `-` and `_`, and for a FIFO
/// topic the `.fifo` suffix (counted in the 256).
pub(crate) fn check_topic_name(s: &str) -> Result<(), NameError> {
    let stem = s.strip_suffix(".fifo").unwrap_or(s);
    if stem.is_empty() || s.len() > 256 || !stem.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(NameError::TopicName(s.to_owned()));
    }
    Ok(())
}

/// The parts of a topic ARN that matter here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ArnParts<'a> {
    pub region: &'a str,
    pub name: &'a str,
}

/// `arn:PARTITION:sns:REGION:ACCOUNT:NAME`
pub(crate) fn parse_arn(s: &str) -> Result<ArnParts<'_>, ArnError> {
    let bad = |problem: ArnProblem| ArnError {
        arn: s.to_owned(),
        problem,
    };
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 || parts[0] != "arn" {
        return Err(bad(ArnProblem::NotSixParts));
    }
    if parts[1].is_empty() {
        return Err(bad(ArnProblem::EmptyPartition));
    }
    if parts[2] != "sns" {
        return Err(bad(ArnProblem::NotSns(parts[2].to_owned())));
    }
    check_region(parts[3]).map_err(|e| bad(e.into()))?;
    check_account_id(parts[4]).map_err(|e| bad(e.into()))?;
    check_topic_name(parts[5]).map_err(|e| bad(e.into()))?;
    Ok(ArnParts {
        region: parts[3],
        name: parts[5],
    })
}

/// The ARN partition a region belongs to: `arn:aws-cn:` in China and
/// `arn:aws-us-gov:` in GovCloud, where `arn:aws:` would name nothing.
pub(crate) fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(check_topic_name("user_presence-updated").is_ok());
        assert!(check_topic_name("muc.fifo").is_ok());
        assert!(check_topic_name(".fifo").is_err());
        assert!(check_topic_name("").is_err());
        assert!(check_topic_name("a b").is_err());
        assert!(check_topic_name("a.b").is_err());
        assert!(check_topic_name(&"x".repeat(256)).is_ok());
        assert!(check_topic_name(&"x".repeat(257)).is_err());
    }

    #[test]
    fn arns() {
        let p = parse_arn("arn:aws:sns:eu-west-1:123456789012:t.fifo").unwrap();
        assert_eq!(
            p,
            ArnParts {
                region: "eu-west-1",
                name: "t.fifo"
            }
        );
        assert!(parse_arn("arn:aws:sqs:eu-west-1:123456789012:t")
            .unwrap_err()
            .to_string()
            .contains("\"sqs\""));
        assert!(parse_arn("arn:aws:sns:eu-west-1:1234:t")
            .unwrap_err()
            .to_string()
            .contains("12 digits"));
        assert!(parse_arn("arn:aws:sns:eu-west-1:123456789012").is_err());
        assert!(parse_arn("arn:aws:sns:eu-west-1:123456789012:t:x").is_err());
    }

    #[test]
    fn partitions() {
        assert_eq!(partition("eu-west-1"), "aws");
        assert_eq!(partition("cn-north-1"), "aws-cn");
        assert_eq!(partition("us-gov-west-1"), "aws-us-gov");
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(..)");
    }
}
