//! A small read cache whose entries expire: what a service keeps of records it reads on every
//! request (accounts, buckets) so that each request does not cost a metadata round trip.
//!
//! Each reader says how old an entry it accepts (`max_age`), so one cache serves callers with
//! different freshness needs; a zero `max_age` always misses. The cache is bounded: past
//! `capacity` entries it starts over (a burst of distinct keys costs reads, never memory).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Values by string key, each with the time it was stored.
#[derive(Debug)]
pub struct TtlCache<V> {
    map: Mutex<HashMap<String, (Instant, V)>>,
    capacity: usize,
}

impl<V: Clone> TtlCache<V> {
    /// An empty cache of at most `capacity` entries.
    pub fn new(capacity: usize) -> TtlCache<V> {
        TtlCache {
            map: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// The value of `key` when it was stored less than `max_age` ago.
    pub fn get(&self, key: &str, max_age: Duration) -> Option<V> {
        let m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        m.get(key)
            .filter(|(t, _)| t.elapsed() < max_age)
            .map(|(_, v)| v.clone())
    }

    /// Stores `value` as `key`, now.
    pub fn insert(&self, key: &str, value: V) {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= self.capacity && !m.contains_key(key) {
            m.clear();
        }
        m.insert(key.to_owned(), (Instant::now(), value));
    }

    /// Forgets `key` (after a change, so the next read is fresh).
    pub fn remove(&self, key: &str) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_by_the_readers_age_and_can_be_forgotten() {
        let c = TtlCache::new(2);
        c.insert("a", 1);
        assert_eq!(c.get("a", Duration::from_secs(60)), Some(1));
        assert_eq!(c.get("a", Duration::ZERO), None, "a zero age always misses");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(c.get("a", Duration::from_millis(10)), None);
        assert_eq!(c.get("a", Duration::from_secs(60)), Some(1));
        c.remove("a");
        assert_eq!(c.get("a", Duration::from_secs(60)), None);
    }

    #[test]
    fn it_stays_within_its_capacity() {
        let c = TtlCache::new(2);
        c.insert("a", 1);
        c.insert("b", 2);
        c.insert("b", 3);
        assert_eq!(
            c.get("a", Duration::from_secs(60)),
            Some(1),
            "replacing keeps the rest"
        );
        c.insert("c", 4);
        assert_eq!(c.get("a", Duration::from_secs(60)), None);
        assert_eq!(c.get("c", Duration::from_secs(60)), Some(4));
    }
}
