//! The checker of a workload's history: what every client saw, judged against what the store
//! promises. Each key is a register: a read may return the value of any write that could be the
//! latest at some moment of the read, and nothing else.
//!
//! - A write acknowledged (`Ok`) took effect between its start and its end; one that `Failed`
//!   never took effect; one whose outcome is `Unknown` (a timeout, a broken connection) may take
//!   effect at any moment after its start, even after its client gave up, or never.
//! - An `Ok` write W2 supersedes a write W when W2 started after W ended: from W2's end on, W's
//!   value may no longer be read (unless W's outcome was unknown).
//! - Every key starts absent.
//!
//! Violations reported: a read of bytes that no write wrote (`Phantom`), of a write that failed
//! (`FailedWriteVisible`), of a value an acknowledged write replaced (`LostWrite` when the read
//! saw an older value or nothing, `Resurrected` when it saw a value that an acknowledged delete
//! removed); a listing that misses a key that was certainly there or shows one that was
//! certainly not (`ListingDisagrees`); a job whose output does not match its inputs
//! (`JobOutputWrong`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// How an operation ended, as its client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged.
    Ok,
    /// Definitely refused: it did not happen.
    Failed,
    /// Timed out or broke: it may or may not have happened.
    Unknown,
}

/// What an operation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Write value `value` to `key` (a put, an overwrite, or a SnapLink of a known value).
    Put {
        /// The key.
        key: String,
        /// The value's id (the bytes written name it).
        value: u64,
    },
    /// Make `key` a SnapLink of `src`, which held `value` (and nothing else wrote it).
    Link {
        /// The source.
        src: String,
        /// The new name.
        key: String,
        /// The value the source held.
        value: u64,
    },
    /// Delete `key`.
    Delete {
        /// The key.
        key: String,
    },
    /// Read `key`.
    Get {
        /// The key.
        key: String,
    },
    /// List directory `dir` (keys are `dir/name`).
    List {
        /// The directory.
        dir: String,
    },
    /// A job over `inputs` (keys with the value each held, unchanged while it ran).
    Job {
        /// Each input key and the byte count its value has.
        inputs: Vec<(String, u64)>,
    },
}

/// What a read saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// A value, by id.
    Value(u64),
    /// Nothing: the key was absent.
    Absent,
    /// Bytes that name no value of this key.
    Garbage(String),
    /// A listing's names.
    Names(BTreeSet<String>),
    /// A job's output (the total it computed).
    Total(u64),
}

/// One operation of the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Its number in the history.
    pub id: u64,
    /// The client that ran it.
    pub client: u32,
    /// What it did.
    pub op: Op,
    /// When it started and ended (any monotonic unit).
    pub start: u64,
    /// See `start`.
    pub end: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// What a successful read, listing or job saw.
    pub seen: Option<Seen>,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} client {} [{}..{}] {:?} -> {:?}",
            self.id, self.client, self.start, self.end, self.op, self.outcome
        )?;
        if let Some(s) = &self.seen {
            write!(f, " saw {s:?}")?;
        }
        Ok(())
    }
}

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A read returned bytes no write of that key wrote.
    Phantom,
    /// A read returned the value of a write that was refused.
    FailedWriteVisible,
    /// A read returned an older value (or nothing) after an acknowledged write replaced it.
    LostWrite,
    /// A read returned a value after an acknowledged delete removed it.
    Resurrected,
    /// A listing disagrees with what was certainly there.
    ListingDisagrees,
    /// A job's output does not match its inputs.
    JobOutputWrong,
}

/// One violation: what, on which key, the operation that saw it, and the operations that make
/// it a violation.
#[derive(Debug, Clone)]
pub struct Violation {
    /// What went wrong.
    pub kind: Kind,
    /// The key.
    pub key: String,
    /// The operation that saw it.
    pub at: Event,
    /// The writes involved.
    pub because: Vec<Event>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:?} on {}: {}", self.kind, self.key, self.at)?;
        for e in &self.because {
            writeln!(f, "  because of {e}")?;
        }
        Ok(())
    }
}

/// A write of one key, as the checker sees it: the value it leaves (`None`: absent).
#[derive(Debug, Clone)]
struct Write<'a> {
    value: Option<u64>,
    event: &'a Event,
}

