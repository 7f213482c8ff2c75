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
//! calls [`Pipeline::accept_keyed`]. The key is checked between translation
//! and the chain (a retry runs no filter and stores nothing), and stored in
//! the same spool transaction as the claims, which checks it once more, so
//! neither a crash nor two concurrent retries can store a request twice. A
//! retry answers with the first request's ids; the same key with other
//! content is a conflict. Keys live for `server.idempotency_window_s`.
//!
//! Hook calls are not deduplicated by their own `id` and sender: the id is
//! chosen by the sending client (a stanza id), may be absent, and clients
//! reuse ids, so dropping "duplicates" by it would lose real messages. A
//! source that knows its ids are unique can use them as the request key.

use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;

use crate::chain::Chain;
use crate::class::EventClass;
use crate::command::{CommandError, CommandHook, CommandHooks, CommandReport};
use crate::event::Event;
use crate::hook::{CallItem, HookError, HookInput, HookTranslator, HOOKS};
use crate::slot::Slot;
use crate::spool::{KeyRecord, KeyedAppend, Spool, SpoolError};
use crate::state_change::Changes;
use crate::subscriptions::SubscriptionIndex;

/// What one accepted request produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    /// The events' ids, one per event call, in order (commands have none).
    pub ids: Vec<String>,
    /// How many of them a filter stopped (accepted, but claimed by nobody
    /// after the filter).
    pub stopped: u64,
    /// What each hook command did, in request order.
    pub reports: Vec<CommandReport>,
}

/// What a request under an idempotency key came to.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyedOutcome {
    /// First time for this key: stored now.
    Stored(Accepted),
    /// The key was seen with the same content: the first request's answer;
    /// nothing new was stored.
    Replayed(Accepted),
    /// The key was seen with different content; nothing stored.
    Conflict,
}

/// Why a request was not accepted. Nothing of it is stored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IngestError {
    /// A call could not be translated or its command was refused;
    /// `index` is its position.
    #[error("{source}")]
    Invalid {
        index: usize,
        #[source]
        source: InvalidCall,
    },
    /// The spool refused or failed the write (full, unwritable, closed).
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// A hook command came as typed fields ([`CallItem`]), which keep only
    /// the fields events use: give the request again as JSON values
    /// (`hook::parse_body`). Nothing was done.
    #[error("hook command at index {index} needs the call as JSON")]
    CommandNeedsJson { index: usize },
}

/// Why one call of a request was refused (the message is its 400 answer).
#[derive(Debug, Clone, thiserror::Error)]
pub enum InvalidCall {
    /// Not a hook call that translates to an event.
    #[error(transparent)]
    Hook(#[from] HookError),
    /// A hook command that refused the call.
    #[error(transparent)]
    Command(#[from] CommandError),
}

/// One call of a request once read: an event, or a command with the JSON
/// it checks.
enum Item<'c> {
    Event(Event),
    Command {
        index: usize,
        hook: String,
        command: Arc<dyn CommandHook>,
        call: &'c serde_json::Value,
    },
}

/// A request ready to store: the answer, the queue items and the state
/// changes.
struct Prepared {
    accepted: Accepted,
    items: Vec<(Slot, Bytes)>,
    changes: Changes,
}

/// Translator, chain and spool, wired together.
pub struct Pipeline {
    translator: HookTranslator,
    chain: ArcSwap<Chain>,
    spool: Spool,
    /// The chain's last handler: runtime webhook subscriptions by class.
    subscriptions: Arc<SubscriptionIndex>,
    /// Hook calls that are commands, by hook name.
    commands: ArcSwap<CommandHooks>,
}

/// Requests whose chain runs off the I/O workers at once (see
/// [`Pipeline::route`]): as many as there are cores, so scripts use the
/// machine without queueing threads behind each other.
pub fn blocking_chains() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

fn blocking_turns() -> &'static tokio::sync::Semaphore {
    static TURNS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    TURNS.get_or_init(|| tokio::sync::Semaphore::new(blocking_chains()))
}

