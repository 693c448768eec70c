//! Listing a bucket: keys in byte order from a marker, under a prefix, with everything past a
//! delimiter rolled up into common prefixes, one page at a time.
//!
//! Records come from Moray in key order through range queries (`name >= lower bound`,
//! `name` starting with the prefix), a batch at a time. When a key rolls up into a common
//! prefix, the keys under that prefix are skipped by restarting the range just past it
//! (at [`successor`] of the prefix) rather than reading them all, so a page of 1000
//! "directories" costs at most 1000 small queries however many keys each holds.
//!
//! A page ends after `max` entries (objects and prefixes together); it is truncated when
//! another entry exists, and the last entry (key or prefix) is where the next page starts.
//! A marker that falls under a common prefix continues after everything under that prefix,
//! so a client paging with `NextMarker` never sees a prefix twice.

use std::future::Future;

use base64::Engine as _;

use super::error::{S3Result, invalid_argument};

/// Most records read from Moray per query.
const BATCH: u64 = 1000;

/// What to list.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// Only keys starting with this.
    pub prefix: &'a str,
    /// Roll up keys at the first occurrence of this after the prefix (none when empty).
    pub delimiter: Option<&'a str>,
    /// Only entries after this key (exclusive).
    pub after: Option<&'a str>,
    /// Most entries in the page.
    pub max: usize,
}

/// One entry of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry<T> {
    /// An object.
    Object(T),
    /// A common prefix (ends with the delimiter).
    Prefix(String),
}

/// A page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// Entries in key order.
    pub entries: Vec<Entry<T>>,
    /// True when more entries follow.
    pub truncated: bool,
    /// The key or prefix of the last entry (where the next page starts).
    pub last: Option<String>,
}

