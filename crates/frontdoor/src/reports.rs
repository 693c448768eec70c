//! Access logs and usage reports under `/:login/reports`.
//!
//! **Collecting.** Every request of the Manta API that names an account's namespace adds one
//! JSON line to that account's access log ([`AccessEntry`]: time, method, billable operation,
//! path, status, bytes in and out, latency, request id, remote address, user agent, caller),
//! once its response has been sent (or abandoned), so the bytes and the latency are what
//! the client saw. Lines wait in memory ([`AccessLog`], bounded) and are written every
//! `--access-log-flush` to the system shard's `manta_access_spool` bucket, in chunks, by
//! period and account; a front door that stops flushes what it holds.
//!
//! **Reporting.** The front door holding the repair lease ([`crate::repair`]) writes each
//! period's reports once the period is over (plus two flush intervals for the other front
//! doors' last lines): for every account that made requests, its access log
//! (`/:login/reports/access-logs/YYYY/MM/DD/HH/hHH.json`, the lines in time order) and its
//! request usage (`/:login/reports/usage/request/.../hHH.json`: requests by billable
//! operation, bytes in and out of successful `GET`s and `PUT`s); and for every account that
//! stores anything, its storage usage (`/:login/reports/usage/storage/.../hHH.json`:
//! directories, keys, objects and bytes under each of `stor`, `public`, `jobs`, `reports`,
//! `uploads` and the S3 `buckets`, counted from every shard's records). Each category's
//! `latest` is a SnapLink to its newest report. Numbers are strings, as the original wrote
//! them. The last period reported is kept in `manta_repair`, so a new lease holder goes on
//! from there; reports are not made for periods before the first a region saw.
//!
//! A period is an hour unless `--report-period` says otherwise (tests); a shorter period's
//! objects are named `hHHMMSS.json` after the period's start, so periods within one hour do
//! not overwrite each other.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use manta_auth::{Account, AccountStore as _};
use manta_types::record::EntryKind;
use manta_types::{ErrorCode, MantaPath, MetadataRecord};
use manta_util::http::{PeerAddr, RouteName};
use moray::MorayClient;
use moray::types::PutOptions;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::headers::BodyLength;
use crate::data::{ObjectMeta, Place};
use crate::error::{ApiResult, err, from_moray};
use crate::state::Frontdoor;

/// The Moray bucket (system shard) where access log lines wait to be reported.
pub const SPOOL_BUCKET: &str = moray::schema::ACCESS_SPOOL;

/// The key in `manta_repair` of the last period reported.
const PROGRESS_KEY: &str = "reports";

/// Most bytes of lines one spool record holds.
const CHUNK_BYTES: usize = 256 * 1024;

/// Bytes of lines held in memory that wake the flusher early.
const FLUSH_AT: usize = 1024 * 1024;

/// Bytes of lines held in memory past which new lines are dropped (and counted), while the
/// metadata tier cannot take them.
const MAX_HELD: usize = 64 * 1024 * 1024;

/// Periods reported at most per call of [`report_due`] (catching up after an outage).
const PERIODS_PER_CALL: u64 = 4;

/// How reports run.
#[derive(Debug, Clone)]
pub struct ReportConfig {
    /// Whether access lines are collected and reports written.
    pub enabled: bool,
    /// Length of a report period (an hour).
    pub period: Duration,
    /// How often collected lines are written to the spool.
    pub flush: Duration,
}

impl Default for ReportConfig {
    fn default() -> Self {
        ReportConfig {
            enabled: true,
            period: Duration::from_secs(3600),
            flush: Duration::from_secs(60),
        }
    }
}

/// The account whose namespace a request named, and who made it: set on the response by the
/// API, read by [`record`].
#[derive(Debug, Clone)]
pub struct AccessOwner {
    /// The owner's uuid.
    pub owner: String,
    /// The caller's login (none for anonymous requests).
    pub caller: Option<String>,
}

