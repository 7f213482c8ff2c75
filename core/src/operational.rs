//! Operational events: the sidecar reporting on itself through its own
//! chain, as events of class `operational` (operations contract).
//!
//! The parts that notice something (a delivery queue whose circuit opens,
//! dead letters, auto-disable, ingest refusing) hold a cheap [`Reporter`]
//! and send it a [`Signal`]; they never wait. One [`run`] task turns
//! signals into events and stores them through [`Pipeline::accept_events`]
//! like any event (filters, retries, dead letters), except that an event
//! about backend X is never queued for X: a failing endpoint is not told
//! that it fails, and its failures do not feed themselves.
//!
//! Dead letters are reported at most once per backend per
//! [`DEAD_LETTER_EVERY`], with how many died meanwhile (`detail.count`), so
//! an outage of a busy backend is one event a minute, not one per event.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use crate::event::{Event, EventBody, Operational};
use crate::ingest::Pipeline;
use crate::slot::Slot;

/// At most one `delivery.dead_lettered` per backend this often.
pub const DEAD_LETTER_EVERY: Duration = Duration::from_secs(60);

/// Something worth an operational event. `backend` is `KIND.NAME`.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    /// `backend.failing`: the circuit opened.
    CircuitOpened {
        slot: Slot,
        backend: String,
        consecutive_failures: u32,
        last_error: String,
    },
    /// `backend.recovered`: it closed again.
    CircuitClosed { slot: Slot, backend: String },
    /// `count` events went to the backend's dead letters.
    DeadLettered { slot: Slot, backend: String, count: u64 },
    /// `webhook.disabled`.
    WebhookDisabled {
        slot: Slot,
        backend: String,
        reason: String,
        failing_since: String,
    },
    /// `spool.refusing`: ingest started answering 503.
    SpoolRefusing { reason: String },
    /// `spool.accepting`: it stopped.
    SpoolAccepting,
}

/// Where signals go; a default one drops them (no producer running).
#[derive(Clone, Default)]
pub struct Reporter {
    tx: Option<mpsc::UnboundedSender<Signal>>,
    /// Ingest is answering 503 (so each change is reported once).
    refusing: Arc<AtomicBool>,
}

impl Reporter {
    /// A reporter and the receiving end for [`run`].
    pub fn channel() -> (Reporter, mpsc::UnboundedReceiver<Signal>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Reporter {
                tx: Some(tx),
                refusing: Arc::default(),
            },
            rx,
        )
    }

    pub fn report(&self, signal: Signal) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(signal);
        }
    }

    /// Ingest answered 503 because the spool refused: reported when it
    /// starts.
    pub fn ingest_refused(&self, reason: &str) {
        if !self.refusing.swap(true, Ordering::AcqRel) {
            self.report(Signal::SpoolRefusing {
                reason: reason.to_owned(),
            });
        }
    }

    /// Ingest stored a request: if it was refusing, that is over.
    pub fn ingest_accepted(&self) {
        // A load first: this runs on every request.
        if self.refusing.load(Ordering::Acquire) && self.refusing.swap(false, Ordering::AcqRel) {
            self.report(Signal::SpoolAccepting);
        }
    }
}

