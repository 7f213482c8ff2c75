//! Rows just appended to a queue, kept in memory for its delivery queue.
//!
//! At low rates every event used to cost a read transaction (and a
//! blocking hand-off) for the delivery queue to read back the row the
//! writer had just committed. The writer now also hands each appended row
//! to its slot's `FreshRows`, and the queue takes rows from there when the
//! buffer is known to hold everything after the queue's cursor; otherwise
//! (a backlog from before the start, rows dropped while the queue was
//! paused or behind, rows put back by a replay) it reads the spool as
//! before. The buffer is bounded: when full it drops its oldest rows and
//! remembers that it is complete only after the last one dropped.

use std::collections::VecDeque;

use bytes::Bytes;

/// Most rows and bytes kept per slot; past them the oldest rows go (they
/// are in the spool, which the queue then reads).
const MAX_ROWS: usize = 2048;
const MAX_BYTES: usize = 2 << 20;

#[derive(Debug, Default)]
pub struct FreshRows {
    rows: VecDeque<(u64, Bytes)>,
    bytes: usize,
    /// Every row of the queue with a sequence number above this one is in
    /// `rows` or was already taken.
    complete_after: u64,
}

impl FreshRows {
    /// A buffer for a queue whose committed rows go up to `head`.
    pub(crate) fn new(head: u64) -> Self {
        FreshRows {
            complete_after: head,
            ..Default::default()
        }
    }

    /// A row committed by an append (sequence numbers only grow).
    pub(crate) fn push(&mut self, seq: u64, row: Bytes) {
        self.bytes += row.len();
        self.rows.push_back((seq, row));
        while self.rows.len() > MAX_ROWS || self.bytes > MAX_BYTES {
            let Some((dropped, row)) = self.rows.pop_front() else {
                break;
            };
            self.bytes -= row.len();
            self.complete_after = self.complete_after.max(dropped);
        }
    }

    /// A row reached the queue some other way (a replay): the buffer is
    /// complete only after it.
    pub(crate) fn gap(&mut self, seq: u64) {
        self.complete_after = self.complete_after.max(seq);
        while self.rows.front().is_some_and(|(s, _)| *s <= seq) {
            if let Some((_, row)) = self.rows.pop_front() {
                self.bytes -= row.len();
            }
        }
    }

    /// Up to `limit` rows after `cursor`, taken out of the buffer, when it
    /// holds every row after `cursor`; `None` when the queue must read the
    /// spool instead.
    pub fn take_after(&mut self, cursor: u64, limit: usize) -> Option<Vec<(u64, Bytes)>> {
        if cursor < self.complete_after {
            return None;
        }
        let mut out = Vec::new();
        while let Some((seq, _)) = self.rows.front() {
            if *seq > cursor && out.len() >= limit {
                break;
            }
            let Some((seq, row)) = self.rows.pop_front() else { break };
            self.bytes -= row.len();
            if seq > cursor {
                out.push((seq, row));
            }
        }
        // What was taken is the queue's now; the buffer stays complete
        // after the last row handed out.
        if let Some((last, _)) = out.last() {
            self.complete_after = self.complete_after.max(*last);
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(n: usize) -> Bytes {
        Bytes::from(vec![b'x'; n])
    }

    #[test]
    fn hands_out_what_follows_the_cursor_in_order() {
        let mut f = FreshRows::new(10);
        assert_eq!(f.take_after(5, 10), None, "rows 6..=10 are only in the spool");
        f.push(12, row(1));
        f.push(15, row(1));
        f.push(16, row(1));
        let got: Vec<u64> = f.take_after(10, 2).unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(got, vec![12, 15]);
        let got: Vec<u64> = f.take_after(15, 10).unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(got, vec![16]);
        assert_eq!(f.take_after(16, 10), Some(vec![]));
    }

    #[test]
    fn dropping_rows_when_full_sends_the_queue_to_the_spool() {
        let mut f = FreshRows::new(0);
        for seq in 1..=(MAX_ROWS as u64 + 5) {
            f.push(seq, row(1));
        }
        assert_eq!(f.take_after(0, 10), None, "rows 1..=5 were dropped");
        let got = f.take_after(5, usize::MAX).unwrap();
        assert_eq!(got.len(), MAX_ROWS);
        assert_eq!(got[0].0, 6);
        let mut f = FreshRows::new(0);
        f.push(1, row(MAX_BYTES));
        f.push(2, row(10));
        assert_eq!(f.take_after(0, 10), None, "row 1 went over the byte cap");
    }

    #[test]
    fn a_replayed_row_makes_a_gap() {
        let mut f = FreshRows::new(0);
        f.push(1, row(1));
        f.gap(2);
        f.push(3, row(1));
        assert_eq!(f.take_after(1, 10), None, "row 2 is only in the spool");
        let got: Vec<u64> = f.take_after(2, 10).unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(got, vec![3]);
    }
}