/// One line of an access log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessEntry {
    /// When the request arrived (ISO 8601, ms). First, so lines sort by time as text.
    pub time: String,
    /// The HTTP method.
    pub method: String,
    /// What the request is billed as: the method, or `LIST` for a directory read.
    #[serde(rename = "billable_operation")]
    pub billable_operation: String,
    /// The request path, as sent.
    pub path: String,
    /// The response status.
    pub status: u16,
    /// Body bytes received.
    pub bytes_in: u64,
    /// Body bytes sent.
    pub bytes_out: u64,
    /// Milliseconds from arrival to the last byte sent.
    pub latency: u64,
    /// The request id.
    pub request_id: String,
    /// The client's address.
    pub remote_address: String,
    /// The client's `User-Agent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The caller's login (absent for anonymous requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
}

/// Lines collected and not yet in the spool, by (period start, owner).
#[derive(Debug, Default)]
pub struct AccessLog {
    held: Mutex<Held>,
    wake: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Held {
    lines: BTreeMap<(u64, String), String>,
    bytes: usize,
    dropped: u64,
}

impl AccessLog {
    fn push(&self, period: u64, owner: &str, line: &str) -> bool {
        let mut h = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if h.bytes + line.len() > MAX_HELD {
            h.dropped += 1;
            return false;
        }
        h.bytes += line.len() + 1;
        let buf = h.lines.entry((period, owner.to_owned())).or_default();
        buf.push_str(line);
        buf.push('\n');
        if h.bytes >= FLUSH_AT {
            self.wake.notify_one();
        }
        true
    }

    fn take(&self) -> BTreeMap<(u64, String), String> {
        let mut h = self.held.lock().unwrap_or_else(|p| p.into_inner());
        h.bytes = 0;
        std::mem::take(&mut h.lines)
    }

    /// Puts back lines a flush could not write (they go first, so order is kept).
    fn put_back(&self, back: BTreeMap<(u64, String), String>) {
        let mut h = self.held.lock().unwrap_or_else(|p| p.into_inner());
        for (k, mut v) in back {
            if h.bytes + v.len() > MAX_HELD {
                h.dropped += v.lines().count() as u64;
                continue;
            }
            h.bytes += v.len();
            if let Some(newer) = h.lines.remove(&k) {
                v.push_str(&newer);
            }
            h.lines.insert(k, v);
        }
    }
}

/// The start of the period holding `ms`.
pub fn period_of(ms: u64, period: Duration) -> u64 {
    let p = period.as_millis().max(1) as u64;
    ms - ms % p
}

/// The middleware that adds each request of an account's namespace to its access log, once
/// the response body has been sent or dropped.
pub async fn record(State(fd): State<Arc<Frontdoor>>, req: Request, next: Next) -> Response {
    if !fd.cfg.reports.enabled {
        return next.run(req).await;
    }
    let start = Instant::now();
    let arrived = manta_types::time::now_ms();
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let remote = req
        .extensions()
        .get::<PeerAddr>()
        .map(|p| p.0.ip().to_string())
        .unwrap_or_default();
    let user_agent = manta_util::http::header_str(req.headers(), "user-agent").map(str::to_owned);
    let bytes_in = Arc::new(AtomicU64::new(0));
    let counted = bytes_in.clone();
    let req = req.map(|b| Body::new(Counting::new(b, counted, None)));
    let resp = next.run(req).await;
    let Some(who) = resp.extensions().get::<AccessOwner>().cloned() else {
        return resp;
    };
    let listing = resp
        .extensions()
        .get::<RouteName>()
        .is_some_and(|r| matches!(r.0, "GetDirectory" | "GetRootDirectory"));
    let billable = if listing && method == "GET" {
        "LIST".to_owned()
    } else {
        method.clone()
    };
    let entry = AccessEntry {
        time: manta_types::time::iso8601_ms(arrived),
        method,
        billable_operation: billable,
        path,
        status: resp.status().as_u16(),
        bytes_in: 0,
        bytes_out: 0,
        latency: 0,
        request_id: manta_util::http::current_request_id().unwrap_or_default(),
        remote_address: remote,
        user_agent,
        caller: who.caller,
    };
    let done = Done {
        fd: fd.clone(),
        owner: who.owner,
        period: period_of(arrived, fd.cfg.reports.period),
        start,
        bytes_in,
        entry,
    };
    resp.map(|b| Body::new(Counting::new(b, Arc::new(AtomicU64::new(0)), Some(done))))
}

/// What is left to do when a response body ends: count it into its line and hold the line.
struct Done {
    fd: Arc<Frontdoor>,
    owner: String,
    period: u64,
    start: Instant,
    bytes_in: Arc<AtomicU64>,
    entry: AccessEntry,
}

impl Done {
    fn finish(mut self, bytes_out: u64) {
        self.entry.bytes_in = self.bytes_in.load(Ordering::Relaxed);
        self.entry.bytes_out = bytes_out;
        self.entry.latency = self.start.elapsed().as_millis() as u64;
        let Ok(line) = serde_json::to_string(&self.entry) else {
            return;
        };
        if !self.fd.access.push(self.period, &self.owner, &line) {
            self.fd.metrics.inc(
                "frontdoor_access_log_dropped_total",
                "Access log lines dropped while the metadata tier could not take them.",
                &[],
            );
        }
    }
}

/// A body that counts the bytes that pass, and (for responses) finishes its access line when
/// it ends or is dropped.
struct Counting {
    inner: Body,
    count: Arc<AtomicU64>,
    done: Option<Done>,
}

impl Counting {
    fn new(inner: Body, count: Arc<AtomicU64>, done: Option<Done>) -> Counting {
        Counting { inner, count, done }
    }