/// One key's writes, indexed so that each question a read or a listing asks of them costs a
/// binary search and a walk over the writes near the read, not over the whole history.
struct KeyWrites<'a> {
    /// Every write, in history order (for reports).
    all: Vec<Write<'a>>,
    /// The acknowledged writes, by end.
    ok: Vec<Write<'a>>,
    /// `max_start[i]`: the latest start among `ok[..i]`.
    max_start: Vec<u64>,
    /// The longest acknowledged write: no `ok` write ending after `t + longest` started by `t`.
    longest: u64,
    /// The earliest start of a write whose outcome is unknown.
    first_unknown: Option<u64>,
}

impl<'a> KeyWrites<'a> {
    fn new(all: Vec<Write<'a>>) -> Self {
        let mut ok: Vec<Write<'a>> = all
            .iter()
            .filter(|w| w.event.outcome == Outcome::Ok)
            .cloned()
            .collect();
        ok.sort_by_key(|w| w.event.end);
        let mut max_start = Vec::with_capacity(ok.len() + 1);
        max_start.push(0);
        let mut latest = 0;
        for w in &ok {
            latest = latest.max(w.event.start);
            max_start.push(latest);
        }
        let longest = ok
            .iter()
            .map(|w| w.event.end.saturating_sub(w.event.start))
            .max()
            .unwrap_or(0);
        let first_unknown = all
            .iter()
            .filter(|w| w.event.outcome == Outcome::Unknown)
            .map(|w| w.event.start)
            .min();
        KeyWrites {
            all,
            ok,
            max_start,
            longest,
            first_unknown,
        }
    }

    /// How many acknowledged writes ended before `t`.
    fn ended_before(&self, t: u64) -> usize {
        self.ok.partition_point(|w| w.event.end < t)
    }

    /// Writes ending before this mark were certainly replaced before `t` (by an acknowledged
    /// write that started after they ended and ended before `t`); `None` when no acknowledged
    /// write ended before `t`, so the key may still hold its initial absence.
    fn replaced_below(&self, t: u64) -> Option<u64> {
        let n = self.ended_before(t);
        (n > 0).then(|| self.max_start[n])
    }

    /// Whether the initial absence may still hold at `start`.
    fn initial_possible(&self, start: u64) -> bool {
        self.ended_before(start) == 0
    }

    /// Whether `w` may be the key's value during `[start, end]`: it could have taken effect by
    /// `end`, and no acknowledged write certainly replaced it before `start`.
    fn possible_during(&self, w: &Write<'_>, start: u64, end: u64) -> bool {
        match w.event.outcome {
            Outcome::Failed => false,
            // It may take effect at any moment after it started.
            Outcome::Unknown => w.event.start < end,
            Outcome::Ok => {
                w.event.start < end
                    && self
                        .replaced_below(start)
                        .is_none_or(|mark| w.event.end >= mark)
            }
        }
    }

