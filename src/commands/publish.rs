//! `event-pusher publish`: hook calls as NDJSON on stdin, published to the
//! scale-out exchange the way a chat node should (`docs/scale-out.md`):
//! routing key = the bare JID of the user whose order matters (found by
//! the same hook translation the sidecar runs), persistent,
//! `application/json`, with publisher confirms. For scripts, tests, and
//! replaying hook calls saved elsewhere.
//!
//! With `--batch N` a message carries up to N calls of one user, as a JSON
//! array: the sidecar stores a message's calls together and acks it once,
//! so the broker moves N times fewer messages for the same calls. Calls
//! wait per user until N of them are there, the held calls of all users
//! reach [`MAX_HELD`], or stdin ends; a user's calls keep their order
//! (each message holds the oldest ones still waiting, and a channel's
//! messages reach a queue in publish order).
//!
//! A line that is not a valid hook call stops the command before it is
//! published; what came before it is published and confirmed, and the
//! error says how many.

use std::collections::{HashMap, VecDeque};

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

/// Calls held back for batching, over all users, before every waiting
/// batch is sent as it is: bounds memory and how stale a held call gets.
pub const MAX_HELD: usize = 16_384;

/// A batch is sent once its body reaches this size, even short of N calls:
/// well under the sidecar's default `server.max_body_bytes` (1 MiB), over
/// which a message is dead-lettered.
const MAX_MESSAGE_BYTES: usize = 256 << 10;

/// Publish every line of stdin, `batch` calls of one user per message at
/// most; returns a summary line.
pub async fn run(url: &str, exchange: &str, batch: usize) -> Result<String, CommandError> {
    let stdin = tokio::io::BufReader::new(tokio::io::stdin());
    publish(url, exchange, batch, stdin).await
}

pub async fn publish(
    url: &str,
    exchange: &str,
    batch: usize,
    input: impl AsyncBufRead + Unpin,
) -> Result<String, CommandError> {
    let (connection, channel) = super::amqp::connect(url, "event-pusher publish").await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| CommandError(format!("cannot turn on publisher confirms: {e}")))?;
    let mut publisher = Publisher {
        channel,
        exchange: exchange.to_owned(),
        batch: batch.max(1),
        held: HashMap::new(),
        held_calls: 0,
        pending: VecDeque::new(),
        confirmed: 0,
        messages: 0,
    };
    let outcome = publisher.lines(input).await;
    // Whatever happened, send what is held (it came before any bad line)
    // and wait for what is out, so the count in the message is what the
    // broker has.
    let flushed = match outcome {
        Ok(()) => publisher.flush_all().await,
        Err(_) => publisher.flush_all().await.and(outcome),
    };
    let drained = publisher.drain(0).await;
    let _ = connection.close(200, "done".into()).await;
    let n = publisher.confirmed;
    match flushed.and(drained) {
        Ok(()) if publisher.batch == 1 => Ok(format!("published {n} hook calls to exchange \"{exchange}\"\n")),
        Ok(()) => Ok(format!(
            "published {n} hook calls in {} messages to exchange \"{exchange}\"\n",
            publisher.messages
        )),
        Err(e) => Err(CommandError(format!(
            "{e} ({n} hook calls before it were published and confirmed)"
        ))),
    }
}

/// One user's calls waiting to go out together.
struct Held {
    /// The stdin line of the first call (for error messages).
    first_line: usize,
    /// The calls' JSON texts, in stdin order.
    calls: Vec<String>,
    bytes: usize,
}

struct Publisher {
    channel: Channel,
    exchange: String,
    batch: usize,
    /// Per routing key, the calls not sent yet (only with `batch` > 1).
    held: HashMap<String, Held>,
    held_calls: usize,
    /// Published, confirm not seen yet: first stdin line, calls, confirm.
    pending: VecDeque<(usize, u64, PublisherConfirm)>,
    confirmed: u64,
    messages: u64,
}

impl Publisher {
    async fn lines(&mut self, input: impl AsyncBufRead + Unpin) -> Result<(), String> {
        let translator = HookTranslator;
        let mut lines = input.lines();
        let mut number = 0;
        short(&self.exchange).map_err(|e| format!("--exchange: {e}"))?;
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
            let key = event.user();
            short(key).map_err(|e| format!("stdin line {number}: routing key: {e}"))?;
            if self.batch == 1 {
                self.send(key, number, 1, line.as_bytes().to_vec()).await?;
                continue;
            }
            let held = self.held.entry(key.to_owned()).or_insert_with(|| Held {
                first_line: number,
                calls: Vec::with_capacity(self.batch),
                bytes: 0,
            });
            held.bytes += line.len() + 1;
            held.calls.push(line.to_owned());
            self.held_calls += 1;
            if held.calls.len() >= self.batch || held.bytes >= MAX_MESSAGE_BYTES {
                let key = key.to_owned();
                self.flush(&key).await?;
            } else if self.held_calls >= MAX_HELD {
                self.flush_all().await?;
            }
        }
        Ok(())
    }

    /// Send every user's held calls.
    async fn flush_all(&mut self) -> Result<(), String> {
        let keys: Vec<String> = self.held.keys().cloned().collect();
        for key in keys {
            self.flush(&key).await?;
        }
        Ok(())
    }

    /// Send `key`'s held calls as one message: the call itself when there
    /// is one, a JSON array of them otherwise.
    async fn flush(&mut self, key: &str) -> Result<(), String> {
        let Some(held) = self.held.remove(key) else {
            return Ok(());
        };
        self.held_calls -= held.calls.len();
        let n = held.calls.len() as u64;
        let body = match held.calls.as_slice() {
            [one] => one.as_bytes().to_vec(),
            calls => {
                let mut body = Vec::with_capacity(held.bytes + 2);
                body.push(b'[');
                for (i, c) in calls.iter().enumerate() {
                    if i > 0 {
                        body.push(b',');
                    }
                    body.extend_from_slice(c.as_bytes());
                }
                body.push(b']');
                body
            }
        };
        self.send(key, held.first_line, n, body).await
    }

    async fn send(&mut self, key: &str, line: usize, calls: u64, body: Vec<u8>) -> Result<(), String> {
        let exchange = short(&self.exchange).map_err(|e| format!("--exchange: {e}"))?;
        let key = short(key).map_err(|e| format!("stdin line {line}: routing key: {e}"))?;
        let confirm = self
            .channel
            .basic_publish(
                exchange,
                key,
                // Mandatory: with no queue bound, the message comes back
                // and the command fails instead of losing it.
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &body,
                json_properties(),
            )
            .await
            .map_err(|e| format!("stdin line {line}: cannot publish: {e}"))?;
        self.pending.push_back((line, calls, confirm));
        self.drain(IN_FLIGHT).await
    }

    /// Wait for confirms until at most `keep` are outstanding.
    async fn drain(&mut self, keep: usize) -> Result<(), String> {
        while self.pending.len() > keep {
            let Some((number, calls, confirm)) = self.pending.pop_front() else {
                break;
            };
            let answer = confirm
                .await
                .map_err(|e| format!("stdin line {number}: no confirm from the broker: {e}"))?;
            match answer {
                Confirmation::Ack(None) => {
                    self.confirmed += calls;
                    self.messages += 1;
                }
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
