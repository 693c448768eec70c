//! The workload of the fault runs: concurrent Manta clients putting, overwriting, reading,
//! deleting, SnapLinking and listing objects in a few shared directories, every operation
//! recorded (start, end, outcome, what it saw) for the [`checker`](crate::checker).
//!
//! Each value's bytes name their key and value id and carry a filler whose length follows from
//! the id, so a read can tell which write it sees, or that it sees bytes no write wrote.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use manta_client::{MantaClient, PutOptions};

use crate::checker::{Event, Op, Outcome, Seen};

/// The history being written, shared by every client.
#[derive(Debug)]
pub struct Recorder {
    t0: Instant,
    events: Mutex<Vec<Event>>,
    next_value: AtomicU64,
    /// Operations that worked and that did not, per minute since the start.
    tally: Mutex<Vec<(u64, u64)>>,
}

impl Default for Recorder {
    fn default() -> Recorder {
        Recorder {
            t0: Instant::now(),
            events: Mutex::new(Vec::new()),
            next_value: AtomicU64::new(1),
            tally: Mutex::new(Vec::new()),
        }
    }
}

impl Recorder {
    /// Microseconds since the recorder was made.
    pub fn now(&self) -> u64 {
        u64::try_from(self.t0.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// A value id never used before.
    pub fn value(&self) -> u64 {
        self.next_value.fetch_add(1, Ordering::Relaxed)
    }

    /// Records one operation that started at `start` and ends now.
    pub fn record(&self, client: u32, op: Op, start: u64, outcome: Outcome, seen: Option<Seen>) {
        let end = self.now();
        let mut ev = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let id = ev.len() as u64;
        ev.push(Event {
            id,
            client,
            op,
            start,
            end,
            outcome,
            seen,
        });
    }

    /// Counts one operation in its minute: it worked, or not.
    pub fn tally(&self, ok: bool) {
        let minute = usize::try_from(self.t0.elapsed().as_secs() / 60).unwrap_or(usize::MAX);
        let mut t = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        if t.len() <= minute {
            t.resize(minute + 1, (0, 0));
        }
        if ok {
            t[minute].0 += 1;
        } else {
            t[minute].1 += 1;
        }
    }

    /// Per minute: operations that worked, and that did not.
    pub fn per_minute(&self) -> Vec<(u64, u64)> {
        self.tally.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The history so far.
    pub fn history(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The bytes of value `value` of `key`: a header naming both, then a filler whose length and
/// letters follow from both (so a changed byte anywhere makes them no value at all).
pub fn body(key: &str, value: u64) -> String {
    // FNV-1a over the header.
    let head = format!("{key}#{value}");
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in head.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut rng = Rng::new(h);
    let len = (h % 3000) as usize;
    let filler: String = (0..len)
        .map(|_| char::from(b'a' + (rng.below(26) as u8)))
        .collect();
    format!("{head}\n{filler}")
}

/// What reading `bytes` sees: the value they are (value ids are unique across keys, so the
/// checker can tell a value that belongs to another key), or garbage. The bytes name the key
/// they were written under, which for a SnapLink's target is its source.
pub fn parse(bytes: &[u8]) -> Seen {
    let text = String::from_utf8_lossy(bytes);
    let garbage = || Seen::Garbage(text.chars().take(80).collect());
    let Some((head, _)) = text.split_once('\n') else {
        return garbage();
    };
    let Some((k, v)) = head.rsplit_once('#') else {
        return garbage();
    };
    match v.parse::<u64>() {
        Ok(value) if body(k, value).as_bytes() == bytes => Seen::Value(value),
        _ => garbage(),
    }
}

/// A small deterministic random source (xorshift), so a seed replays a run's choices.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded with `seed` (0 becomes 1).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// The workload's shape.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Where the objects live (`~~/stor/faults`).
    pub root: String,
    /// Shared directories under it.
    pub dirs: u32,
    /// Shared keys per directory.
    pub keys: u32,
}

impl Default for Shape {
    fn default() -> Shape {
        Shape {
            root: "~~/stor/faults".into(),
            dirs: 3,
            keys: 8,
        }
    }
}

impl Shape {
    /// Directory `i`.
    pub fn dir(&self, i: u64) -> String {
        format!("{}/d{i}", self.root)
    }

    /// Makes the directories.
    ///
    /// # Errors
    /// When the store refuses.
    pub async fn prepare(&self, c: &MantaClient) -> Result<(), manta_client::Error> {
        for d in 0..self.dirs {
            c.mkdirp(&self.dir(u64::from(d))).await?;
        }
        c.mkdirp(&format!("{}/scratch", self.root)).await
    }
}

/// How a write's error is counted: the front door said for certain that nothing happened, or
/// it may have happened.
fn write_outcome(e: &manta_client::Error) -> Outcome {
    match e {
        // Refused before anything was stored: bad request, not found, conflict, auth.
        manta_client::Error::Api { status, .. } if (400..500).contains(status) => Outcome::Failed,
        _ => Outcome::Unknown,
    }
}

fn is_not_found(e: &manta_client::Error) -> bool {
    matches!(e, manta_client::Error::Api { status: 404, .. })
}

/// Operation counts of one client.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    /// Operations done.
    pub ops: u64,
    /// Operations that failed or whose outcome is unknown.
    pub errors: u64,
}

/// One client's loop until `stop`: mostly reads and writes of the shared keys, some deletes,
/// listings, SnapLinks (of a value this client just wrote) and directory churn.
pub async fn client_loop(
    c: MantaClient,
    client: u32,
    shape: Shape,
    rec: Arc<Recorder>,
    mut rng: Rng,
    stop: Arc<AtomicBool>,
) -> Counts {
    let mut n = Counts::default();
    let mut links = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let dir = shape.dir(rng.below(u64::from(shape.dirs)));
        let key = format!("{dir}/k{}", rng.below(u64::from(shape.keys)));
        let start = rec.now();
        n.ops += 1;
        let ok = match rng.below(100) {
            0..30 => {
                let value = rec.value();
                let r = c
                    .put_bytes(&key, body(&key, value), PutOptions::default())
                    .await;
                let op = Op::Put { key, value };
                match r {
                    Ok(_) => rec.record(client, op, start, Outcome::Ok, None),
                    Err(e) => rec.record(client, op, start, write_outcome(&e), None),
                }
                true
            }
            30..65 => match c.get_bytes(&key).await {
                Ok(b) => {
                    let seen = parse(&b);
                    rec.record(client, Op::Get { key }, start, Outcome::Ok, Some(seen));
                    true
                }
                Err(e) if is_not_found(&e) => {
                    rec.record(
                        client,
                        Op::Get { key },
                        start,
                        Outcome::Ok,
                        Some(Seen::Absent),
                    );
                    true
                }
                Err(_) => false,
            },
            65..75 => {
                let r = c.rm(&key).await;
                let outcome = match &r {
                    Ok(()) => Outcome::Ok,
                    // Already absent: the key is absent after it all the same.
                    Err(e) if is_not_found(e) => Outcome::Ok,
                    Err(e) => write_outcome(e),
                };
                rec.record(client, Op::Delete { key }, start, outcome, None);
                outcome == Outcome::Ok
            }
            75..85 => {
                let r = c.ls_all(&dir).await;
                match r {
                    Ok(entries) => {
                        let names: BTreeSet<String> = entries.into_iter().map(|e| e.name).collect();
                        let op = Op::List { dir };
                        rec.record(client, op, start, Outcome::Ok, Some(Seen::Names(names)));
                        true
                    }
                    Err(_) => false,
                }
            }
            85..95 => {
                // A SnapLink of a value this client just wrote to its own source key: the
                // link's target holds that value (nothing else writes the source).
                let src = format!("{}/scratch/src-{client}", shape.root);
                let value = rec.value();
                let put = c
                    .put_bytes(&src, body(&src, value), PutOptions::default())
                    .await;
                let put_outcome = match &put {
                    Ok(_) => Outcome::Ok,
                    Err(e) => write_outcome(e),
                };
                let src_op = Op::Put {
                    key: src.clone(),
                    value,
                };
                rec.record(client, src_op, start, put_outcome, None);
                if put_outcome == Outcome::Ok {
                    links += 1;
                    let dst = format!("{dir}/l{client}-{}", links % 4);
                    // The target holds the source's bytes: the same value, under the source's
                    // name.
                    let start = rec.now();
                    let r = c.ln(&src, &dst).await;
                    let outcome = match &r {
                        Ok(_) => Outcome::Ok,
                        Err(e) => write_outcome(e),
                    };
                    rec.record(
                        client,
                        Op::Link {
                            src,
                            key: dst,
                            value,
                        },
                        start,
                        outcome,
                        None,
                    );
                    outcome == Outcome::Ok
                } else {
                    false
                }
            }
            _ => {
                // Directory churn: a directory made and removed again.
                let d = format!("{}/scratch/tmp-{client}-{}", shape.root, rng.below(1000));
                c.mkdir(&d).await.is_ok() && c.rm(&d).await.is_ok()
            }
        };
        rec.tally(ok);
        if !ok {
            n.errors += 1;
            // Do not spin while the store is unavailable.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    n
}

/// The bucket of the S3 clients.
pub const BUCKET: &str = "faults";

/// The checker's name of S3 key `key` (apart from the Manta keys).
fn s3_name(key: &str) -> String {
    format!("s3://{BUCKET}/{key}")
}

/// The S3 error's HTTP status, when the service answered.
fn s3_status<E>(e: &aws_sdk_s3::error::SdkError<E>) -> Option<u16> {
    match e {
        aws_sdk_s3::error::SdkError::ServiceError(se) => Some(se.raw().status().as_u16()),
        _ => None,
    }
}

/// How an S3 write's error is counted (as [`write_outcome`]).
fn s3_outcome<E>(e: &aws_sdk_s3::error::SdkError<E>) -> Outcome {
    match s3_status(e) {
        Some(s) if (400..500).contains(&s) => Outcome::Failed,
        _ => Outcome::Unknown,
    }
}

/// Makes the S3 clients' bucket.
///
/// # Errors
/// When the bucket can be neither made nor found.
pub async fn prepare_bucket(s3: &aws_sdk_s3::Client) -> Result<(), String> {
    match s3.create_bucket().bucket(BUCKET).send().await {
        Ok(_) => Ok(()),
        Err(e) if s3_status(&e) == Some(409) => Ok(()),
        Err(e) => Err(format!("create bucket {BUCKET}: {e:?}")),
    }
}

/// Reads S3 key `key`: what it holds, or `None` when the read failed.
async fn s3_get(s3: &aws_sdk_s3::Client, key: &str) -> Option<Seen> {
    match s3.get_object().bucket(BUCKET).key(key).send().await {
        Ok(o) => match o.body.collect().await {
            Ok(b) => Some(parse(&b.into_bytes())),
            Err(_) => None,
        },
        Err(e) if s3_status(&e) == Some(404) => Some(Seen::Absent),
        Err(_) => None,
    }
}

/// One S3 client's loop until `stop`: puts, gets, deletes and one-part multipart uploads of a
/// few shared keys of one bucket, recorded as the Manta client's are.
pub async fn s3_loop(
    s3: aws_sdk_s3::Client,
    client: u32,
    rec: Arc<Recorder>,
    mut rng: Rng,
    stop: Arc<AtomicBool>,
) -> Counts {
    use aws_sdk_s3::primitives::ByteStream;
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    let mut n = Counts::default();
    while !stop.load(Ordering::Relaxed) {
        let key = format!("s/k{}", rng.below(8));
        let name = s3_name(&key);
        let start = rec.now();
        n.ops += 1;
        let ok = match rng.below(100) {
            0..35 => {
                let value = rec.value();
                let r = s3
                    .put_object()
                    .bucket(BUCKET)
                    .key(&key)
                    .body(ByteStream::from(body(&name, value).into_bytes()))
                    .send()
                    .await;
                let outcome = r.as_ref().map_or_else(s3_outcome, |_| Outcome::Ok);
                rec.record(client, Op::Put { key: name, value }, start, outcome, None);
                outcome == Outcome::Ok
            }
            35..70 => match s3_get(&s3, &key).await {
                Some(seen) => {
                    rec.record(
                        client,
                        Op::Get { key: name },
                        start,
                        Outcome::Ok,
                        Some(seen),
                    );
                    true
                }
                None => false,
            },
            70..85 => {
                let r = s3.delete_object().bucket(BUCKET).key(&key).send().await;
                let outcome = r.as_ref().map_or_else(s3_outcome, |_| Outcome::Ok);
                rec.record(client, Op::Delete { key: name }, start, outcome, None);
                outcome == Outcome::Ok
            }
            _ => {
                // A multipart upload of one part: the object appears at completion only.
                let value = rec.value();
                let bytes = body(&name, value).into_bytes();
                let done = async {
                    let up = s3
                        .create_multipart_upload()
                        .bucket(BUCKET)
                        .key(&key)
                        .send()
                        .await
                        .map_err(|e| s3_outcome(&e))?;
                    let id = up.upload_id().unwrap_or_default().to_owned();
                    let part = s3
                        .upload_part()
                        .bucket(BUCKET)
                        .key(&key)
                        .upload_id(&id)
                        .part_number(1)
                        .body(ByteStream::from(bytes))
                        .send()
                        .await
                        .map_err(|e| s3_outcome(&e))?;
                    let parts = CompletedMultipartUpload::builder()
                        .parts(
                            CompletedPart::builder()
                                .part_number(1)
                                .set_e_tag(part.e_tag().map(str::to_owned))
                                .build(),
                        )
                        .build();
                    // Only the completion writes the key: until then a failure is certain.
                    s3.complete_multipart_upload()
                        .bucket(BUCKET)
                        .key(&key)
                        .upload_id(&id)
                        .multipart_upload(parts)
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|e| match s3_outcome(&e) {
                            Outcome::Failed => Outcome::Failed,
                            _ => Outcome::Unknown,
                        })
                };
                let outcome = match done.await {
                    Ok(()) => Outcome::Ok,
                    Err(o) => o,
                };
                rec.record(client, Op::Put { key: name, value }, start, outcome, None);
                outcome == Outcome::Ok
            }
        };
        rec.tally(ok);
        if !ok {
            n.errors += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    n
}

/// The inputs of the jobs: written once before the run and never changed.
pub async fn prepare_job_inputs(
    c: &MantaClient,
    shape: &Shape,
    rec: &Recorder,
) -> Result<Vec<(String, u64)>, manta_client::Error> {
    let dir = format!("{}/jobs", shape.root);
    c.mkdirp(&dir).await?;
    let mut inputs = Vec::new();
    for i in 0..3 {
        let key = format!("{dir}/in{i}");
        let value = rec.value();
        let b = body(&key, value);
        let start = rec.now();
        c.put_bytes(&key, b.clone(), PutOptions::default()).await?;
        rec.record(
            u32::MAX,
            Op::Put {
                key: key.clone(),
                value,
            },
            start,
            Outcome::Ok,
            None,
        );
        inputs.push((key, b.len() as u64));
    }
    Ok(inputs)
}

/// A client that runs one small job after another until `stop`: `wc -c` over the inputs, summed
/// by a reduce. A job that completes records the total it computed; one that fails or does not
/// finish in two minutes counts as unavailable.
pub async fn jobs_loop(
    c: MantaClient,
    client: u32,
    inputs: Vec<(String, u64)>,
    rec: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) -> Counts {
    let mut n = Counts::default();
    let spec = serde_json::json!({
        "name": "faults",
        "phases": [
            {"type": "map", "exec": "wc -c"},
            {"type": "reduce", "exec": "awk '{s+=$1} END {print s}'"}
        ]
    });
    let paths: Vec<String> = inputs.iter().map(|(k, _)| k.clone()).collect();
    while !stop.load(Ordering::Relaxed) {
        let start = rec.now();
        let total = run_job(&c, &spec, &paths, &stop).await;
        if stop.load(Ordering::Relaxed) && total.is_none() {
            // Abandoned when the run ended: neither a success nor a failure.
            break;
        }
        n.ops += 1;
        let ok = total.is_some();
        if let Some(t) = total {
            let op = Op::Job {
                inputs: inputs.clone(),
            };
            rec.record(client, op, start, Outcome::Ok, Some(Seen::Total(t)));
        }
        rec.tally(ok);
        if !ok {
            n.errors += 1;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    n
}

async fn run_job(
    c: &MantaClient,
    spec: &serde_json::Value,
    inputs: &[String],
    stop: &AtomicBool,
) -> Option<u64> {
    let job = c.create_job(spec).await.ok()?;
    let expand: Vec<String> = inputs.iter().map(|p| expand(c, p)).collect();
    c.add_job_inputs(&job, &expand, true).await.ok()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let st = c.job_status(&job).await.ok();
        if st.as_ref().is_some_and(|s| s["state"] == "done") {
            break;
        }
        if Instant::now() > deadline || stop.load(Ordering::Relaxed) {
            let _ = c.cancel_job(&job).await;
            return None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if !c.job_errors(&job).await.ok()?.is_empty() {
        return None;
    }
    let out = c.job_outputs(&job).await.ok()?;
    let [only] = out.as_slice() else {
        return None;
    };
    let text = c.get_bytes(only).await.ok()?;
    String::from_utf8_lossy(&text).trim().parse().ok()
}

/// `~~` spelled out, as job inputs are full paths.
fn expand(c: &MantaClient, p: &str) -> String {
    match p.strip_prefix("~~") {
        Some(rest) => format!("/{}{rest}", c.user()),
        None => p.to_owned(),
    }
}

/// Reads every key the history names (S3 keys through `s3`), and lists every directory, once
/// the faults are over: the last word on what survived.
pub async fn final_reads(
    c: &MantaClient,
    s3: Option<&aws_sdk_s3::Client>,
    shape: &Shape,
    rec: &Recorder,
) {
    let mut keys = BTreeSet::new();
    for e in rec.history() {
        match e.op {
            Op::Put { key, .. } | Op::Link { key, .. } | Op::Delete { key } => {
                keys.insert(key);
            }
            _ => {}
        }
    }
    for key in keys {
        let start = rec.now();
        // A read that meets a corrupt copy fails (the front door never sends bytes whose
        // checksum is wrong); another attempt may be served by the other copy.
        let mut seen = Seen::Garbage("never read".into());
        for _ in 0..8 {
            seen = if let Some(k) = key.strip_prefix(&format!("s3://{BUCKET}/")) {
                match s3 {
                    Some(s3) => s3_get(s3, k)
                        .await
                        .unwrap_or_else(|| Seen::Garbage("unreadable after the faults".into())),
                    None => break,
                }
            } else {
                match c.get_bytes(&key).await {
                    Ok(b) => parse(&b),
                    Err(e) if is_not_found(&e) => Seen::Absent,
                    Err(e) => Seen::Garbage(format!("unreadable after the faults: {e}")),
                }
            };
            if !matches!(&seen, Seen::Garbage(g) if g.starts_with("unreadable")) {
                break;
            }
        }
        rec.record(u32::MAX, Op::Get { key }, start, Outcome::Ok, Some(seen));
    }
    for d in 0..shape.dirs {
        let dir = shape.dir(u64::from(d));
        let start = rec.now();
        if let Ok(entries) = c.ls_all(&dir).await {
            let names = entries.into_iter().map(|e| e.name).collect();
            rec.record(
                u32::MAX,
                Op::List { dir },
                start,
                Outcome::Ok,
                Some(Seen::Names(names)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_reads_back_as_itself_and_anything_else_as_garbage() {
        for v in [1, 2, 77, 123_456] {
            let b = body("~~/stor/faults/d0/k1", v);
            assert_eq!(parse(b.as_bytes()), Seen::Value(v));
            // Cut short, or with a byte changed: not that value.
            assert!(
                matches!(parse(&b.as_bytes()[..b.len() - 1]), Seen::Garbage(_)) || b.len() < 25
            );
            let mut flipped = b.clone().into_bytes();
            flipped[0] ^= 1;
            assert!(matches!(parse(&flipped), Seen::Garbage(_)));
        }
        assert!(matches!(parse(b"hello"), Seen::Garbage(_)));
        // A SnapLink's target holds its source's bytes: the value is still recognised (the
        // checker knows which key it belongs to).
        assert_eq!(parse(body("src", 9).as_bytes()), Seen::Value(9));
    }

    #[test]
    fn a_seed_replays_the_same_choices() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        let xs: Vec<u64> = (0..20).map(|_| a.below(1000)).collect();
        let ys: Vec<u64> = (0..20).map(|_| b.below(1000)).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().any(|x| *x != xs[0]));
    }
}
