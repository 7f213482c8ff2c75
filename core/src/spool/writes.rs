//! `Spool`'s writes: each sends one command to the writer (`writer.rs`)
//! and, unless it says otherwise, waits until the group it joined is
//! committed with fsync. What a command does inside the transaction is its
//! table family's (`queues.rs`, `dead_letter.rs`, ...).

use std::sync::PoisonError;

use bytes::Bytes;
use time::OffsetDateTime;
use tokio::sync::oneshot;

use super::writer::Command;
use super::{io, DeadLetter, Erased, KeyRecord, KeyedAppend, Record, Spool, SpoolError, Window};
use crate::slot::Slot;
use crate::state_change::StateChange;

impl Spool {
    /// Durably append events to backend queues: `(slot, canonical JSON)`.
    /// Returns once they are committed with fsync, all or none.
    pub async fn append(&self, items: Vec<(Slot, Bytes)>) -> Result<(), SpoolError> {
        self.commit(items, Vec::new()).await
    }

    /// Durably append events and the state changes accepted with them, in
    /// one fsync'd transaction, all or none. The changes reach the
    /// [`StateSink`](crate::state_change::StateSink) right after the
    /// commit, before this returns.
    pub async fn commit(&self, items: Vec<(Slot, Bytes)>, changes: Vec<StateChange>) -> Result<(), SpoolError> {
        if items.is_empty() && changes.is_empty() {
            return Ok(());
        }
        // Same layout: collected in place.
        let items = items.into_iter().map(|(s, b)| (s.index(), b)).collect();
        self.call(|reply| Command::Append {
            items,
            changes,
            relay: true,
            reply: Some(reply),
        })
        .await
    }

    /// Mark an event delivered: remove it from its queue. Not awaited; a
    /// crash before it is committed means one duplicate delivery, never a loss.
    pub fn ack(&self, slot: Slot, seq: u64) {
        self.ack_many(slot, vec![seq]);
    }

    /// Mark several events of one queue delivered, in one message to the
    /// writer (a queue acks what one turn finished).
    pub fn ack_many(&self, slot: Slot, seqs: Vec<u64>) {
        if seqs.is_empty() {
            return;
        }
        let slot = slot.index();
        let first = {
            let mut acks = self.shared.acks.lock().unwrap_or_else(PoisonError::into_inner);
            let first = acks.is_empty();
            acks.extend(seqs.into_iter().map(|seq| (slot, seq)));
            first
        };
        // Only the first ack after a commit wakes the writer; the others
        // ride along with it (a wake-up per ack cost more than the ack).
        if first {
            let _ = self.tx.send(Command::Ack);
        }
    }

    /// Move an event from its queue to the dead-letter table, durably.
    pub async fn dead_letter(&self, slot: Slot, seq: u64, record: DeadLetter) -> Result<(), SpoolError> {
        let bytes = serde_json::to_vec(&record).map_err(io)?;
        self.call(|reply| Command::DeadLetter {
            slot: slot.index(),
            seq,
            record: bytes,
            reply,
        })
        .await
    }

    /// Move dead letters back to the queue (all of them, or those with the
    /// given event ids). Returns how many were moved.
    pub async fn replay(&self, slot: Slot, ids: Option<Vec<String>>) -> Result<usize, SpoolError> {
        self.call(|reply| Command::Replay {
            slot: slot.index(),
            ids,
            reply,
        })
        .await
    }

    /// Add slots at runtime (a webhook subscription; at start, the ones
    /// stored before): create their queue and dead-letter tables (or count
    /// what they already hold) and store each one's `record` under its key
    /// in the `subscriptions` table, all in one fsync'd commit. The slots
    /// take events once this returns. `names` are `KIND.NAME` as for
    /// [`open`](Self::open).
    pub async fn attach_slots(&self, slots: Vec<(Slot, String, Option<Record>)>) -> Result<(), SpoolError> {
        let slots = slots.into_iter().map(|(s, n, r)| (s.index(), n, r)).collect();
        self.call(|reply| Command::Attach { slots, reply }).await
    }

    /// Remove a slot added at runtime: drop its tables, its paused flag and
    /// its record (key `record_key`) in one fsync'd commit, and retire the
    /// slot. Stop its delivery queue first. Returns how many queued events
    /// were discarded.
    pub async fn detach_slot(&self, slot: Slot, record_key: String) -> Result<u64, SpoolError> {
        self.call(|reply| Command::Detach {
            slot: slot.index(),
            record_key,
            reply,
        })
        .await
    }

    /// Replace a stored record (a subscription's changed settings), fsync'd.
    pub async fn put_record(&self, record: Record) -> Result<(), SpoolError> {
        self.call(|reply| Command::PutRecord { record, reply }).await
    }

    /// Persist and apply a backend's paused flag.
    pub async fn set_paused(&self, slot: Slot, paused: bool) -> Result<(), SpoolError> {
        self.call(|reply| Command::SetPaused {
            slot: slot.index(),
            paused,
            reply,
        })
        .await
    }