    fn finish(&mut self) {
        if let Some(d) = self.done.take() {
            d.finish(self.count.load(Ordering::Relaxed));
        }
    }
}

impl http_body::Body for Counting {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    self.count.fetch_add(d.len() as u64, Ordering::Relaxed);
                }
            }
            Poll::Ready(None | Some(Err(_))) => self.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Writes held lines to the spool every `flush` (or sooner when many are held) until
/// `shutdown`, then once more.
pub async fn run_flusher(fd: Arc<Frontdoor>, shutdown: CancellationToken) {
    let instance = uuid::Uuid::new_v4().to_string();
    let mut seq = 0u64;
    loop {
        let stop = tokio::select! {
            () = tokio::time::sleep(fd.cfg.reports.flush) => false,
            () = fd.access.wake.notified() => false,
            () = shutdown.cancelled() => true,
        };
        flush(&fd, &instance, &mut seq).await;
        if stop {
            break;
        }
    }
}

async fn flush(fd: &Frontdoor, instance: &str, seq: &mut u64) {
    let held = fd.access.take();
    if held.is_empty() {
        return;
    }
    let system = fd.moray.system();
    let mut failed = BTreeMap::new();
    for ((period, owner), lines) in held {
        let mut left = lines.as_str();
        while !left.is_empty() {
            // Whole lines, at most CHUNK_BYTES (or one longer line).
            let cut = left[..left.len().min(CHUNK_BYTES)]
                .rfind('\n')
                .map_or_else(|| left.find('\n').map_or(left.len(), |i| i + 1), |i| i + 1);
            let (chunk, rest) = left.split_at(cut);
            *seq += 1;
            let key = format!("{period}/{owner}/{instance}/{seq:012}");
            let value = json!({ "period": period, "owner": owner, "lines": chunk });
            if let Err(e) = system
                .put_object(SPOOL_BUCKET, &key, value, PutOptions::any())
                .await
            {
                warn!(error = %e, "cannot write access log lines; keeping them");
                failed.insert((period, owner.clone()), left.to_owned());
                break;
            }
            left = rest;
        }
    }
    if !failed.is_empty() {
        fd.access.put_back(failed);
    }
}

/// Request counts and bytes of one account over one period, from its access lines.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RequestUsage {
    /// Requests by billable operation.
    pub by_type: BTreeMap<String, u64>,
    /// Body bytes received by successful `PUT`s.
    pub bytes_in: u64,
    /// Body bytes sent by successful `GET`s.
    pub bytes_out: u64,
}

impl RequestUsage {
    /// Counts `e`.
    pub fn add(&mut self, e: &AccessEntry) {
        *self
            .by_type
            .entry(e.billable_operation.clone())
            .or_default() += 1;
        let ok = (200..300).contains(&e.status);
        match e.billable_operation.as_str() {
            "PUT" if ok => self.bytes_in += e.bytes_in,
            "GET" if ok => self.bytes_out += e.bytes_out,
            _ => {}
        }
    }

