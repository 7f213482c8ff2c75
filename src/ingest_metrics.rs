//! Counters of the ingest side, for `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct IngestMetrics {
    /// Requests by answer: 200 (MongooseIM form posts), 202, 400, 401,
    /// 413, 415, 503, other.
    by_status: [AtomicU64; 8],
    pub events_accepted: AtomicU64,
    pub events_stopped: AtomicU64,
}

const STATUSES: [u16; 8] = [200, 202, 400, 401, 413, 415, 503, 0];

impl IngestMetrics {
    pub fn request(&self, status: u16) {
        let i = STATUSES.iter().position(|s| *s == status).unwrap_or(STATUSES.len() - 1);
        self.by_status[i].fetch_add(1, Ordering::Relaxed);
    }

    /// A request was accepted: `events` stored, `stopped` of them stopped by
    /// a filter.
    pub fn accepted(&self, events: usize, stopped: u64) {
        self.events_accepted.fetch_add(events as u64, Ordering::Relaxed);
        self.events_stopped.fetch_add(stopped, Ordering::Relaxed);
    }

    pub fn by_status(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        ["200", "202", "400", "401", "413", "415", "503", "other"]
            .into_iter()
            .zip(self.by_status.iter().map(|c| c.load(Ordering::Relaxed)))
    }
}
