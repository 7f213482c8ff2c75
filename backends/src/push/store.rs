//! Where the push backend keeps its registry and presence: its scoped state
//! in the spool (keys under `push.NAME/`), reached through
//! [`Backend::attach`]. Changes are committed as [`StateChange`]s and come
//! back to the in-memory views through `Backend::apply`; before attach (and
//! in unit tests without a spool) they are applied directly.
//!
//! [`Backend::attach`]: event_pusher_core::Backend::attach

use std::sync::OnceLock;

use event_pusher_core::spool::SpoolError;
use event_pusher_core::{Attachment, ScopedState, StateChange};

#[derive(Default)]
pub struct Store {
    attached: OnceLock<ScopedState>,
}

impl Store {
    /// Take the scoped state and read what this backend stored: `(key
    /// without the prefix, value)`. Blocking.
    pub fn attach(&self, attachment: &Attachment) -> Result<Vec<(String, Vec<u8>)>, SpoolError> {
        let rows = attachment.state.read()?;
        let _ = self.attached.set(attachment.state.clone());
        Ok(rows)
    }

    /// Commit changes with fsync (applied in memory by then). `false`
    /// when not attached: the caller applies them itself.
    pub async fn commit(&self, changes: Vec<StateChange>) -> Result<bool, SpoolError> {
        match self.attached.get() {
            Some(state) => state.commit(changes).await.map(|()| true),
            None => Ok(false),
        }
    }

    /// Commit changes a cluster store has already; `false` when not
    /// attached.
    pub async fn commit_local(&self, changes: Vec<StateChange>) -> Result<bool, SpoolError> {
        match self.attached.get() {
            Some(state) => state.commit_local(changes).await.map(|()| true),
            None => Ok(false),
        }
    }

    /// Commit changes with the next group; `false` when not attached.
    pub fn commit_soon(&self, changes: Vec<StateChange>) -> bool {
        match self.attached.get() {
            Some(state) => {
                state.commit_soon(changes);
                true
            }
            None => false,
        }
    }

    /// Delete keys without waiting (bookkeeping, not shared state).
    pub fn delete_soon(&self, keys: Vec<String>) {
        if let Some(state) = self.attached.get() {
            state.delete_soon(keys);
        }
    }

    /// Overwrite a key without waiting (bookkeeping, not shared state).
    pub fn put_soon(&self, key: &str, value: Vec<u8>) {
        if let Some(state) = self.attached.get() {
            state.put_soon(key, value);
        }
    }
}