    /// The report's JSON (numbers as strings, as the original wrote them).
    pub fn to_json(&self, date: &str) -> Value {
        let mut types = serde_json::Map::new();
        for t in ["DELETE", "GET", "HEAD", "LIST", "OPTIONS", "POST", "PUT"] {
            let n = self.by_type.get(t).copied().unwrap_or(0);
            types.insert(t.into(), Value::String(n.to_string()));
        }
        json!({
            "requests": {
                "type": types,
                "bandwidth": {
                    "in": self.bytes_in.to_string(),
                    "out": self.bytes_out.to_string(),
                },
            },
            "date": date,
        })
    }
}

/// What one account stores under one area.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AreaUsage {
    /// Directory records.
    pub directories: u64,
    /// Object records (SnapLinks included).
    pub keys: u64,
    /// Distinct objects.
    pub objects: u64,
    /// Bytes of the distinct objects.
    pub bytes: u64,
}

/// What accounts store, by owner and area, as a scan of records finds it.
#[derive(Debug, Default)]
pub struct StorageUsage {
    areas: HashMap<String, BTreeMap<String, AreaUsage>>,
    /// Objects already counted, by owner: a SnapLink's object counts once, under the first
    /// area of `stor`, `public`, `jobs`, `reports`, `uploads`, `buckets` it is found in.
    seen: HashMap<String, HashMap<String, (u8, u64)>>,
}

/// The areas of a storage report, in the order an object shared between them is counted.
const AREAS: &[&str] = &["stor", "public", "jobs", "reports", "uploads", "buckets"];

impl StorageUsage {
    /// Counts one record of `owner` in `area`.
    pub fn add(&mut self, owner: &str, area: &str, rec: &MetadataRecord) {
        let a = self
            .areas
            .entry(owner.to_owned())
            .or_default()
            .entry(area.to_owned())
            .or_default();
        match &rec.kind {
            EntryKind::Directory(_) => a.directories += 1,
            EntryKind::Object(o) => {
                a.keys += 1;
                let rank = AREAS.iter().position(|x| *x == area).unwrap_or(AREAS.len()) as u8;
                let seen = self.seen.entry(owner.to_owned()).or_default();
                match seen.get(&o.object_id.to_string()) {
                    Some((r, _)) if *r <= rank => {}
                    _ => {
                        seen.insert(o.object_id.to_string(), (rank, o.content_length));
                    }
                }
            }
        }
    }

    /// Every owner's areas, objects and bytes counted once.
    pub fn finish(mut self) -> HashMap<String, BTreeMap<String, AreaUsage>> {
        for (owner, objects) in self.seen {
            let areas = self.areas.entry(owner).or_default();
            for (rank, bytes) in objects.into_values() {
                let name = AREAS.get(rank as usize).copied().unwrap_or("other");
                let a = areas.entry(name.to_owned()).or_default();
                a.objects += 1;
                a.bytes += bytes;
            }
        }
        self.areas
    }

    /// The report's JSON.
    pub fn to_json(areas: &BTreeMap<String, AreaUsage>, date: &str) -> Value {
        let mut storage = serde_json::Map::new();
        for name in AREAS {
            let a = areas.get(*name).cloned().unwrap_or_default();
            storage.insert(
                (*name).into(),
                json!({
                    "directories": a.directories.to_string(),
                    "keys": a.keys.to_string(),
                    "objects": a.objects.to_string(),
                    "bytes": a.bytes.to_string(),
                }),
            );
        }
        json!({ "storage": storage, "date": date })
    }
}

/// The name of the report object of the period starting at `start`: `YYYY/MM/DD/HH/hHH.json`
/// for hour-long periods, `.../hHHMMSS.json` for shorter ones.
pub fn report_name(start: u64, period: Duration) -> String {
    let iso = manta_types::time::iso8601_ms(start);
    // 2026-12-07T17:00:00.000Z
    let (y, mo, d, h, mi, s) = (
        &iso[0..4],
        &iso[5..7],
        &iso[8..10],
        &iso[11..13],
        &iso[14..16],
        &iso[17..19],
    );
    if period >= Duration::from_secs(3600) {
        format!("{y}/{mo}/{d}/{h}/h{h}.json")
    } else {
        format!("{y}/{mo}/{d}/{h}/h{h}{mi}{s}.json")
    }
}