impl Pipeline {
    pub fn new(chain: Chain, spool: Spool) -> Self {
        Pipeline {
            translator: HookTranslator,
            chain: ArcSwap::from_pointee(chain),
            spool,
            subscriptions: Arc::new(SubscriptionIndex::new()),
            commands: ArcSwap::from_pointee(CommandHooks::new()),
        }
    }

    /// Set the hook commands (once the backends that own them are built).
    pub fn set_commands(&self, commands: CommandHooks) {
        self.commands.store(Arc::new(commands));
    }

    /// Whether `hook` is a command (not an event hook).
    pub fn is_command(&self, hook: &str) -> bool {
        self.commands.load().get(hook).is_some()
    }

    /// Which subscription slots claim an event of each class: consulted
    /// after the chain, with the event as it left it.
    pub fn subscriptions(&self) -> &SubscriptionIndex {
        &self.subscriptions
    }

    /// The index shared, for the slot owner that lists and unlists
    /// subscriptions in it ([`DeliveryEngine::new`](crate::delivery::DeliveryEngine::new)).
    pub fn subscription_index(&self) -> Arc<SubscriptionIndex> {
        self.subscriptions.clone()
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
    pub async fn accept<C: HookInput>(&self, calls: &[C]) -> Result<Accepted, IngestError> {
        let items = self.read(calls)?;
        let Prepared {
            accepted,
            items,
            changes,
        } = self.route(items).await?;
        self.spool.commit(items, changes.into_vec()).await?;
        Ok(accepted)
    }

    /// [`accept`](Self::accept) under an idempotency key (see the module
    /// doc). With keys switched off (`idempotency_window_s = 0`) the key is
    /// ignored.
    pub async fn accept_keyed<C: HookInput>(&self, calls: &[C], key: &str) -> Result<KeyedOutcome, IngestError> {
        if !self.spool.key_policy().enabled() {
            return self.accept(calls).await.map(KeyedOutcome::Stored);
        }
        // Translation errors first: an invalid retry is still invalid.
        let items = self.read(calls)?;
        let fingerprint = fingerprint(calls);
        let spool = self.spool.clone();
        let owned = key.to_owned();
        let seen = tokio::task::spawn_blocking(move || spool.lookup_key(&owned))
            .await
            .map_err(SpoolError::io)??;
        if let Some(first) = seen {
            return Ok(answer(first, &fingerprint));
        }
        let Prepared {
            accepted,
            items,
            changes,
        } = self.route(items).await?;
        let record = KeyRecord {
            fingerprint: fingerprint.clone(),
            ids: accepted.ids.clone(),
            stopped: accepted.stopped,
            at_ms: crate::spool::now_ms(),
        };
        match self
            .spool
            .append_keyed(items, changes.into_vec(), key.to_owned(), record)
            .await?
        {
            KeyedAppend::Stored => Ok(KeyedOutcome::Stored(accepted)),
            // A concurrent request with the key committed first.
            KeyedAppend::Existing(first) => Ok(answer(first, &fingerprint)),
        }
    }

    /// Store events the sidecar made itself (operational events) as any
    /// other: through the chain and the subscriptions, except for `skip`,
    /// the slot an event is about.
    pub async fn accept_events(&self, events: Vec<Event>, skip: Option<Slot>) -> Result<Accepted, IngestError> {
        let Prepared {
            accepted,
            mut items,
            changes,
        } = self.route(events.into_iter().map(Item::Event).collect()).await?;
        items.retain(|(slot, _)| Some(*slot) != skip);
        self.spool.commit(items, changes.into_vec()).await?;
        Ok(accepted)
    }

    /// Read every call: events translated, commands found. Everything is
    /// read before anything runs, so a bad call refuses the request before
    /// any filter or command saw it.
    fn read<'c, C: HookInput>(&self, calls: &'c [C]) -> Result<Vec<Item<'c>>, IngestError> {
        // One clock read for the whole request: ids stay unique (their low
        // 80 bits are random) and events of one request share a timestamp.
        let now = std::time::SystemTime::now();
        let commands = self.commands.load();
        let mut items = Vec::with_capacity(calls.len());
        for (index, call) in calls.iter().enumerate() {
            if !commands.is_empty() {
                let hook = match call.call() {
                    Ok(c) => match c.as_ref() {
                        CallItem::Call(c) => c.hook.as_str().map(str::to_owned),
                        CallItem::NotObject(_) => None,
                    },
                    Err(_) => None,
                };
                if let Some((hook, command)) = hook.and_then(|h| commands.get(&h).cloned().map(|c| (h, c))) {
                    let call = call.json().ok_or(IngestError::CommandNeedsJson { index })?;
                    items.push(Item::Command {
                        index,
                        hook,
                        command,
                        call,
                    });
                    continue;
                }
            }
            let event = self
                .translator
                .translate_at(call, now)
                .map_err(|e| IngestError::Invalid {
                    index,
                    source: e.into(),
                })?;
            items.push(Item::Event(event));
        }
        Ok(items)
    }

    /// [`run_chain`](Self::run_chain), off the async I/O workers when a
    /// filter may run long (scripts): at most [`blocking_chains`] requests
    /// at a time take a worker out of the pool for it (`block_in_place`
    /// hands the worker's other tasks to a new one); the rest wait their
    /// turn without holding a worker, so `/health`, other ingest and
    /// deliveries go on while scripts run.
    async fn route(&self, items: Vec<Item<'_>>) -> Result<Prepared, IngestError> {
        if !self.chain.load().may_block() {
            return self.run_chain(items);
        }
        let _turn = blocking_turns().acquire().await;
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(|| self.run_chain(items)),
            // A current-thread runtime (tests, embedders) has no other
            // worker to hand over to.
            _ => self.run_chain(items),
        }
    }

    /// Run each event through the chain and each command, in request
    /// order: the answer, the spool items and the state changes.
    fn run_chain(&self, calls: Vec<Item<'_>>) -> Result<Prepared, IngestError> {
        let chain = self.chain.load();
        let subscriptions = self.subscriptions.load();
        let mut ids = Vec::with_capacity(calls.len());
        let mut items = Vec::with_capacity(calls.len());
        let mut changes = Changes::new();
        let mut reports = Vec::new();
        let mut stopped = 0u64;
        for call in calls {
            let mut event = match call {
                Item::Event(event) => event,
                Item::Command {
                    index,
                    hook,
                    command,
                    call,
                } => {
                    let outcome = command
                        .command(&hook, call, &changes)
                        .map_err(|e| IngestError::Invalid {
                            index,
                            source: e.into(),
                        })?;
                    for change in outcome.changes {
                        changes.push(change);
                    }
                    let mut report = outcome.report;
                    if let serde_json::Value::Object(map) = &mut report {
                        map.insert("index".into(), serde_json::Value::from(index));
                    }
                    reports.push(CommandReport {
                        key: command.report_key(),
                        report,
                    });
                    continue;
                }
            };
            let outcome = chain.run(&mut event, &mut changes);
            if outcome.stopped_by.is_some() {
                stopped += 1;
            }
            // Subscriptions come last: they see the event as it left the
            // chain, and none of it if a filter stopped it.
            let subscribers = match outcome.stopped_by {
                None => subscriptions.get(EventClass::of(&event)),
                Some(_) => &[],
            };
            if !outcome.claims.is_empty() || !subscribers.is_empty() {
                // Serialize each distinct snapshot once, however many claim it.
                let live = Bytes::from(event.to_json());
                let snaps: Vec<Bytes> = outcome.snapshots.iter().map(|s| Bytes::from(s.to_json())).collect();
                for claim in &outcome.claims {
                    let json = claim.snapshot.map(|i| snaps[i].clone()).unwrap_or_else(|| live.clone());
                    let record = match &claim.target {
                        None => json,
                        Some(target) => crate::spool::record::encode(Some(target), &json),
                    };
                    items.push((claim.slot, record));
                }
                items.extend(subscribers.iter().map(|slot| (*slot, live.clone())));
            }
            ids.push(event.id);
        }
        Ok(Prepared {
            accepted: Accepted { ids, stopped, reports },
            items,
            changes,
        })
    }
}

