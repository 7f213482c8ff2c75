//! Compiled regular expressions for `matches(text, pattern)`, so a pattern
//! is compiled once, not per event. Bounded: a script that builds patterns
//! from event data could otherwise grow it without end. When full it is
//! emptied, which costs the patterns in use one recompile each.
//!
//! Patterns are handed out as `Arc<Regex>`, never as clones of the
//! `Regex`: a cloned `Regex` gets a fresh, empty match cache (lazy DFA
//! states, scratch buffers) that must be rebuilt on its first search, which
//! made every `matches` call cost microseconds. Shared through the `Arc`,
//! the regex keeps its warm caches (one per thread, in its own pool).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use regex::{Regex, RegexBuilder};

/// Patterns kept at most, per script filter.
pub const DEFAULT_CAPACITY: usize = 256;

/// A compiled pattern takes at most this much memory (regex's own bound,
/// which a hostile pattern would otherwise hit only at 10 MiB by default).
const COMPILED_SIZE_LIMIT: usize = 1 << 20;

/// Shared by every worker running the same script filter.
#[derive(Debug)]
pub struct RegexCache {
    capacity: usize,
    compiled: RwLock<HashMap<String, Arc<Regex>>>,
}

impl RegexCache {
    pub fn new(capacity: usize) -> Self {
        RegexCache {
            capacity: capacity.max(1),
            compiled: RwLock::new(HashMap::new()),
        }
    }

    /// The compiled pattern, from the cache or compiled now.
    pub fn get(&self, pattern: &str) -> Result<Arc<Regex>, regex::Error> {
        // A panic elsewhere while holding the lock leaves the map intact
        // (inserts and clears are single calls), so a poisoned lock is safe.
        if let Some(re) = self
            .compiled
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(pattern)
        {
            return Ok(Arc::clone(re));
        }
        let re = Arc::new(RegexBuilder::new(pattern).size_limit(COMPILED_SIZE_LIMIT).build()?);
        let mut map = self.compiled.write().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= self.capacity {
            map.clear();
        }
        map.insert(pattern.to_owned(), Arc::clone(&re));
        Ok(re)
    }

    /// Patterns held now.
    pub fn len(&self) -> usize {
        self.compiled.read().unwrap_or_else(PoisonError::into_inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for RegexCache {
    fn default() -> Self {
        RegexCache::new(DEFAULT_CAPACITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_once_and_stays_bounded() {
        let cache = RegexCache::new(2);
        assert!(cache.get("^a").unwrap().is_match("abc"));
        assert!(cache.get("^a").unwrap().is_match("a"));
        assert_eq!(cache.len(), 1);
        cache.get("b").unwrap();
        assert_eq!(cache.len(), 2);
        cache.get("c").unwrap();
        assert!(cache.len() <= 2, "cache grew past its capacity");
        assert!(cache.get("(").is_err());
    }
}