    /// The acknowledged writes that may be the value during `[start, end]`.
    fn ok_possible_during(&self, start: u64, end: u64) -> impl Iterator<Item = &Write<'a>> {
        let mark = self.replaced_below(start).unwrap_or(0);
        let from = self.ok.partition_point(|w| w.event.end < mark);
        let last_end = end.saturating_add(self.longest);
        self.ok[from..]
            .iter()
            .take_while(move |w| w.event.end <= last_end)
            .filter(move |w| w.event.start < end)
    }

    /// Whether some delete may leave the key absent during `[start, end]`.
    fn delete_possible_during(&self, start: u64, end: u64) -> bool {
        self.ok_possible_during(start, end)
            .any(|w| w.value.is_none())
            || self.all.iter().any(|w| {
                w.value.is_none() && w.event.outcome == Outcome::Unknown && w.event.start < end
            })
    }

    /// Present (`Some(true)`), absent (`Some(false)`) or uncertain (`None`) for the whole of
    /// `[start, end]`.
    fn certain_state(&self, start: u64, end: u64) -> Option<bool> {
        // A write of unknown outcome may land at any moment after it started.
        if self.first_unknown.is_some_and(|t| t < end) {
            return None;
        }
        let (mut absent, mut present) = (self.initial_possible(start), false);
        for w in self.ok_possible_during(start, end) {
            // A write that may happen during the listing makes it uncertain.
            if w.event.end > start {
                return None;
            }
            absent |= w.value.is_none();
            present |= w.value.is_some();
        }
        (absent != present).then_some(present)
    }

    /// The acknowledged writes that certainly replaced every write in `same` before `start`.
    fn replacing(&self, same: &[&Write<'a>], start: u64) -> Vec<Write<'a>> {
        let last_end = same.iter().map(|w| w.event.end).max().unwrap_or(0);
        self.ok[..self.ended_before(start)]
            .iter()
            .filter(|w2| w2.event.start > last_end)
            .cloned()
            .collect()
    }
}

fn writes_by_key(history: &[Event]) -> BTreeMap<&str, KeyWrites<'_>> {
    let mut by_key: BTreeMap<&str, Vec<Write<'_>>> = BTreeMap::new();
    for e in history {
        let (key, value) = match &e.op {
            Op::Put { key, value } | Op::Link { key, value, .. } => (key.as_str(), Some(*value)),
            Op::Delete { key } => (key.as_str(), None),
            _ => continue,
        };
        by_key
            .entry(key)
            .or_default()
            .push(Write { value, event: e });
    }
    by_key
        .into_iter()
        .map(|(k, all)| (k, KeyWrites::new(all)))
        .collect()
}

/// Checks `history`; gives every violation, first by the id of the operation that saw it.
pub fn check(history: &[Event]) -> Vec<Violation> {
    let writes = writes_by_key(history);
    let none = KeyWrites::new(Vec::new());
    let mut out = Vec::new();
    for e in history {
        if e.outcome != Outcome::Ok {
            continue;
        }
        match (&e.op, &e.seen) {
            (Op::Get { key }, Some(seen)) => {
                let kw = writes.get(key.as_str()).unwrap_or(&none);
                if let Some(v) = check_read(key, e, seen, kw) {
                    out.push(v);
                }
            }
            (Op::List { dir }, Some(Seen::Names(names))) => {
                out.extend(check_listing(dir, e, names, &writes));
            }
            (Op::Job { inputs }, Some(Seen::Total(total))) => {
                let want: u64 = inputs.iter().map(|(_, n)| n).sum();
                if *total != want {
                    out.push(Violation {
                        kind: Kind::JobOutputWrong,
                        key: inputs
                            .iter()
                            .map(|(k, _)| k.as_str())
                            .collect::<Vec<_>>()
                            .join(","),
                        at: e.clone(),
                        because: Vec::new(),
                    });
                }
            }
            _ => {}
        }
    }
    out.sort_by_key(|v| v.at.id);
    out
}

fn check_read(key: &str, e: &Event, seen: &Seen, kw: &KeyWrites<'_>) -> Option<Violation> {
    let violation = |kind: Kind, because: Vec<&Event>| Violation {
        kind,
        key: key.to_owned(),
        at: e.clone(),
        because: because.into_iter().cloned().collect(),
    };
    match seen {
        Seen::Garbage(_) => Some(violation(Kind::Phantom, Vec::new())),
        Seen::Value(v) => {
            let same: Vec<&Write<'_>> = kw.all.iter().filter(|w| w.value == Some(*v)).collect();
            if same.is_empty() {
                return Some(violation(Kind::Phantom, Vec::new()));
            }
            if same.iter().any(|w| kw.possible_during(w, e.start, e.end)) {
                return None;
            }
            if same.iter().all(|w| w.event.outcome == Outcome::Failed) {
                return Some(violation(
                    Kind::FailedWriteVisible,
                    same.iter().map(|w| w.event).collect(),
                ));
            }
            // Replaced for certain before the read began: by what?
            let after = kw.replacing(&same, e.start);
            let kind = if after.iter().any(|w| w.value.is_none()) {
                Kind::Resurrected
            } else {
                Kind::LostWrite
            };
            let mut because: Vec<&Event> = same.iter().map(|w| w.event).collect();
            because.extend(after.iter().map(|w| w.event));
            Some(violation(kind, because))
        }
        Seen::Absent => {
            if kw.initial_possible(e.start) || kw.delete_possible_during(e.start, e.end) {
                return None;
            }
            // Some acknowledged put certainly held the key.
            let puts: Vec<&Event> = kw
                .all
                .iter()
                .filter(|w| w.value.is_some() && kw.possible_during(w, e.start, e.end))
                .map(|w| w.event)
                .collect();
            Some(violation(Kind::LostWrite, puts))
        }
        _ => None,
    }
}