/// One operational event, and the slot it must not go to.
pub fn event(signal: &Signal) -> (Event, Option<Slot>) {
    let (kind, slot, backend, detail) = match signal {
        Signal::CircuitOpened {
            slot,
            backend,
            consecutive_failures,
            last_error,
        } => (
            "backend.failing",
            Some(*slot),
            Some(backend),
            json!({"consecutive_failures": consecutive_failures, "last_error": last_error}),
        ),
        Signal::CircuitClosed { slot, backend } => ("backend.recovered", Some(*slot), Some(backend), json!({})),
        Signal::DeadLettered { slot, backend, count } => (
            "delivery.dead_lettered",
            Some(*slot),
            Some(backend),
            json!({ "count": count }),
        ),
        Signal::WebhookDisabled {
            slot,
            backend,
            reason,
            failing_since,
        } => (
            "webhook.disabled",
            Some(*slot),
            Some(backend),
            json!({"reason": reason, "failing_since": failing_since}),
        ),
        Signal::SpoolRefusing { reason } => ("spool.refusing", None, None, json!({ "reason": reason })),
        Signal::SpoolAccepting => ("spool.accepting", None, None, json!({})),
    };
    let detail = match detail {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let event = Event {
        id: Event::new_id(),
        body: EventBody::Operational(Operational {
            kind: kind.to_owned(),
            backend: backend.cloned(),
            detail,
        }),
        timestamp: time::OffsetDateTime::now_utc(),
        metadata: Default::default(),
    };
    (event, slot)
}

/// Dead letters counted per backend between two reports.
#[derive(Default)]
struct DeadLetterTally {
    /// backend → (slot, last report, not reported yet).
    by_backend: HashMap<String, (Slot, Option<Instant>, u64)>,
}

impl DeadLetterTally {
    /// Count `n` more; the count to report now, if one is due.
    fn add(&mut self, slot: Slot, backend: &str, n: u64, now: Instant) -> Option<u64> {
        let e = self.by_backend.entry(backend.to_owned()).or_insert((slot, None, 0));
        e.2 += n;
        match e.1 {
            Some(last) if now.duration_since(last) < DEAD_LETTER_EVERY => None,
            _ => {
                e.1 = Some(now);
                Some(std::mem::take(&mut e.2))
            }
        }
    }

    /// When the next held-back count is due.
    fn next_due(&self) -> Option<Instant> {
        self.by_backend
            .values()
            .filter(|(_, _, n)| *n > 0)
            .filter_map(|(_, last, _)| last.map(|l| l + DEAD_LETTER_EVERY))
            .min()
    }

    /// Counts whose minute is over, taken.
    fn due(&mut self, now: Instant) -> Vec<Signal> {
        let mut out = Vec::new();
        for (backend, (slot, last, n)) in &mut self.by_backend {
            if *n > 0 && last.is_none_or(|l| now.duration_since(l) >= DEAD_LETTER_EVERY) {
                out.push(Signal::DeadLettered {
                    slot: *slot,
                    backend: backend.clone(),
                    count: std::mem::take(n),
                });
                *last = Some(now);
            }
        }
        out
    }
}

/// Turn signals into operational events and store them through the
/// pipeline, until every [`Reporter`] is gone (or the task is aborted).
pub async fn run(mut rx: mpsc::UnboundedReceiver<Signal>, pipeline: &Pipeline) {
    let mut tally = DeadLetterTally::default();
    loop {
        let due = tally.next_due();
        let signal = tokio::select! {
            s = rx.recv() => match s {
                Some(s) => Some(s),
                None => break,
            },
            _ = sleep_until(due) => None,
        };
        let now = Instant::now();
        let mut out = Vec::new();
        match signal {
            Some(Signal::DeadLettered { slot, backend, count }) => {
                if let Some(count) = tally.add(slot, &backend, count, now) {
                    out.push(Signal::DeadLettered { slot, backend, count });
                }
            }
            Some(other) => out.push(other),
            None => out = tally.due(now),
        }
        for s in out {
            let (event, about) = event(&s);
            let kind = match &event.body {
                EventBody::Operational(o) => o.kind.clone(),
                _ => String::new(),
            };
            if let Err(e) = pipeline.accept_events(vec![event], about).await {
                // Nowhere to put it (the spool refuses): the log has it.
                tracing::warn!(r#type = %kind, error = %e, "operational event not stored");
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letters_are_reported_once_a_minute_with_their_count() {
        let mut t = DeadLetterTally::default();
        let t0 = Instant::now();
        let s = Slot::new(1);
        assert_eq!(t.add(s, "webhook.a", 1, t0), Some(1), "the first is reported at once");
        assert_eq!(t.add(s, "webhook.a", 2, t0 + Duration::from_secs(1)), None);
        assert_eq!(t.add(s, "webhook.a", 3, t0 + Duration::from_secs(2)), None);
        assert_eq!(t.add(s, "http.b", 1, t0), Some(1), "per backend");
        assert_eq!(t.next_due(), Some(t0 + DEAD_LETTER_EVERY));
        assert!(t.due(t0 + Duration::from_secs(30)).is_empty());
        let due = t.due(t0 + DEAD_LETTER_EVERY);
        assert_eq!(
            due,
            vec![Signal::DeadLettered {
                slot: s,
                backend: "webhook.a".into(),
                count: 5
            }]
        );
        assert_eq!(t.next_due(), None);
    }

    #[test]
    fn the_record_has_the_contract_shape() {
        let (e, about) = event(&Signal::CircuitOpened {
            slot: Slot::new(2),
            backend: "webhook.crm".into(),
            consecutive_failures: 10,
            last_error: "HTTP 503".into(),
        });
        assert_eq!(about, Some(Slot::new(2)));
        let v: Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(v["event"], "operational");
        assert_eq!(v["type"], "backend.failing");
        assert_eq!(v["backend"], "webhook.crm");
        assert_eq!(v["detail"]["consecutive_failures"], 10);
        assert_eq!(v["metadata"], json!({}));
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back.body, e.body);
        assert_eq!(crate::EventClass::of(&back), crate::EventClass::Operational);
    }
}
