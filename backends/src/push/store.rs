//! Where the push backend keeps its registry and presence: the spool's
//! backend-state table, under keys prefixed with the backend's `KIND.NAME`.
//!
//! The spool is reached through [`Backend::attach`], called once the spool
//! is open; before that (and in unit tests without a spool) the state is
//! kept in memory only.
//!
//! [`Backend::attach`]: event_pusher_core::Backend::attach

use std::sync::OnceLock;

use event_pusher_core::spool::{Spool, SpoolError};
use event_pusher_core::Attachment;

/// Keys to set (`Some`) or remove (`None`), as the spool takes them.
type Entries = Vec<(String, Option<Vec<u8>>)>;

/// The spool and this backend's key prefix, once attached.
#[derive(Default)]
pub struct Store {
    attached: OnceLock<(Spool, String)>,
}

impl Store {
    /// Take the spool and read what this backend stored: `(key without
    /// the prefix, value)`. Blocking.
    pub fn attach(&self, attachment: &Attachment) -> Result<Vec<(String, Vec<u8>)>, SpoolError> {
        let prefix = format!("{}/", attachment.id);
        let rows = attachment.spool.read_state(&prefix)?;
        let _ = self.attached.set((attachment.spool.clone(), prefix.clone()));
        Ok(rows
            .into_iter()
            .map(|(k, v)| (k[prefix.len()..].to_owned(), v))
            .collect())
    }

    fn entry(&self, key: &str, value: Option<Vec<u8>>) -> Option<(&Spool, Entries)> {
        let (spool, prefix) = self.attached.get()?;
        Some((spool, vec![(format!("{prefix}{key}"), value)]))
    }

    /// Set or remove a key; returns once it is fsync'd.
    pub async fn put(&self, key: &str, value: Option<Vec<u8>>) -> Result<(), SpoolError> {
        match self.entry(key, value) {
            Some((spool, entries)) => spool.put_state(entries).await,
            None => Ok(()),
        }
    }

    /// Set or remove a key without waiting: committed with the spool's next
    /// group, before anything sent to the spool after it (so before the
    /// ingest append of the request that carried the change).
    pub fn put_soon(&self, key: &str, value: Option<Vec<u8>>) {
        if let Some((spool, entries)) = self.entry(key, value) {
            spool.put_state_soon(entries);
        }
    }
}