fn check_listing(
    dir: &str,
    e: &Event,
    names: &BTreeSet<String>,
    writes: &BTreeMap<&str, KeyWrites<'_>>,
) -> Vec<Violation> {
    let prefix = format!("{dir}/");
    let mut out = Vec::new();
    for (key, kw) in writes.range(prefix.as_str()..) {
        let Some(name) = key.strip_prefix(&prefix) else {
            break;
        };
        if name.contains('/') {
            continue;
        }
        let listed = names.contains(name);
        if let Some(present) = kw.certain_state(e.start, e.end)
            && present != listed
        {
            out.push(Violation {
                kind: Kind::ListingDisagrees,
                key: (*key).to_owned(),
                at: e.clone(),
                because: kw.all.iter().map(|w| w.event.clone()).collect(),
            });
        }
    }
    // A name no write ever made.
    for name in names {
        let key = format!("{prefix}{name}");
        if !writes.contains_key(key.as_str()) {
            out.push(Violation {
                kind: Kind::ListingDisagrees,
                key,
                at: e.clone(),
                because: Vec::new(),
            });
        }
    }
    out
}

#[cfg(test)]
#[path = "checker_naive.rs"]
mod naive;

#[cfg(test)]
mod tests {
    use super::*;

    struct H(Vec<Event>);

    impl H {
        fn op(&mut self, op: Op, start: u64, end: u64, outcome: Outcome, seen: Option<Seen>) {
            let id = self.0.len() as u64;
            self.0.push(Event {
                id,
                client: 0,
                op,
                start,
                end,
                outcome,
                seen,
            });
        }
        fn put(&mut self, key: &str, value: u64, start: u64, end: u64, outcome: Outcome) {
            let key = key.into();
            self.op(Op::Put { key, value }, start, end, outcome, None);
        }
        fn del(&mut self, key: &str, start: u64, end: u64) {
            let key = key.into();
            self.op(Op::Delete { key }, start, end, Outcome::Ok, None);
        }
        fn get(&mut self, key: &str, start: u64, end: u64, seen: Seen) {
            let key = key.into();
            self.op(Op::Get { key }, start, end, Outcome::Ok, Some(seen));
        }
    }

    fn kinds(h: &H) -> Vec<Kind> {
        check(&h.0).into_iter().map(|v| v.kind).collect()
    }

    #[test]
    fn a_lost_write_and_a_resurrected_delete_are_both_reported() {
        let mut h = H(Vec::new());
        h.put("d/a", 1, 0, 10, Outcome::Ok);
        h.put("d/a", 2, 20, 30, Outcome::Ok);
        h.get("d/a", 40, 50, Seen::Value(1)); // the second write was lost
        h.put("d/b", 3, 0, 10, Outcome::Ok);
        h.del("d/b", 20, 30);
        h.get("d/b", 40, 50, Seen::Value(3)); // the delete came undone
        h.put("d/c", 4, 0, 10, Outcome::Ok);
        h.get("d/c", 40, 50, Seen::Absent); // an acknowledged put vanished
        let v = check(&h.0);
        assert_eq!(
            v.iter().map(|v| v.kind).collect::<Vec<_>>(),
            [Kind::LostWrite, Kind::Resurrected, Kind::LostWrite]
        );
        let text = v[1].to_string();
        assert!(text.contains("Resurrected on d/b"), "{text}");
        assert!(text.contains("Delete"), "names the delete: {text}");
    }

