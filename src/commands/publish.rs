//! `event-pusher publish`: hook calls as NDJSON on stdin, published to the
//! scale-out exchange the way a chat node should (`docs/scale-out.md`):
//! routing key = the bare JID of the user whose order matters (found by
//! the same hook translation the sidecar runs), persistent,
//! `application/json`, with publisher confirms. For scripts, tests, and
//! replaying hook calls saved elsewhere.
//!
//! A line that is not a valid hook call stops the command before it is
//! published; what came before it is published and confirmed, and the
//! error says how many.

use std::collections::VecDeque;

use event_pusher_core::HookTranslator;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Channel, Confirmation, PublisherConfirm};
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use super::CommandError;
use crate::sources::amqp::json_properties;
use crate::sources::amqp::topology::short;

/// Publishes awaiting their confirm at once: enough to keep the broker
/// busy without holding much.
const IN_FLIGHT: usize = 1024;

/// Publish every line of stdin; returns a summary line.
pub async fn run(url: &str, exchange: &str) -> Result<String, CommandError> {
    let stdin = tokio::io::BufReader::new(tokio::io::stdin());
    publish(url, exchange, stdin).await
}

pub async fn publish(url: &str, exchange: &str, input: impl AsyncBufRead + Unpin) -> Result<String, CommandError> {
    let (connection, channel) = super::amqp::connect(url, "event-pusher publish").await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| CommandError(format!("cannot turn on publisher confirms: {e}")))?;
    let mut publisher = Publisher {
        channel,
        exchange: exchange.to_owned(),
        pending: VecDeque::new(),
        confirmed: 0,
    };
    let outcome = publisher.lines(input).await;
    // Whatever happened, wait for what is already out, so the count in the
    // message is what the broker has.
    let drained = publisher.drain(0).await;
    let _ = connection.close(200, "done".into()).await;
    let n = publisher.confirmed;
    match outcome.and(drained) {
        Ok(()) => Ok(format!("published {n} hook calls to exchange \"{exchange}\"\n")),
        Err(e) => Err(CommandError(format!(
            "{e} ({n} hook calls before it were published and confirmed)"
        ))),
    }
}

struct Publisher {
    channel: Channel,
    exchange: String,
    pending: VecDeque<(usize, PublisherConfirm)>,
    confirmed: u64,
}

impl Publisher {
    async fn lines(&mut self, input: impl AsyncBufRead + Unpin) -> Result<(), String> {
        let translator = HookTranslator;
        let mut lines = input.lines();
        let mut number = 0;
        let exchange = short(&self.exchange).map_err(|e| format!("--exchange: {e}"))?;
        while let Some(line) = lines.next_line().await.map_err(|e| format!("cannot read stdin: {e}"))? {
            number += 1;
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let call: serde_json::Value =
                serde_json::from_str(line).map_err(|e| format!("stdin line {number}: invalid JSON: {e}"))?;
            let event = translator
                .translate(&call)
                .map_err(|e| format!("stdin line {number}: {e}"))?;
            let key = short(event.user()).map_err(|e| format!("stdin line {number}: routing key: {e}"))?;
            let confirm = self
                .channel
                .basic_publish(
                    exchange.clone(),
                    key,
                    // Mandatory: with no queue bound, the message comes back
                    // and the command fails instead of losing it.
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    line.as_bytes(),
                    json_properties(),
                )
                .await
                .map_err(|e| format!("stdin line {number}: cannot publish: {e}"))?;
            self.pending.push_back((number, confirm));
            self.drain(IN_FLIGHT).await?;
        }
        Ok(())
    }

    /// Wait for confirms until at most `keep` are outstanding.
    async fn drain(&mut self, keep: usize) -> Result<(), String> {
        while self.pending.len() > keep {
            let Some((number, confirm)) = self.pending.pop_front() else {
                break;
            };
            let answer = confirm
                .await
                .map_err(|e| format!("stdin line {number}: no confirm from the broker: {e}"))?;
            match answer {
                Confirmation::Ack(None) => self.confirmed += 1,
                Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_)) => {
                    return Err(format!(
                        "stdin line {number}: exchange \"{}\" has no queue bound (run `event-pusher declare-topology`)",
                        self.exchange
                    ))
                }
                Confirmation::Nack(None) => return Err(format!("stdin line {number}: the broker refused the message")),
                Confirmation::NotRequested => return Err("the channel is not in confirm mode".to_owned()),
            }
        }
        Ok(())
    }
}
