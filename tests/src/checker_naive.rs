//! The first checker, kept as the reference the indexed one is tested against: each question
//! walks every write of the key, which is plainly right and quadratic.

use super::*;

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