/// The smallest string greater than every string that starts with `s`, if there is one
/// (there is none when every character of `s` is `char::MAX`).
pub fn successor(s: &str) -> Option<String> {
    let mut chars: Vec<char> = s.chars().collect();
    while let Some(c) = chars.pop() {
        let mut next = u32::from(c) + 1;
        if next == 0xD800 {
            next = 0xE000; // skip the surrogates, which are not characters
        }
        if let Some(n) = char::from_u32(next) {
            chars.push(n);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// The common prefix `key` rolls up into, if any.
pub fn rollup<'k>(key: &'k str, prefix: &str, delimiter: Option<&str>) -> Option<&'k str> {
    let d = delimiter.filter(|d| !d.is_empty())?;
    let rest = key.strip_prefix(prefix)?;
    let i = rest.find(d)?;
    Some(&key[..prefix.len() + i + d.len()])
}

/// Lists one page. `fetch(from, limit)` must answer up to `limit` items with keys `>= from`
/// that start with the query's prefix, in key order; `key` gives an item's key.
///
/// # Errors
/// As `fetch`.
pub async fn page<T, F, Fut>(q: &Query<'_>, key: fn(&T) -> &str, mut fetch: F) -> S3Result<Page<T>>
where
    F: FnMut(String, u64) -> Fut,
    Fut: Future<Output = S3Result<Vec<T>>>,
{
    let mut out = Page {
        entries: Vec::new(),
        truncated: false,
        last: None,
    };
    if q.max == 0 {
        return Ok(out);
    }
    // Where to start, and a key to skip there (the marker is exclusive).
    let mut from = q.prefix.to_owned();
    let mut skip: Option<String> = None;
    if let Some(after) = q.after.filter(|a| *a >= q.prefix) {
        match rollup(after, q.prefix, q.delimiter) {
            Some(cp) => match successor(cp) {
                Some(s) => from = s,
                None => return Ok(out),
            },
            None => {
                from = after.to_owned();
                skip = Some(after.to_owned());
            }
        }
    }
    let mut last_prefix: Option<String> = None;
    loop {
        let want = (q.max - out.entries.len()) as u64 + 2;
        let limit = want.clamp(1, BATCH);
        let batch = fetch(from.clone(), limit).await?;
        let n = batch.len() as u64;
        let mut last_key: Option<String> = None;
        for item in batch {
            let k = key(&item).to_owned();
            last_key = Some(k.clone());
            if skip.as_deref() == Some(k.as_str()) {
                continue;
            }
            if !k.starts_with(q.prefix) {
                return Ok(out);
            }
            if last_prefix.as_deref().is_some_and(|p| k.starts_with(p)) {
                continue;
            }
            if out.entries.len() == q.max {
                out.truncated = true;
                return Ok(out);
            }
            match rollup(&k, q.prefix, q.delimiter) {
                Some(cp) => {
                    let cp = cp.to_owned();
                    out.last = Some(cp.clone());
                    last_prefix = Some(cp.clone());
                    out.entries.push(Entry::Prefix(cp));
                }
                None => {
                    out.last = Some(k);
                    out.entries.push(Entry::Object(item));
                }
            }
        }
        if n < limit {
            return Ok(out);
        }
        let Some(lk) = last_key else {
            return Ok(out);
        };
        match last_prefix.as_deref().filter(|p| lk.starts_with(*p)) {
            // Jump past the rest of the prefix being skipped.
            Some(p) => match successor(p) {
                Some(s) => {
                    from = s;
                    skip = None;
                }
                None => return Ok(out),
            },
            None => {
                from = lk.clone();
                skip = Some(lk);
            }
        }
    }
}

/// A `ListObjectsV2` continuation token for a page ending at `last` (opaque to clients).
pub fn continuation_token(last: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last.as_bytes())
}

/// Reads a continuation token.
///
/// # Errors
/// `InvalidArgument` for a token this service did not make.
pub fn parse_continuation_token(token: &str) -> S3Result<String> {
    let bad = || invalid_argument("The continuation token provided is incorrect");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    String::from_utf8(bytes).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mem_fetch(
        keys: &[String],
        prefix: &str,
    ) -> impl FnMut(String, u64) -> std::future::Ready<S3Result<Vec<String>>> {
        let mut sorted: Vec<String> = keys.to_vec();
        sorted.sort();
        sorted.dedup();
        let prefix = prefix.to_owned();
        move |from, limit| {
            std::future::ready(Ok(sorted
                .iter()
                .filter(|k| k.as_str() >= from.as_str() && k.starts_with(&prefix))
                .take(limit as usize)
                .cloned()
                .collect()))
        }
    }

    fn key(s: &String) -> &str {
        s
    }

    /// What a listing must contain, computed the slow and obvious way.
    fn expected(keys: &[String], prefix: &str, delimiter: Option<&str>) -> Vec<Entry<String>> {
        let mut sorted: Vec<String> = keys.to_vec();
        sorted.sort();
        sorted.dedup();
        let mut out: Vec<Entry<String>> = Vec::new();
        for k in sorted.into_iter().filter(|k| k.starts_with(prefix)) {
            match rollup(&k, prefix, delimiter) {
                Some(cp) => {
                    let e = Entry::Prefix(cp.to_owned());
                    if !out.contains(&e) {
                        out.push(e);
                    }
                }
                None => out.push(Entry::Object(k)),
            }
        }
        out
    }

    use crate::s3::testing::run;

    fn all_pages(
        keys: &[String],
        prefix: &str,
        delimiter: Option<&str>,
        max: usize,
    ) -> Vec<Entry<String>> {
        let mut got = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..10_000 {
            let q = Query {
                prefix,
                delimiter,
                after: after.as_deref(),
                max,
            };
            let p = run(page(&q, key, mem_fetch(keys, prefix))).unwrap();
            assert!(p.entries.len() <= max);
            got.extend(p.entries);
            if !p.truncated {
                return got;
            }
            after = p.last;
        }
        panic!("listing did not end");
    }

    #[test]
    fn delimiter_and_prefix() {
        let keys: Vec<String> = ["a", "a/b", "a/c/d", "b", "b/x", "c+d", "c d", "c/e/f"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let top = all_pages(&keys, "", Some("/"), 1000);
        assert_eq!(
            top,
            vec![
                Entry::Object("a".into()),
                Entry::Prefix("a/".into()),
                Entry::Object("b".into()),
                Entry::Prefix("b/".into()),
                Entry::Object("c d".into()),
                Entry::Object("c+d".into()),
                Entry::Prefix("c/".into()),
            ]
        );
        let under_a = all_pages(&keys, "a/", Some("/"), 1);
        assert_eq!(
            under_a,
            vec![Entry::Object("a/b".into()), Entry::Prefix("a/c/".into())]
        );
        // A marker inside a common prefix continues after that prefix.
        let q = Query {
            prefix: "",
            delimiter: Some("/"),
            after: Some("a/b"),
            max: 10,
        };
        let p = run(page(&q, key, mem_fetch(&keys, ""))).unwrap();
        assert_eq!(p.entries[0], Entry::Object("b".into()));
        // max 0 lists nothing.
        let q = Query {
            prefix: "",
            delimiter: None,
            after: None,
            max: 0,
        };
        let p = run(page(&q, key, mem_fetch(&keys, ""))).unwrap();
        assert!(p.entries.is_empty() && !p.truncated);
    }

    #[test]
    fn successors() {
        assert_eq!(successor("a/").as_deref(), Some("a0"));
        assert_eq!(successor("").as_deref(), None);
        assert_eq!(successor("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(successor("\u{D7FF}").as_deref(), Some("\u{E000}"));
        assert_eq!(successor("\u{10FFFF}"), None);
    }

    #[test]
    fn tokens() {
        for k in ["", "a/b c+d", "☃"] {
            assert_eq!(parse_continuation_token(&continuation_token(k)).unwrap(), k);
        }
        assert_eq!(
            parse_continuation_token("!!").unwrap_err().code().as_str(),
            "InvalidArgument"
        );
    }

    fn key_strategy() -> impl Strategy<Value = String> {
        // Few distinct characters, so keys share prefixes and delimiters often.
        proptest::collection::vec(
            prop_oneof![
                Just('a'),
                Just('b'),
                Just('/'),
                Just('-'),
                Just('\u{10FFFF}'),
                Just('é')
            ],
            0..6,
        )
        .prop_map(|v| v.into_iter().collect())
    }

    proptest! {
        #[test]
        fn successor_bounds_every_extension(s in any::<String>(), tail in any::<String>()) {
            if let Some(n) = successor(&s) {
                prop_assert!(n.as_str() > s.as_str());
                let t = format!("{s}{tail}");
                prop_assert!(t.as_str() < n.as_str());
            } else {
                prop_assert!(s.chars().all(|c| c == char::MAX));
            }
        }

        #[test]
        fn paging_yields_each_entry_once_in_order(
            keys in proptest::collection::vec(key_strategy().prop_filter("non-empty", |k| !k.is_empty()), 0..40),
            prefix in key_strategy(),
            delimiter in prop_oneof![Just(None), Just(Some("/")), Just(Some("a")), Just(Some("b/"))],
            max in 1usize..5,
        ) {
            let got = all_pages(&keys, &prefix, delimiter, max);
            prop_assert_eq!(got, expected(&keys, &prefix, delimiter));
        }

        #[test]
        fn tokens_round_trip(k in any::<String>()) {
            prop_assert_eq!(parse_continuation_token(&continuation_token(&k)).unwrap(), k);
        }

        #[test]
        fn token_parsing_never_panics(t in any::<String>()) {
            let _ = parse_continuation_token(&t);
        }
    }
}
