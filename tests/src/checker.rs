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

fn writes_by_key(history: &[Event]) -> BTreeMap<&str, Vec<Write<'_>>> {
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
}

/// Whether `w` may still be the key's value during `[start, end]`: it could have taken effect
/// by `end`, and no acknowledged write certainly replaced it before `start`.
fn possible_during(w: &Write<'_>, all: &[Write<'_>], start: u64, end: u64) -> bool {
    match w.event.outcome {
        Outcome::Failed => false,
        // It may take effect at any moment after it started.
        Outcome::Unknown => w.event.start < end,
        Outcome::Ok => {
            w.event.start < end
                && !all.iter().any(|w2| {
                    w2.event.outcome == Outcome::Ok
                        && w2.event.start > w.event.end
                        && w2.event.end < start
                })
        }
    }
}

/// Whether the initial absence may still hold during `[start, _]`: no acknowledged write ended
/// before `start`.
fn initial_possible(all: &[Write<'_>], start: u64) -> bool {
    !all.iter()
        .any(|w| w.event.outcome == Outcome::Ok && w.event.end < start)
}

/// Checks `history`; gives every violation, first by the id of the operation that saw it.
pub fn check(history: &[Event]) -> Vec<Violation> {
    let writes = writes_by_key(history);
    let none: Vec<Write<'_>> = Vec::new();
    let mut out = Vec::new();
    for e in history {
        if e.outcome != Outcome::Ok {
            continue;
        }
        match (&e.op, &e.seen) {
            (Op::Get { key }, Some(seen)) => {
                let all = writes.get(key.as_str()).unwrap_or(&none);
                if let Some(v) = check_read(key, e, seen, all) {
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

fn check_read(key: &str, e: &Event, seen: &Seen, all: &[Write<'_>]) -> Option<Violation> {
    let violation = |kind: Kind, because: Vec<&Event>| Violation {
        kind,
        key: key.to_owned(),
        at: e.clone(),
        because: because.into_iter().cloned().collect(),
    };
    match seen {
        Seen::Garbage(_) => Some(violation(Kind::Phantom, Vec::new())),
        Seen::Value(v) => {
            let same: Vec<&Write<'_>> = all.iter().filter(|w| w.value == Some(*v)).collect();
            if same.is_empty() {
                return Some(violation(Kind::Phantom, Vec::new()));
            }
            if same.iter().any(|w| possible_during(w, all, e.start, e.end)) {
                return None;
            }
            if same.iter().all(|w| w.event.outcome == Outcome::Failed) {
                return Some(violation(
                    Kind::FailedWriteVisible,
                    same.iter().map(|w| w.event).collect(),
                ));
            }
            // Replaced for certain before the read began: by what?
            let after = replacing(&same, all, e.start);
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
            let absent_ok = initial_possible(all, e.start)
                || all
                    .iter()
                    .any(|w| w.value.is_none() && possible_during(w, all, e.start, e.end));
            if absent_ok {
                return None;
            }
            // Some acknowledged put certainly held the key.
            let puts: Vec<&Event> = all
                .iter()
                .filter(|w| w.value.is_some() && possible_during(w, all, e.start, e.end))
                .map(|w| w.event)
                .collect();
            Some(violation(Kind::LostWrite, puts))
        }
        _ => None,
    }
}

/// The acknowledged writes that certainly replaced every write in `same` before `start`.
fn replacing<'a>(same: &[&Write<'a>], all: &[Write<'a>], start: u64) -> Vec<Write<'a>> {
    let last_end = same.iter().map(|w| w.event.end).max().unwrap_or(0);
    all.iter()
        .filter(|w2| {
            w2.event.outcome == Outcome::Ok && w2.event.start > last_end && w2.event.end < start
        })
        .cloned()
        .collect()
}

/// Present (`Some(true)`), absent (`Some(false)`) or uncertain (`None`) for the whole of
/// `[start, end]`.
fn certain_state(all: &[Write<'_>], start: u64, end: u64) -> Option<bool> {
    let mut states = BTreeSet::new();
    if initial_possible(all, start) {
        states.insert(false);
    }
    for w in all {
        if possible_during(w, all, start, end) {
            // A write that may happen during the listing makes it uncertain.
            if w.event.outcome == Outcome::Unknown || w.event.end > start {
                return None;
            }
            states.insert(w.value.is_some());
        }
    }
    (states.len() == 1).then(|| states.contains(&true))
}

fn check_listing(
    dir: &str,
    e: &Event,
    names: &BTreeSet<String>,
    writes: &BTreeMap<&str, Vec<Write<'_>>>,
) -> Vec<Violation> {
    let prefix = format!("{dir}/");
    let mut out = Vec::new();
    for (key, all) in writes {
        let Some(name) = key.strip_prefix(&prefix) else {
            continue;
        };
        if name.contains('/') {
            continue;
        }
        let listed = names.contains(name);
        if let Some(present) = certain_state(all, e.start, e.end)
            && present != listed
        {
            out.push(Violation {
                kind: Kind::ListingDisagrees,
                key: (*key).to_owned(),
                at: e.clone(),
                because: all.iter().map(|w| w.event.clone()).collect(),
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
