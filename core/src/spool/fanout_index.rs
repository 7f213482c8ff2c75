//! The writer's in-memory index of pending fan-outs (see `fanout.rs`) and
//! the record format of table `fanout_pending`. It knows nothing of the
//! write transaction: `fanout.rs` changes it through a `Txn`, which holds
//! it for the writer.

use std::collections::{btree_map, BTreeMap, HashMap};

use bytes::{BufMut, Bytes, BytesMut};
use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};

use super::shared;
use super::{io, SpoolError};

/// Pending fan-outs: (fan-out id, chunk number) → the shared event's key
/// (16 bytes) and the names of the queues still waiting for their row
/// (each a 2-byte length and the name).
pub(crate) const FANOUT_PENDING: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("fanout_pending");

/// One pending fan-out in memory.
pub(super) struct Fanout {
    /// The shared event's key and bytes (the bytes for the queues' fresh
    /// buffers, one copy for every queue).
    pub key: u128,
    pub bytes: Bytes,
    /// Chunk number → names still without their row.
    pub chunks: BTreeMap<u32, Vec<String>>,
}

/// The writer's index of what is pending: loaded at open, changed inside
/// the writer's transactions (a failed commit reloads it with the file).
#[derive(Default)]
pub(crate) struct Fanouts {
    /// By fan-out id: accept order.
    pub(super) list: BTreeMap<u64, Fanout>,
    /// Queue name → its pending (fan-out, chunk), in fan-out order. Empty
    /// in the common case, which then costs one `is_empty()` per append.
    pub(super) by_queue: HashMap<String, Vec<(u64, u32)>>,
    /// Queue rows accepted but not written yet.
    pub(super) rows: u64,
    pub(super) next_id: u64,
}

impl Fanouts {
    /// What the file holds pending (at open and after a reopen).
    pub fn load(read: &ReadTransaction) -> Result<Fanouts, SpoolError> {
        let mut out = Fanouts {
            next_id: 1,
            ..Fanouts::default()
        };
        // Spools written before deferred fan-outs have no such table.
        let table = match read.open_table(FANOUT_PENDING) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(out),
            Err(e) => return Err(io(e)),
        };
        let events = read.open_table(shared::SHARED_EVENTS).map_err(io)?;
        for row in table.iter().map_err(io)? {
            let (k, v) = row.map_err(io)?;
            let (id, chunk) = k.value();
            let (key, names) = decode(v.value())?;
            let f = match out.list.entry(id) {
                btree_map::Entry::Occupied(e) => e.into_mut(),
                btree_map::Entry::Vacant(e) => {
                    let bytes = shared::lookup(&events, key)
                        .map_err(|e| SpoolError::io_in(format!("pending fan-out {id}"), e.to_string()))?;
                    e.insert(Fanout {
                        key,
                        bytes,
                        chunks: BTreeMap::new(),
                    })
                }
            };
            for name in &names {
                out.by_queue.entry(name.clone()).or_default().push((id, chunk));
            }
            out.rows += names.len() as u64;
            f.chunks.insert(chunk, names);
            out.next_id = out.next_id.max(id + 1);
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Queue rows accepted but not written yet (the
    /// `event_pusher_spool_fanout_pending` gauge).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Rows pending for queue `name` (counted into its slot's `queued`).
    pub fn pending_for(&self, name: &str) -> u64 {
        if self.by_queue.is_empty() {
            return 0;
        }
        self.by_queue.get(name).map_or(0, |v| v.len() as u64)
    }

    /// Take `name` out of its pending chunks: which ones, in fan-out order,
    /// with the event of each; the chunk records are rewritten.
    pub(super) fn take_queue(&mut self, txn: &WriteTransaction, name: &str) -> Result<Vec<(u128, Bytes)>, SpoolError> {
        let Some(entries) = self.by_queue.remove(name) else {
            return Ok(Vec::new());
        };
        let mut table = txn.open_table(FANOUT_PENDING).map_err(io)?;
        let mut out = Vec::with_capacity(entries.len());
        for (id, chunk) in entries {
            let Some(f) = self.list.get_mut(&id) else { continue };
            let Some(names) = f.chunks.get_mut(&chunk) else {
                continue;
            };
            let before = names.len();
            names.retain(|n| n != name);
            if names.len() == before {
                continue;
            }
            self.rows -= 1;
            out.push((f.key, f.bytes.clone()));
            if names.is_empty() {
                table.remove((id, chunk)).map_err(io)?;
                f.chunks.remove(&chunk);
            } else {
                table.insert((id, chunk), encode(f.key, names).as_ref()).map_err(io)?;
            }
            if f.chunks.is_empty() {
                self.list.remove(&id);
            }
        }
        Ok(out)
    }
}

/// A chunk record: the event's key, then each name with its length.
pub(super) fn encode(key: u128, names: &[String]) -> Bytes {
    let mut out = BytesMut::with_capacity(16 + names.iter().map(|n| n.len() + 2).sum::<usize>());
    out.put_u128(key);
    for name in names {
        // Queue names are config or subscription ids, far below 64 KiB.
        let len = name.len().min(u16::MAX as usize);
        out.put_u16(len as u16);
        out.put_slice(&name.as_bytes()[..len]);
    }
    out.freeze()
}

/// A chunk record's key and names.
pub(crate) fn decode(record: &[u8]) -> Result<(u128, Vec<String>), SpoolError> {
    let bad = || SpoolError::io("unreadable pending fan-out record");
    let (key, mut rest) = record.split_first_chunk::<16>().ok_or_else(bad)?;
    let mut names = Vec::new();
    while !rest.is_empty() {
        let (len, tail) = rest.split_first_chunk::<2>().ok_or_else(bad)?;
        let len = u16::from_be_bytes(*len) as usize;
        if tail.len() < len {
            return Err(bad());
        }
        let (name, tail) = tail.split_at(len);
        names.push(String::from_utf8(name.to_vec()).map_err(|_| bad())?);
        rest = tail;
    }
    Ok((u128::from_be_bytes(*key), names))
}
