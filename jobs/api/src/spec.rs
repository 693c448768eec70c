//! The job a user submits: phases of `map` or `reduce`, parsed and validated at the edge so the
//! supervisor and agents only ever see a well-formed job.
//!
//! The JSON follows the original's job configuration: `{"name", "phases": [{"type", "exec",
//! "init", "assets", "memory", "disk", "count", "image"}]}`. Unknown fields are refused (a typo
//! must not silently run a different job); `null` stands for "not given", as the npm client
//! sends phases whose optional fields were never set.

use serde::{Deserialize, Serialize};

/// Largest job JSON accepted (the original's limit).
pub const MAX_JOB_BYTES: usize = 100_000;
/// Memory sizes a phase may ask for, MB.
pub const MEMORY_MB: &[u64] = &[128, 256, 512, 1024, 2048, 4096, 8192];
/// Default memory, MB.
pub const DEFAULT_MEMORY_MB: u64 = 1024;
/// Scratch sizes a phase may ask for, GB.
pub const DISK_GB: &[u64] = &[2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];
/// Default scratch, GB.
pub const DEFAULT_DISK_GB: u64 = 8;
/// Most reducers in one phase.
pub const MAX_REDUCERS: u64 = 128;
/// Most phases in one job.
pub const MAX_PHASES: usize = 32;

/// Map runs once per input object, on a node holding it; reduce runs `count` times over the
/// concatenated outputs of the previous phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PhaseType {
    /// One task per input.
    Map,
    /// `count` tasks over all inputs.
    Reduce,
}

/// One phase, with every default filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phase {
    /// Map or reduce.
    #[serde(rename = "type")]
    pub kind: PhaseType,
    /// The command, run with `bash -c`.
    pub exec: String,
    /// Run before `exec` in the same container; its failure is a `TaskInitError`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<String>,
    /// Objects copied to `/assets/<path>` before `init`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assets: Vec<String>,
    /// Memory limit, MB.
    pub memory: u64,
    /// Scratch space limit, GB.
    pub disk: u64,
    /// Reducers (reduce phases only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// The OCI image the phase runs in: an object path (`/login/stor/img.tar`) or a name in the
    /// region's image registry; absent, tasks see the node's own `/usr` and `/etc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

impl Phase {
    /// Reducers of this phase (1 for map phases, which is never used).
    pub fn reducers(&self) -> u64 {
        self.count.unwrap_or(1)
    }
}

/// A validated job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// A name for people; may be empty.
    #[serde(default)]
    pub name: String,
    /// The phases, in order.
    pub phases: Vec<Phase>,
}

/// Why a job was refused (reported as `InvalidJob`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidJob(pub String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPhase {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    exec: Option<String>,
    #[serde(default)]
    init: Option<String>,
    #[serde(default)]
    assets: Option<Vec<String>>,
    #[serde(default)]
    memory: Option<serde_json::Value>,
    #[serde(default)]
    disk: Option<serde_json::Value>,
    #[serde(default)]
    count: Option<serde_json::Value>,
    #[serde(default)]
    image: Option<String>,
    /// Opaque user argument (accepted, unused).
    #[serde(default)]
    #[allow(dead_code)]
    uarg: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    phases: Option<Vec<RawPhase>>,
    #[serde(default)]
    #[allow(dead_code)]
    transient: Option<bool>,
    #[serde(default)]
    #[allow(dead_code)]
    options: Option<serde_json::Value>,
}

fn number(v: Option<serde_json::Value>, what: &str, i: usize) -> Result<Option<u64>, InvalidJob> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
            InvalidJob(format!(
                "phase {i}: {what} must be a positive integer (got {n})"
            ))
        }),
        // The npm client sends numbers from the command line as numbers, but a hand-written
        // job may quote them.
        Some(serde_json::Value::String(s)) => s.trim().parse().map(Some).map_err(|_| {
            InvalidJob(format!(
                "phase {i}: {what} must be a positive integer (got {s:?})"
            ))
        }),
        Some(other) => Err(InvalidJob(format!(
            "phase {i}: {what} must be a positive integer (got {other})"
        ))),
    }
}