/// Writes the reports of every period that is over and not yet reported. Called by the front
/// door holding the repair lease.
///
/// # Errors
/// When the metadata tier fails (the period is tried again next time).
pub async fn report_due(fd: &Arc<Frontdoor>) -> ApiResult<()> {
    let cfg = &fd.cfg.reports;
    if !cfg.enabled {
        return Ok(());
    }
    let system = fd.moray.system();
    let p = cfg.period.as_millis().max(1) as u64;
    let grace = 2 * cfg.flush.as_millis() as u64 + 2_000;
    let now = manta_types::time::now_ms();
    let last = match system
        .get_object(manta_types::repair::REPAIR_BUCKET, PROGRESS_KEY)
        .await
    {
        Ok(r) => r.value.get("lastPeriod").and_then(Value::as_u64),
        Err(moray::Error::ObjectNotFound { .. }) => None,
        Err(e) => return Err(from_moray(e, "report progress")),
    };
    // A region's first reports are for the period it is in.
    let mut next = last.map_or_else(|| period_of(now, cfg.period), |l| l + p);
    for _ in 0..PERIODS_PER_CALL {
        if next + p + grace > now {
            break;
        }
        report_period(fd, next).await?;
        save_progress(&system, next).await?;
        next += p;
    }
    if last.is_none() && next == period_of(now, cfg.period) {
        // Remember where reports begin, so that a period missed later is caught up.
        save_progress(&system, next - p).await?;
    }
    Ok(())
}

/// Records that the period starting at `last` is reported.
async fn save_progress(system: &MorayClient, last: u64) -> ApiResult<()> {
    let progress = json!({ "lastPeriod": last, "at": manta_types::time::now_ms() });
    system
        .put_object(
            manta_types::repair::REPAIR_BUCKET,
            PROGRESS_KEY,
            progress,
            PutOptions::any(),
        )
        .await
        .map(|_| ())
        .map_err(|e| from_moray(e, "report progress"))
}

/// Records read per page while reports scan.
const SCAN_PAGE: u64 = 1_000;

async fn report_period(fd: &Arc<Frontdoor>, start: u64) -> ApiResult<()> {
    let period = fd.cfg.reports.period;
    let name = report_name(start, period);
    let date = manta_types::time::iso8601_ms(start);
    let system = fd.moray.system();
    // Access logs and request usage, from the spool.
    let mut by_owner: HashMap<String, Vec<String>> = HashMap::new();
    let filter = format!("(period={start})");
    system
        .scan(SPOOL_BUCKET, &filter, SCAN_PAGE, |r| {
            let owner = r.value.get("owner").and_then(Value::as_str);
            let lines = r.value.get("lines").and_then(Value::as_str);
            if let (Some(o), Some(l)) = (owner, lines) {
                by_owner
                    .entry(o.to_owned())
                    .or_default()
                    .extend(l.lines().map(str::to_owned));
            }
        })
        .await
        .map_err(|e| from_moray(e, "the access log spool"))?;
    let mut accounts = 0;
    for (owner, mut lines) in by_owner {
        let Some(account) = account(fd, &owner).await? else {
            continue;
        };
        lines.sort();
        let mut usage = RequestUsage::default();
        for l in &lines {
            if let Ok(e) = serde_json::from_str::<AccessEntry>(l) {
                usage.add(&e);
            }
        }
        let mut log = lines.join("\n");
        log.push('\n');
        publish(fd, &account, "access-logs", &name, log.into_bytes()).await?;
        let request = usage.to_json(&date).to_string() + "\n";
        publish(fd, &account, "usage/request", &name, request.into_bytes()).await?;
        accounts += 1;
    }
    // Storage usage, from every shard's records.
    let mut storage = StorageUsage::default();
    for shard in fd.moray.shards() {
        for bucket in manta_types::s3::OBJECT_RECORD_BUCKETS {
            let manta = bucket == "manta";
            shard
                .scan(bucket, "(type=*)", SCAN_PAGE, |r| {
                    let Ok(rec) = MetadataRecord::from_value(r.value) else {
                        return;
                    };
                    let area = if manta {
                        rec.key.split('/').nth(2).unwrap_or("").to_owned()
                    } else {
                        "buckets".to_owned()
                    };
                    storage.add(&rec.owner, &area, &rec);
                })
                .await
                .map_err(|e| from_moray(e, bucket))?;
        }
    }
    for (owner, areas) in storage.finish() {
        let Some(account) = account(fd, &owner).await? else {
            continue;
        };
        let body = StorageUsage::to_json(&areas, &date).to_string() + "\n";
        publish(fd, &account, "usage/storage", &name, body.into_bytes()).await?;
    }
    if let Err(e) = system
        .delete_many(SPOOL_BUCKET, &format!("(period={start})"), None)
        .await
    {
        warn!(error = %e, period = start, "cannot clear reported access log lines");
    }
    info!(period = %date, accounts, "reports written");
    Ok(())
}

