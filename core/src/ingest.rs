//! Ingest: hook calls in, events durably in the spool out. The one entry
//! point every source calls — the HTTP `/v1/events` handler, the MongooseIM
//! form input, a queue source, a library user — so all of them translate,
//! filter and store the same way.
//!
//! A request is all or nothing: every call is translated before anything
//! runs through the chain, and every claim goes to the spool in one fsync'd
//! transaction. [`Pipeline::accept`] returns only once that commit is done,
//! which is what lets a source answer "accepted".
//!
//! The chain sits behind an [`ArcSwap`] so it can be replaced while events
//! flow (script-filter reload): each call loads the chain once, so an event
//! in flight finishes on the chain it started on.
//!
//! Idempotency: a source that has a request key (HTTP `Idempotency-Key`)
//! will pass it to `accept`; the check belongs between translation and the
//! chain, and the key is stored in the same spool transaction as the claims,
//! so a retried request answers with the first request's ids. Not done yet.

use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use serde_json::Value;

use crate::chain::Chain;
use crate::hook::HookTranslator;
use crate::spool::{Spool, SpoolError};

/// What one accepted request produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    /// The events' ids, one per call, in order.
    pub ids: Vec<String>,
    /// How many of them a filter stopped (accepted, but claimed by nobody
    /// after the filter).
    pub stopped: u64,
}

/// Why a request was not accepted. Nothing of it is stored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IngestError {
    /// A call could not be translated; `index` is its position.
    #[error("{message}")]
    Invalid { message: String, index: usize },
    /// The spool refused or failed the write (full, unwritable, closed).
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// Translator, chain and spool, wired together.
pub struct Pipeline {
    translator: HookTranslator,
    chain: ArcSwap<Chain>,
    spool: Spool,
}

impl Pipeline {
    pub fn new(chain: Chain, spool: Spool) -> Self {
        Pipeline {
            translator: HookTranslator,
            chain: ArcSwap::from_pointee(chain),
            spool,
        }
    }

    /// The chain new events run through.
    pub fn chain(&self) -> Arc<Chain> {
        self.chain.load_full()
    }

    /// Replace the chain; events already running finish on the old one.
    /// Returns the old chain.
    pub fn swap_chain(&self, chain: Chain) -> Arc<Chain> {
        self.chain.swap(Arc::new(chain))
    }

    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// Translate `calls`, run each event through the chain and store every
    /// claim; returns once they are fsync'd, all or none.
    pub async fn accept(&self, calls: &[Value]) -> Result<Accepted, IngestError> {
        // Translate everything before touching the chain or the spool.
        let mut events = Vec::with_capacity(calls.len());
        for (index, call) in calls.iter().enumerate() {
            let event = self.translator.translate(call).map_err(|e| IngestError::Invalid {
                message: e.message,
                index,
            })?;
            events.push(event);
        }

        let chain = self.chain.load();
        let mut ids = Vec::with_capacity(events.len());
        let mut items = Vec::with_capacity(events.len());
        let mut stopped = 0u64;
        for mut event in events {
            let outcome = chain.run(&mut event);
            if outcome.stopped_by.is_some() {
                stopped += 1;
            }
            if !outcome.claims.is_empty() {
                // Serialize each distinct snapshot once, however many claim it.
                let live = Bytes::from(event.to_json());
                let snaps: Vec<Bytes> = outcome.snapshots.iter().map(|s| Bytes::from(s.to_json())).collect();
                for claim in &outcome.claims {
                    let json = claim.snapshot.map(|i| snaps[i].clone()).unwrap_or_else(|| live.clone());
                    items.push((claim.slot, json));
                }
            }
            ids.push(event.id);
        }
        drop(chain);

        self.spool.append(items).await?;
        Ok(Accepted { ids, stopped })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use serde_json::json;

    use super::*;
    use crate::backend::tests::NullBackend as Null;
    use crate::chain::{ChainBuilder, Verdict};
    use crate::class::EventClasses;
    use crate::event::Event;
    use crate::slot::Slot;
    use crate::spool::SpoolLimits;

    fn chain(stop_first: bool) -> Chain {
        let mut b = ChainBuilder::new();
        if stop_first {
            b = b.filter("stop", 1, |_: &mut Event| Verdict::Stop);
        }
        b.backend("n", 50, EventClasses::ALL, crate::AnyBackend::new(Null))
            .build()
    }

    fn presence() -> Value {
        json!({"hook": "user_available", "jid": "alice@localhost/phone"})
    }

    #[tokio::test]
    async fn an_invalid_call_stores_nothing_and_names_its_index() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), &["null.n".to_owned()], SpoolLimits::default()).unwrap();
        let p = Pipeline::new(chain(false), spool.clone());
        let err = p.accept(&[presence(), json!({"hook": "nope"})]).await.unwrap_err();
        assert!(matches!(err, IngestError::Invalid { index: 1, .. }), "{err:?}");
        assert_eq!(spool.slot(Slot::new(0)).queued.load(Ordering::Relaxed), 0);
        let ok = p.accept(&[presence(), presence()]).await.unwrap();
        assert_eq!(ok.ids.len(), 2);
        assert_eq!(spool.slot(Slot::new(0)).queued.load(Ordering::Relaxed), 2);
        spool.close().await.unwrap();
    }

    #[tokio::test]
    async fn a_swapped_chain_takes_the_next_request() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), &["null.n".to_owned()], SpoolLimits::default()).unwrap();
        let p = Pipeline::new(chain(false), spool.clone());
        assert_eq!(p.accept(&[presence()]).await.unwrap().stopped, 0);
        p.swap_chain(chain(true));
        assert_eq!(p.accept(&[presence()]).await.unwrap().stopped, 1);
        assert_eq!(spool.slot(Slot::new(0)).queued.load(Ordering::Relaxed), 1);
        spool.close().await.unwrap();
    }
}