/// A hash of the request's calls, to tell a retry from another request
/// that reuses the key. It hashes the fields translation reads
/// ([`crate::hook::HookCall::fingerprint`]), so a retry matches whatever
/// its JSON spacing, key order or framing (array or NDJSON). Only called
/// after every call translated, so each is a valid call.
fn fingerprint<C: HookInput>(calls: &[C]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for call in calls {
        if let Ok(CallItem::Call(c)) = call.call().as_deref() {
            c.fingerprint(&mut |b| hasher.update(b));
            // A command's own fields are not among the typed ones: hash
            // its whole JSON too (commands always come as JSON values).
            if let Some(json) = call.json().filter(|_| !HOOKS.contains(&c.hook.as_str().unwrap_or(""))) {
                hasher.update(b"c");
                hasher.update(json.to_string().as_bytes());
            }
        }
    }
    format!("{:x}", hasher.finalize())
}

fn answer(first: KeyRecord, fingerprint: &str) -> KeyedOutcome {
    if first.fingerprint == fingerprint {
        KeyedOutcome::Replayed(Accepted {
            ids: first.ids,
            stopped: first.stopped,
            reports: Vec::new(),
        })
    } else {
        KeyedOutcome::Conflict
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
    use serde_json::Value;

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

    #[tokio::test]
    async fn a_key_stores_once_answers_retries_and_refuses_other_content() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), &["null.n".to_owned()], SpoolLimits::default()).unwrap();
        let p = Arc::new(Pipeline::new(chain(false), spool.clone()));
        // Concurrent first tries with one key: one of them stores.
        let tries: Vec<_> = (0..8)
            .map(|_| {
                let p = p.clone();
                tokio::spawn(async move { p.accept_keyed(&[presence()], "k1").await.unwrap() })
            })
            .collect();
        let mut stored = Vec::new();
        let mut replayed = Vec::new();
        for t in tries {
            match t.await.unwrap() {
                KeyedOutcome::Stored(a) => stored.push(a),
                KeyedOutcome::Replayed(a) => replayed.push(a),
                KeyedOutcome::Conflict => panic!("same content is no conflict"),
            }
        }
        assert_eq!(stored.len(), 1);
        assert!(replayed.iter().all(|a| a == &stored[0]));
        assert_eq!(spool.slot(Slot::new(0)).queued.load(Ordering::Relaxed), 1);
        let other = json!({"hook": "user_available", "jid": "bob@localhost/phone"});
        assert_eq!(p.accept_keyed(&[other], "k1").await.unwrap(), KeyedOutcome::Conflict);
        assert_eq!(spool.slot(Slot::new(0)).queued.load(Ordering::Relaxed), 1);
        spool.close().await.unwrap();
    }

    #[tokio::test]
    async fn keys_past_the_cap_are_forgotten_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let limits = SpoolLimits {
            keys: crate::spool::KeyPolicy {
                window: std::time::Duration::from_secs(3600),
                max_keys: 2,
            },
            ..SpoolLimits::default()
        };
        let spool = Spool::open(dir.path(), &["null.n".to_owned()], limits).unwrap();
        let p = Pipeline::new(chain(false), spool.clone());
        for key in ["a", "b", "c"] {
            assert!(matches!(
                p.accept_keyed(&[presence()], key).await.unwrap(),
                KeyedOutcome::Stored(_)
            ));
            // Distinct stored-at times, so "oldest" is well defined.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(spool.lookup_key("a").unwrap().is_none(), "oldest key beyond the cap");
        assert!(spool.lookup_key("b").unwrap().is_some());
        assert!(spool.lookup_key("c").unwrap().is_some());
        spool.close().await.unwrap();
    }
}