async fn account(fd: &Frontdoor, uuid: &str) -> ApiResult<Option<Account>> {
    fd.accounts
        .by_uuid(uuid)
        .await
        .map_err(crate::error::from_store)
}

/// Writes `body` as `/:login/reports/<category>/<name>` (making its directories) and points
/// `/:login/reports/<category>/latest` at it.
async fn publish(
    fd: &Arc<Frontdoor>,
    account: &Account,
    category: &str,
    name: &str,
    body: Vec<u8>,
) -> ApiResult<()> {
    let path = MantaPath::parse(&format!("/{}/reports/{category}/{name}", account.login))
        .map_err(|e| err(ErrorCode::InternalError, e.to_string()))?;
    let rec = put_object(fd, account, &path, body).await?;
    let latest = MantaPath::parse(&format!("/{}/reports/{category}/latest", account.login))
        .map_err(|e| err(ErrorCode::InternalError, e.to_string()))?;
    let mut link = Place::of(&latest, &account.uuid).relink(rec.clone(), &account.uuid);
    if let EntryKind::Object(o) = &mut link.kind {
        o.created_from = Some(rec.key.clone());
    }
    fd.moray
        .put_object("manta", &link.key, link.to_value(), PutOptions::any())
        .await
        .map_err(|e| from_moray(e, &latest.to_string()))?;
    Ok(())
}

/// Makes every directory above `path` below its area root that is missing.
async fn make_parents(fd: &Frontdoor, path: &MantaPath, owner: &str) -> ApiResult<()> {
    let mut dirs = Vec::new();
    let mut p = path.parent();
    while let Some(d) = p {
        if d.is_area_root() || d.is_account_root() {
            break;
        }
        p = d.parent();
        dirs.push(d);
    }
    let mut known: HashSet<String> = HashSet::new();
    for d in dirs.into_iter().rev() {
        let key = d.storage_key(owner);
        if known.contains(&key) || fd.dirs.get(&key, fd.cfg.account_cache_ttl).is_some() {
            continue;
        }
        crate::api::dirs::make_system_dir(fd, &key, owner).await?;
        known.insert(key);
    }
    Ok(())
}