    /// Like [`append`](Self::append), under an idempotency key: the events
    /// and `record` are committed together, unless `key` is already live,
    /// in which case nothing is stored and its first record comes back.
    pub async fn append_keyed(
        &self,
        items: Vec<(Slot, Bytes)>,
        changes: Vec<StateChange>,
        key: String,
        record: KeyRecord,
    ) -> Result<KeyedAppend, SpoolError> {
        let items = items.into_iter().map(|(s, b)| (s.index(), b)).collect();
        self.call(|reply| Command::AppendKeyed {
            items,
            changes,
            key,
            record,
            reply,
        })
        .await
    }

    /// Forget outbox rows up to and including `seq` (the store has them).
    pub async fn outbox_remove_through(&self, seq: u64) -> Result<(), SpoolError> {
        self.call(|reply| Command::OutboxRemove { through: seq, reply }).await
    }

    pub async fn set_flag(&self, key: &str) -> Result<(), SpoolError> {
        let key = key.to_owned();
        self.call(|reply| Command::SetFlag { key, reply }).await
    }

    /// [`commit`](Self::commit) of changes that are not to be relayed to a
    /// cluster store (they came from it, or were written to it first).
    pub async fn commit_local(&self, changes: Vec<StateChange>) -> Result<(), SpoolError> {
        if changes.is_empty() {
            return Ok(());
        }
        self.call(|reply| Command::Append {
            items: Vec::new(),
            changes,
            relay: false,
            reply: Some(reply),
        })
        .await
    }

    /// [`commit`](Self::commit) of state changes alone, without waiting:
    /// committed with the next group (for what a lost change costs little,
    /// such as a device pruned after its provider refused its token: a
    /// crash before the commit means one more refusal).
    pub fn commit_soon(&self, changes: Vec<StateChange>) {
        let _ = self.tx.send(Command::Append {
            items: Vec::new(),
            changes,
            relay: true,
            reply: None,
        });
    }

    /// Durably set (`Some`) or remove (`None`) backend state keys; returns
    /// once committed with fsync.
    pub async fn put_state(&self, entries: Vec<(String, Option<Vec<u8>>)>) -> Result<(), SpoolError> {
        self.call(|reply| Command::PutState {
            entries,
            reply: Some(reply),
        })
        .await
    }

    /// [`put_state`](Self::put_state) without waiting: committed (with
    /// fsync) with the next group, before any command sent after it, so an
    /// ingest append that follows is answered only once this is stored too.
    pub fn put_state_soon(&self, entries: Vec<(String, Option<Vec<u8>>)>) {
        let _ = self.tx.send(Command::PutState { entries, reply: None });
    }

    /// Erase every queued event and dead letter of `user` (a bare JID) in
    /// every backend and subscription, in one fsync'd transaction.
    pub async fn erase_user(&self, user: &str) -> Result<Erased, SpoolError> {
        let user = crate::jid::bare(user).to_lowercase();
        self.call(|reply| Command::Erase { user, reply }).await
    }

    /// Delete every dead letter that died more than `retention` ago; how
    /// many. Skips the write entirely when no backend holds dead letters.
    pub async fn expire_dead(&self, retention: std::time::Duration) -> Result<u64, SpoolError> {
        let any = self
            .slots()
            .iter()
            .any(|s| s.dead.load(std::sync::atomic::Ordering::Relaxed) > 0);
        if !any {
            return Ok(0);
        }
        let now = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        let cutoff_ms = now - retention.as_millis() as i128;
        self.call(|reply| Command::Expire { cutoff_ms, reply }).await
    }

    /// Move a slot's dead letters back to its queue: those with `ids` (all
    /// when `None`) that died in `window`. How many moved.
    pub async fn replay_window(
        &self,
        slot: crate::slot::Slot,
        ids: Option<Vec<String>>,
        window: Window,
    ) -> Result<usize, SpoolError> {
        self.call(|reply| Command::ReplayWindow {
            slot: slot.index(),
            ids,
            window,
            reply,
        })
        .await
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, SpoolError>>) -> Command,
    ) -> Result<T, SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).map_err(|_| SpoolError::Closed)?;
        rx.await.map_err(|_| SpoolError::Closed)?
    }

    /// Commit with fsync whatever is pending (acks included).
    pub async fn sync(&self) -> Result<(), SpoolError> {
        self.call(|reply| Command::Sync { reply }).await
    }

    /// Commit what is pending with fsync, close the database cleanly (so the
    /// next open needs no repair) and stop the writer. Every later write, on
    /// any clone of this handle, fails with [`SpoolError::Closed`].
    pub async fn close(&self) -> Result<(), SpoolError> {
        let res = self.call(|reply| Command::Close { reply }).await;
        let writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(w) = writer {
            let _ = tokio::task::spawn_blocking(move || w.join()).await;
        }
        match res {
            Err(SpoolError::Closed) => Ok(()),
            other => other,
        }
    }
}