/// Parses and validates a job's JSON body.
///
/// # Errors
/// [`InvalidJob`] naming the first problem: not JSON, too large, no phases, a phase without
/// `exec`, an unknown type, a memory or disk size not in the allowed list, a reducer count out
/// of range, `count` on a map phase, or an asset that is not an absolute object path.
pub fn parse(body: &[u8]) -> Result<JobSpec, InvalidJob> {
    if body.len() > MAX_JOB_BYTES {
        return Err(InvalidJob(format!(
            "job is {} bytes; at most {MAX_JOB_BYTES} are allowed",
            body.len()
        )));
    }
    let raw: RawJob = serde_json::from_slice(body)
        .map_err(|e| InvalidJob(format!("job is not valid JSON: {e}")))?;
    let raw_phases = raw
        .phases
        .ok_or_else(|| InvalidJob("job has no \"phases\"".into()))?;
    if raw_phases.is_empty() {
        return Err(InvalidJob("job must have at least one phase".into()));
    }
    if raw_phases.len() > MAX_PHASES {
        return Err(InvalidJob(format!(
            "job has {} phases; at most {MAX_PHASES} are allowed",
            raw_phases.len()
        )));
    }
    let mut phases = Vec::with_capacity(raw_phases.len());
    for (i, p) in raw_phases.into_iter().enumerate() {
        let kind = match p.kind.as_deref() {
            None | Some("map") | Some("storage-map") => PhaseType::Map,
            Some("reduce") => PhaseType::Reduce,
            Some(other) => {
                return Err(InvalidJob(format!(
                    "phase {i}: type {other:?} is not \"map\" or \"reduce\""
                )));
            }
        };
        let exec = p
            .exec
            .filter(|e| !e.trim().is_empty())
            .ok_or_else(|| InvalidJob(format!("phase {i}: \"exec\" is required")))?;
        let memory = number(p.memory, "memory", i)?.unwrap_or(DEFAULT_MEMORY_MB);
        if !MEMORY_MB.contains(&memory) {
            return Err(InvalidJob(format!(
                "phase {i}: memory {memory} is not one of {MEMORY_MB:?} (MB)"
            )));
        }
        let disk = number(p.disk, "disk", i)?.unwrap_or(DEFAULT_DISK_GB);
        if !DISK_GB.contains(&disk) {
            return Err(InvalidJob(format!(
                "phase {i}: disk {disk} is not one of {DISK_GB:?} (GB)"
            )));
        }
        let count = number(p.count, "count", i)?;
        let count = match (kind, count) {
            (PhaseType::Map, Some(_)) => {
                return Err(InvalidJob(format!(
                    "phase {i}: \"count\" applies only to reduce phases"
                )));
            }
            (PhaseType::Map, None) => None,
            (PhaseType::Reduce, c) => {
                let c = c.unwrap_or(1);
                if !(1..=MAX_REDUCERS).contains(&c) {
                    return Err(InvalidJob(format!(
                        "phase {i}: count {c} must be between 1 and {MAX_REDUCERS}"
                    )));
                }
                Some(c)
            }
        };
        let assets = p.assets.unwrap_or_default();
        for a in &assets {
            if manta_types::MantaPath::parse(a).is_err() {
                return Err(InvalidJob(format!(
                    "phase {i}: asset {a:?} is not an object path (/:login/stor/...)"
                )));
            }
        }
        phases.push(Phase {
            kind,
            exec,
            init: p.init.filter(|s| !s.trim().is_empty()),
            assets,
            memory,
            disk,
            count,
            image: p.image,
        });
    }
    Ok(JobSpec {
        name: raw.name.unwrap_or_default(),
        phases,
    })
}