    #[test]
    fn overlap_and_unknown_outcomes_allow_either_value() {
        let mut h = H(Vec::new());
        h.put("k", 1, 0, 10, Outcome::Ok);
        h.put("k", 2, 5, 40, Outcome::Ok); // overlaps the read below
        h.get("k", 20, 30, Seen::Value(1));
        h.get("k", 20, 30, Seen::Value(2));
        h.put("u", 7, 0, 10, Outcome::Unknown);
        h.get("u", 20, 30, Seen::Absent);
        h.get("u", 20, 30, Seen::Value(7));
        h.put("u", 8, 40, 50, Outcome::Ok);
        // An unknown write may land late, after the acknowledged one.
        h.get("u", 60, 70, Seen::Value(7));
        h.get("u", 60, 70, Seen::Value(8));
        assert_eq!(kinds(&h), []);
    }

    #[test]
    fn phantoms_and_refused_writes_are_reported() {
        let mut h = H(Vec::new());
        h.put("k", 1, 0, 10, Outcome::Failed);
        h.get("k", 20, 30, Seen::Value(1));
        h.get("k", 20, 30, Seen::Value(99));
        h.get("k", 20, 30, Seen::Garbage("zz".into()));
        h.get("k", 20, 30, Seen::Absent);
        assert_eq!(
            kinds(&h),
            [Kind::FailedWriteVisible, Kind::Phantom, Kind::Phantom]
        );
    }

    #[test]
    fn listings_must_show_what_was_certainly_there() {
        let mut h = H(Vec::new());
        h.put("d/a", 1, 0, 10, Outcome::Ok);
        h.put("d/b", 2, 0, 10, Outcome::Ok);
        h.del("d/b", 11, 12);
        h.put("d/c", 3, 15, 40, Outcome::Ok); // during the listings: either way
        let names = |n: &[&str]| Seen::Names(n.iter().map(|s| (*s).to_owned()).collect());
        h.op(
            Op::List { dir: "d".into() },
            20,
            30,
            Outcome::Ok,
            Some(names(&["a"])),
        );
        h.op(
            Op::List { dir: "d".into() },
            20,
            30,
            Outcome::Ok,
            Some(names(&["a", "c"])),
        );
        h.op(
            Op::List { dir: "d".into() },
            20,
            30,
            Outcome::Ok,
            Some(names(&["b"])),
        );
        h.op(
            Op::List { dir: "d".into() },
            20,
            30,
            Outcome::Ok,
            Some(names(&["a", "zz"])),
        );
        let v = check(&h.0);
        let keys: Vec<(u64, &str)> = v.iter().map(|v| (v.at.id, v.key.as_str())).collect();
        assert_eq!(keys, [(6, "d/a"), (6, "d/b"), (7, "d/zz")]);
    }

    #[test]
    fn job_totals_must_match_their_inputs() {
        let mut h = H(Vec::new());
        let inputs = vec![("j/a".to_owned(), 5), ("j/b".to_owned(), 7)];
        let job = Op::Job { inputs };
        h.op(job.clone(), 0, 10, Outcome::Ok, Some(Seen::Total(12)));
        h.op(job, 0, 10, Outcome::Ok, Some(Seen::Total(11)));
        assert_eq!(kinds(&h), [Kind::JobOutputWrong]);
    }