/// Stores `body` as the object at `path` of `account` (replacing what is there).
async fn put_object(
    fd: &Arc<Frontdoor>,
    account: &Account,
    path: &MantaPath,
    body: Vec<u8>,
) -> ApiResult<MetadataRecord> {
    make_parents(fd, path, &account.uuid).await?;
    let len = body.len() as u64;
    let stream = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(body))]);
    let exact = BodyLength {
        exact: Some(len),
        max: None,
    };
    let upload = crate::data::store(
        fd,
        &account.uuid,
        fd.cfg.default_copies,
        exact,
        None,
        stream,
    )
    .await?;
    let meta = ObjectMeta {
        etag: upload.object_id().to_string(),
        content_type: "application/x-json-stream".into(),
        headers: BTreeMap::new(),
    };
    let rec = upload.record(Place::of(path, &account.uuid), meta);
    upload
        .commit(async {
            fd.moray
                .put_object("manta", &rec.key, rec.to_value(), PutOptions::any())
                .await
                .map(|_| ())
                .map_err(|e| from_moray(e, &path.to_string()))
        })
        .await?;
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(op: &str, status: u16, bytes_in: u64, bytes_out: u64) -> AccessEntry {
        AccessEntry {
            time: "2026-12-07T17:00:00.000Z".into(),
            method: op.into(),
            billable_operation: op.into(),
            path: "/jill/stor/x".into(),
            status,
            bytes_in,
            bytes_out,
            latency: 1,
            request_id: "r".into(),
            remote_address: "127.0.0.1".into(),
            user_agent: None,
            caller: Some("jill".into()),
        }
    }

    #[test]
    fn request_usage_counts_operations_and_the_bytes_of_successful_reads_and_writes() {
        let mut u = RequestUsage::default();
        u.add(&entry("PUT", 204, 100, 0));
        u.add(&entry("PUT", 400, 50, 0));
        u.add(&entry("GET", 200, 0, 70));
        u.add(&entry("GET", 404, 0, 30));
        u.add(&entry("LIST", 200, 0, 500));
        let j = u.to_json("d");
        assert_eq!(j["requests"]["type"]["PUT"], "2");
        assert_eq!(j["requests"]["type"]["GET"], "2");
        assert_eq!(j["requests"]["type"]["LIST"], "1");
        assert_eq!(j["requests"]["type"]["DELETE"], "0");
        assert_eq!(j["requests"]["bandwidth"]["in"], "100");
        assert_eq!(j["requests"]["bandwidth"]["out"], "70");
    }

    #[test]
    fn lines_sort_by_time_as_text() {
        let mut a = entry("GET", 200, 0, 1);
        a.time = "2026-12-07T17:00:01.000Z".into();
        let b = entry("GET", 200, 0, 1);
        let (a, b) = (
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&b).unwrap(),
        );
        assert!(b < a, "{b} sorts before {a}");
        assert!(a.starts_with("{\"time\":"));
    }

    #[test]
    fn report_names_follow_the_period() {
        let t = manta_types::time::parse_iso8601_ms("2026-12-07T17:05:10.000Z").unwrap();
        assert_eq!(
            report_name(t, Duration::from_secs(3600)),
            "2026/12/07/17/h17.json"
        );
        assert_eq!(
            report_name(t, Duration::from_secs(10)),
            "2026/12/07/17/h170510.json"
        );
        assert_eq!(period_of(t, Duration::from_secs(3600)) % 3_600_000, 0);
    }

    #[test]
    fn a_snaplinked_object_counts_once_under_its_first_area() {
        let mut s = StorageUsage::default();
        let obj = |key: &str, id: manta_types::ObjectId, len: u64| {
            let mut r = MetadataRecord::directory(key, "o", 0);
            r.kind = EntryKind::Object(manta_types::ObjectInfo {
                content_length: len,
                content_md5: String::new(),
                content_type: String::new(),
                content_disposition: None,
                etag: String::new(),
                object_id: id,
                sharks: Vec::new(),
                created_from: None,
                sha256: None,
                crc32c: None,
                parts: None,
            });
            r
        };
        let id = manta_types::ObjectId::random();
        s.add("o", "public", &obj("/o/public/a", id, 10));
        s.add("o", "stor", &obj("/o/stor/b", id, 10));
        s.add(
            "o",
            "stor",
            &obj("/o/stor/c", manta_types::ObjectId::random(), 5),
        );
        s.add("o", "stor", &MetadataRecord::directory("/o/stor/d", "o", 0));
        let u = s.finish();
        let stor = &u["o"]["stor"];
        assert_eq!(
            (stor.keys, stor.objects, stor.bytes, stor.directories),
            (2, 2, 15, 1)
        );
        let public = &u["o"]["public"];
        assert_eq!((public.keys, public.objects, public.bytes), (1, 0, 0));
    }

    #[test]
    fn held_lines_are_bounded_and_put_back_in_order() {
        let log = AccessLog::default();
        assert!(log.push(0, "o", "a"));
        let taken = log.take();
        assert!(log.push(0, "o", "b"));
        log.put_back(taken);
        assert_eq!(log.take()[&(0, "o".to_owned())], "a\nb\n");
        assert!(log.push(0, "o", "c"));
        let big = "x".repeat(MAX_HELD);
        assert!(!log.push(0, "o", &big), "past the bound");
        assert_eq!(log.take()[&(0, "o".to_owned())], "c\n");
    }
}