impl JobSpec {
    /// The job as JSON (what `parse` accepts back).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a job always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fills_defaults_and_accepts_the_npm_clients_nulls() {
        let j = parse(
            br#"{"name":"","phases":[{"exec":"wc","type":"map","memory":null,"disk":null,"assets":null,"init":null,"image":null},
                {"type":"reduce","exec":"awk '{s+=$1} END {print s}'","count":2}]}"#,
        )
        .unwrap();
        assert_eq!(j.phases[0].kind, PhaseType::Map);
        assert_eq!(j.phases[0].memory, DEFAULT_MEMORY_MB);
        assert_eq!(j.phases[0].disk, DEFAULT_DISK_GB);
        assert_eq!(j.phases[1].count, Some(2));
        assert_eq!(j.phases[1].reducers(), 2);
    }

    #[test]
    fn refuses_bad_jobs_with_a_reason() {
        let cases: &[(&str, &str)] = &[
            ("nope", "not valid JSON"),
            ("{}", "no \"phases\""),
            (r#"{"phases":[]}"#, "at least one phase"),
            (r#"{"phases":[{"type":"map"}]}"#, "\"exec\" is required"),
            (
                r#"{"phases":[{"exec":"x","type":"sort"}]}"#,
                "is not \"map\"",
            ),
            (r#"{"phases":[{"exec":"x","memory":100}]}"#, "memory 100"),
            (r#"{"phases":[{"exec":"x","disk":3}]}"#, "disk 3"),
            (r#"{"phases":[{"exec":"x","count":2}]}"#, "only to reduce"),
            (
                r#"{"phases":[{"exec":"x","type":"reduce","count":0}]}"#,
                "between 1",
            ),
            (
                r#"{"phases":[{"exec":"x","type":"reduce","count":500}]}"#,
                "between 1",
            ),
            (
                r#"{"phases":[{"exec":"x","assets":["rel/path"]}]}"#,
                "not an object path",
            ),
            (r#"{"phases":[{"exec":"x","bogus":1}]}"#, "unknown field"),
            (
                r#"{"phases":[{"exec":"x","memory":-5}]}"#,
                "positive integer",
            ),
        ];
        for (body, want) in cases {
            let e = parse(body.as_bytes()).unwrap_err();
            assert!(e.0.contains(want), "{body}: {e} lacks {want:?}");
        }
        let big = vec![b' '; MAX_JOB_BYTES + 1];
        assert!(parse(&big).unwrap_err().0.contains("at most"));
    }

    fn phase() -> impl Strategy<Value = Phase> {
        (
            any::<bool>(),
            "[a-z |'$]{1,20}",
            proptest::option::of("[a-z ]{1,10}"),
            proptest::sample::select(MEMORY_MB),
            proptest::sample::select(DISK_GB),
            1..=MAX_REDUCERS,
        )
            .prop_map(|(map, exec, init, memory, disk, count)| Phase {
                kind: if map {
                    PhaseType::Map
                } else {
                    PhaseType::Reduce
                },
                exec: format!("x{exec}"),
                init: init.map(|i| format!("y{i}")),
                assets: vec!["/jill/stor/a.tgz".into()],
                memory,
                disk,
                count: (!map).then_some(count),
                image: None,
            })
    }

    proptest! {
        #[test]
        fn round_trips(name in "[a-z ]{0,12}", phases in proptest::collection::vec(phase(), 1..5)) {
            let j = JobSpec { name, phases };
            prop_assert_eq!(parse(&j.to_json()).unwrap(), j);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn never_panics_on_json_shaped_input(s in r#"\{"phases":\[\{("exec":"[a-z]{0,3}",)?("type":"[a-z]{0,7}",)?("count":-?[0-9]{1,4},)?"memory":[0-9]{1,5}\}\]\}"#) {
            let _ = parse(s.as_bytes());
        }
    }
}