    /// An hour of a soak is a few hundred thousand operations, thousands of writes of each key,
    /// and a listing every few operations: the check must stay near-linear in that.
    #[test]
    fn a_long_correct_history_is_checked_whole() {
        let mut h = H(Vec::new());
        let mut state: BTreeMap<String, Option<u64>> = BTreeMap::new();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut t = 0;
        for v in 1..=200_000u64 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let key = format!("d{}/k{}", rng % 4, (rng >> 8) % 100);
            t += 10;
            match (rng >> 20) % 8 {
                0..=2 => {
                    h.put(&key, v, t, t + 5, Outcome::Ok);
                    state.insert(key, Some(v));
                }
                3 => {
                    h.del(&key, t, t + 5);
                    state.insert(key, None);
                }
                4 => {
                    let dir = format!("d{}", rng % 4);
                    let names = state
                        .range(format!("{dir}/")..format!("{dir}0"))
                        .filter(|(_, v)| v.is_some())
                        .map(|(k, _)| k[dir.len() + 1..].to_owned())
                        .collect();
                    h.op(
                        Op::List { dir },
                        t,
                        t + 5,
                        Outcome::Ok,
                        Some(Seen::Names(names)),
                    );
                }
                _ => {
                    let seen = match state.get(&key).copied().flatten() {
                        Some(v) => Seen::Value(v),
                        None => Seen::Absent,
                    };
                    h.get(&key, t, t + 5, seen);
                }
            }
        }
        let began = std::time::Instant::now();
        let v = check(&h.0);
        eprintln!("checked {} operations in {:?}", h.0.len(), began.elapsed());
        assert!(v.is_empty(), "{}", v[0]);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// A sequential history of one client against a real register never has a
            /// violation, whatever the writes and reads.
            #[test]
            fn a_correct_sequential_register_is_never_flagged(ops in proptest::collection::vec((0u8..3, 0u8..3), 1..60)) {
                let mut h = H(Vec::new());
                let mut state: BTreeMap<String, Option<u64>> = BTreeMap::new();
                let mut t = 0;
                let mut next = 1;
                for (what, k) in ops {
                    let key = format!("d/k{k}");
                    t += 10;
                    match what {
                        0 => { h.put(&key, next, t, t + 5, Outcome::Ok); state.insert(key, Some(next)); next += 1; }
                        1 => { h.del(&key, t, t + 5); state.insert(key, None); }
                        _ => {
                            let seen = match state.get(&key).copied().flatten() {
                                Some(v) => Seen::Value(v),
                                None => Seen::Absent,
                            };
                            h.get(&key, t, t + 5, seen);
                        }
                    }
                }
                let names: BTreeSet<String> = state.iter().filter(|(_, v)| v.is_some()).map(|(k, _)| k.trim_start_matches("d/").to_owned()).collect();
                t += 10;
                h.op(Op::List { dir: "d".into() }, t, t + 5, Outcome::Ok, Some(Seen::Names(names)));
                prop_assert!(check(&h.0).is_empty(), "{:?}", check(&h.0));
            }

            /// The indexed checker finds exactly what the plain one finds, on concurrent
            /// histories with every outcome, reads of any value and listings of any names.
            #[test]
            fn the_indexed_checker_agrees_with_the_plain_one(
                ops in proptest::collection::vec(
                    (0u8..5, 0u8..4, 0u64..300, 0u64..40, 0u8..3, 0u8..16),
                    1..80,
                )
            ) {
                let mut h = H(Vec::new());
                let mut next = 1;
                for (what, k, start, len, outcome, pick) in ops {
                    let key = format!("d/k{k}");
                    let end = start + len;
                    let outcome = [Outcome::Ok, Outcome::Failed, Outcome::Unknown][outcome as usize];
                    match what {
                        0 => { h.put(&key, next, start, end, outcome); next += 1; }
                        1 => h.op(Op::Delete { key }, start, end, outcome, None),
                        2 | 3 => {
                            let seen = match pick {
                                0 => Seen::Absent,
                                1 => Seen::Garbage("x".into()),
                                n => Seen::Value(u64::from(n) % (next + 1)),
                            };
                            h.get(&key, start, end, seen);
                        }
                        _ => {
                            let names = (0..4)
                                .filter(|i| pick & (1 << i) != 0)
                                .map(|i| format!("k{i}"))
                                .collect();
                            h.op(Op::List { dir: "d".into() }, start, end, Outcome::Ok, Some(Seen::Names(names)));
                        }
                    }
                }
                let summary = |v: Vec<Violation>| -> Vec<(Kind, String, u64, BTreeSet<u64>)> {
                    v.into_iter()
                        .map(|v| (v.kind, v.key, v.at.id, v.because.iter().map(|e| e.id).collect()))
                        .collect()
                };
                prop_assert_eq!(summary(check(&h.0)), summary(naive::check(&h.0)));
            }

            /// Dropping any one acknowledged put from what a later read sees is caught.
            #[test]
            fn a_dropped_put_is_always_caught(n in 1u64..20) {
                let mut h = H(Vec::new());
                for v in 1..=n {
                    h.put("k", v, v * 10, v * 10 + 5, Outcome::Ok);
                }
                let stale = if n == 1 { Seen::Absent } else { Seen::Value(n - 1) };
                h.get("k", n * 10 + 10, n * 10 + 15, stale);
                prop_assert_eq!(kinds(&h), vec![Kind::LostWrite]);
            }
        }
    }
}
