//! The operator's maintenance calls on the spool: erase a user, expire old
//! dead letters, replay dead letters of a time window. Each is one writer
//! command (one fsync'd transaction); the work itself is in `erase.rs` and
//! `retention.rs`, run by the writer.

use time::OffsetDateTime;

use super::erase::Erased;
use super::retention::Window;
use super::writer::Command;
use super::{Spool, SpoolError};

impl Spool {
    /// Erase every queued event and dead letter of `user` (a bare JID) in
    /// every backend and subscription, in one fsync'd transaction.
    pub async fn erase_user(&self, user: &str) -> Result<Erased, SpoolError> {
        let user = crate::jid::bare(user).to_lowercase();
        self.call(|reply| Command::Erase { user, reply }).await
    }
}

impl Spool {
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
}
