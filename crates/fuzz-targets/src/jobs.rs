//! The job JSON users submit (`POST /:login/jobs`).

use manta_jobs_api::spec::{
    self, DISK_GB, JobSpec, MAX_JOB_BYTES, MAX_PHASES, MAX_REDUCERS, MEMORY_MB, PhaseType,
};
use manta_types::MantaPath;

/// A job body: what parses is within the limits and reads back the same from its JSON.
pub fn job_spec(data: &[u8]) {
    let Ok(job) = spec::parse(data) else {
        return;
    };
    assert!((1..=MAX_PHASES).contains(&job.phases.len()));
    for p in &job.phases {
        assert!(!p.exec.trim().is_empty());
        assert!(p.init.as_deref().is_none_or(|i| !i.trim().is_empty()));
        assert!(MEMORY_MB.contains(&p.memory) && DISK_GB.contains(&p.disk));
        match p.kind {
            PhaseType::Map => assert_eq!(p.count, None),
            PhaseType::Reduce => {
                assert!(p.count.is_some_and(|c| (1..=MAX_REDUCERS).contains(&c)));
            }
        }
        for a in &p.assets {
            assert!(MantaPath::parse(a).is_ok(), "{a:?}");
        }
    }
    let json = job.to_json();
    // The stored form (serde) reads back whole; `parse` reads it back within its size limit.
    let stored: JobSpec = serde_json::from_slice(&json).expect("a job's JSON reads back");
    assert_eq!(stored, job);
    if json.len() <= MAX_JOB_BYTES {
        assert_eq!(spec::parse(&json).as_ref(), Ok(&job));
    }
}
