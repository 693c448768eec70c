//! The jobs HTTP API, as the front door calls it once it has authenticated the caller as the
//! owner of `/:login/jobs`: create and list jobs, add inputs, end input, cancel, and the
//! `live/*` views.
//!
//! The front door keeps its own routing, authentication and authorisation; for any request
//! for which [`is_jobs_route`] is true it builds a [`JobsRequest`] and calls [`handle`].
//!
//! | request | answer |
//! |---|---|
//! | `POST /:login/jobs` (job JSON) | 201, `Location: /:login/jobs/<id>` |
//! | `GET /:login/jobs[?state=running&name=N&limit=L&marker=ID]` | JSON lines `{"name","type":"directory","mtime"}`, in job id order after `marker`, at most `limit` (1..=1024) |
//! | `POST …/<id>/live/in[?end=true]` (paths, one a line) | 204 |
//! | `POST …/<id>/live/in/end` | 202 |
//! | `POST …/<id>/live/cancel` | 202 |
//! | `GET …/<id>/live/status` | the job's status JSON |
//! | `GET …/<id>/live/in`, `live/out`, `live/fail` | paths, one a line |
//! | `GET …/<id>/live/err` | `application/x-json-stream; type=job-error` |

use std::time::Duration;

use axum::body::Body;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use manta_auth::{Account, TokenClaims, TokenKey};
use manta_types::{ErrorCode, MantaError, MantaPath};
use moray::types::{PutOptions, Sort};

use crate::records::{
    self, ERRORS, ITEMS, Item, JOBS, Job, JobError, JobStore, Stats, esc, item_state, job_state,
    now_iso, now_ms, put_op,
};
use crate::spec;

/// Largest `live/in` body.
pub const MAX_INPUT_BODY: usize = 8 * 1024 * 1024;

/// The jobs API's shared state.
#[derive(Debug, Clone)]
pub struct JobsApi {
    store: JobStore,
    /// The namespace (where a job's directory is made).
    moray: moray::ShardedClient,
    tokens: TokenKey,
    token_ttl: Duration,
    max_jobs: u32,
}

/// Most jobs one listing answers (a page; `marker` gets the next).
pub const MAX_LIST: u64 = manta_types::MAX_LIST_LIMIT;

/// Jobs one account may have running at once, unless its own limits say otherwise.
pub const DEFAULT_MAX_JOBS: u32 = 64;

/// One request, as the front door hands it over.
#[derive(Debug)]
pub struct JobsRequest {
    /// Method.
    pub method: Method,
    /// The authenticated account owning `/:login/jobs` (the caller).
    pub owner: Account,
    /// Path segments after `/:login/jobs` (already percent-decoded).
    pub segments: Vec<String>,
    /// Decoded query parameters.
    pub query: Vec<(String, String)>,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Body,
}

impl JobsRequest {
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// True when `method` on `/:login/jobs/<segments…>` is a jobs API call (rather than an ordinary
/// namespace request such as reading `/:login/jobs/<id>/out.txt`).
pub fn is_jobs_route(method: &Method, segments: &[String]) -> bool {
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    matches!(
        (method.as_str(), s.as_slice()),
        ("POST" | "GET", [])
            | (
                "POST",
                [_, "live", "in" | "cancel"] | [_, "live", "in", "end"]
            )
            | (
                "GET" | "HEAD",
                [_, "live", "status" | "in" | "out" | "err" | "fail"]
            )
    )
}

fn err(code: ErrorCode, msg: impl Into<String>) -> MantaError {
    MantaError::new(code, msg)
}

fn internal(e: impl std::fmt::Display) -> MantaError {
    tracing::warn!(error = %e, "job store failed");
    err(
        ErrorCode::ServiceUnavailable,
        "manta is unable to serve this request",
    )
}

fn respond(status: StatusCode, ctype: &str, body: impl Into<Body>) -> Response<Body> {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    if !ctype.is_empty() {
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(ctype).expect("static content types are valid"),
        );
    }
    r
}

fn lines_response(lines: Vec<String>, ctype: &str) -> Response<Body> {
    let n = lines.len();
    let mut body = String::new();
    for l in lines {
        body.push_str(&l);
        body.push('\n');
    }
    let mut r = respond(StatusCode::OK, ctype, body);
    r.headers_mut()
        .insert("result-set-size", HeaderValue::from(n as u64));
    r
}

impl JobsApi {
    /// The API over Moray (the job buckets live on the system shard) issuing tokens with
    /// `tokens` (the front doors' shared secret), valid for 7 days.
    pub fn new(moray: moray::ShardedClient, tokens: TokenKey) -> JobsApi {
        JobsApi {
            store: JobStore::new(moray.system()),
            moray: moray.clone(),
            tokens,
            token_ttl: Duration::from_secs(7 * 24 * 3600),
            max_jobs: DEFAULT_MAX_JOBS,
        }
    }

    /// Allows each account `n` jobs running at once unless its own limits say otherwise.
    #[must_use]
    pub fn with_max_jobs(mut self, n: u32) -> JobsApi {
        self.max_jobs = n;
        self
    }

    /// Up to `limit` job records matching `filter`, in `sort` order, skipping the first
    /// `offset`.
    async fn find_jobs(
        &self,
        filter: &str,
        offset: u64,
        limit: u64,
        sort: Vec<Sort>,
    ) -> Result<Vec<moray::types::ObjectRecord>, MantaError> {
        let opts = moray::types::FindOptions {
            limit: Some(limit),
            offset: (offset > 0).then_some(offset),
            sort,
            no_count: true,
        };
        self.store
            .moray()
            .find_objects(JOBS, filter, opts)
            .await
            .map_err(internal)
    }

    /// Makes the job's directory, `/:login/jobs/<id>`, so that it lists from the start (its
    /// `stor` holds the outputs; the archive lands beside it at the end).
    async fn make_job_dir(&self, owner: &Account, id: &str) -> Result<(), MantaError> {
        let path = MantaPath::parse(&format!("/{}/jobs/{id}", owner.login))
            .map_err(|e| internal(format!("job directory: {e}")))?;
        let rec = manta_types::MetadataRecord::directory(
            &path.storage_key(&owner.uuid),
            &owner.uuid,
            now_ms(),
        );
        match self
            .moray
            .put_object(
                "manta",
                &rec.key,
                rec.to_value(),
                PutOptions::must_not_exist(),
            )
            .await
        {
            Ok(_) | Err(moray::Error::EtagConflict { .. }) => Ok(()),
            Err(e) => Err(internal(e)),
        }
    }

    /// Refuses a new job of `owner` when it has its limit of jobs running already.
    ///
    /// # Errors
    /// `ThrottledError` at the limit; Moray failures.
    async fn ensure_job_room(&self, owner: &Account) -> Result<(), MantaError> {
        let most = owner.limits.jobs.unwrap_or(self.max_jobs);
        let filter = format!(
            "(&(owner={})(state={}))",
            esc(&owner.uuid),
            job_state::RUNNING
        );
        let running = self
            .find_jobs(&filter, 0, u64::from(most.max(1)), Vec::new())
            .await?;
        if running.len() >= most as usize {
            return Err(err(
                ErrorCode::ThrottledError,
                format!(
                    "{} has {} jobs running, its limit: end or cancel one first",
                    owner.login,
                    running.len()
                ),
            ));
        }
        Ok(())
    }

    /// Creates the job buckets (idempotent; call at start-up).
    ///
    /// # Errors
    /// When Moray fails.
    pub async fn setup(&self) -> Result<(), records::StoreError> {
        self.store.setup().await
    }

    /// A token acting for `owner` in `mlogin` session `id`: what the session's tools and
    /// `MANTA_URL` use, valid for a day.
    pub fn session_token(&self, owner: &Account, id: &str) -> String {
        self.tokens.issue(&TokenClaims {
            uuid: owner.uuid.clone(),
            login: owner.login.clone(),
            expires: now_ms() / 1000 + 24 * 3600,
            purpose: format!("mlogin {id}"),
        })
    }

    /// The store (for tests and tools).
    pub fn store(&self) -> &JobStore {
        &self.store
    }

    async fn job(&self, owner: &Account, id: &str) -> Result<records::Stored<Job>, MantaError> {
        let not_found = || err(ErrorCode::JobNotFound, format!("job {id} was not found"));
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(not_found());
        }
        match self.store.get::<Job>(JOBS, id).await.map_err(internal)? {
            Some(j) if j.value.owner == owner.uuid => Ok(j),
            _ => Err(not_found()),
        }
    }

    /// Applies `f` to the job with a conditional write, retrying on concurrent updates.
    async fn update_job(
        &self,
        owner: &Account,
        id: &str,
        f: impl Fn(&mut Job) -> Result<(), MantaError>,
    ) -> Result<Job, MantaError> {
        for _ in 0..20 {
            let mut j = self.job(owner, id).await?;
            f(&mut j.value)?;
            match self
                .store
                .put(JOBS, id, &j.value, PutOptions::if_match(&j.etag))
                .await
            {
                Ok(_) => return Ok(j.value),
                Err(records::StoreError::Moray(moray::Error::EtagConflict { .. })) => continue,
                Err(e) => return Err(internal(e)),
            }
        }
        Err(err(
            ErrorCode::ConcurrentRequest,
            format!("job {id} was being concurrently updated"),
        ))
    }

    async fn create(&self, req: JobsRequest) -> Result<Response<Body>, MantaError> {
        let body = axum::body::to_bytes(req.body, spec::MAX_JOB_BYTES + 1)
            .await
            .map_err(|_| {
                err(
                    ErrorCode::InvalidJob,
                    format!("job is larger than {} bytes", spec::MAX_JOB_BYTES),
                )
            })?;
        let job = spec::parse(&body).map_err(|e| err(ErrorCode::InvalidJob, e.0))?;
        self.ensure_job_room(&req.owner).await?;
        let id = uuid::Uuid::new_v4().to_string();
        let token = self.tokens.issue(&TokenClaims {
            uuid: req.owner.uuid.clone(),
            login: req.owner.login.clone(),
            expires: now_ms() / 1000 + self.token_ttl.as_secs(),
            purpose: format!("job {id}"),
        });
        let rec = Job {
            v: records::VERSION,
            job_id: id.clone(),
            name: job.name,
            owner: req.owner.uuid.clone(),
            login: req.owner.login.clone(),
            phases: job.phases,
            token,
            state: job_state::RUNNING.into(),
            cancelled: false,
            input_done: false,
            phases_input_done: 0,
            time_created: now_iso(),
            time_input_done: None,
            time_cancelled: None,
            time_done: None,
            time_archive_started: None,
            time_archive_done: None,
            stats: Stats::default(),
            task_output: req.owner.limits.task_output,
        };
        self.store
            .put(JOBS, &id, &rec, PutOptions::must_not_exist())
            .await
            .map_err(internal)?;
        self.make_job_dir(&req.owner, &id).await?;
        tracing::info!(job = %id, owner = %req.owner.login, "job created");
        let mut r = respond(StatusCode::CREATED, "", Body::empty());
        let loc = format!("/{}/jobs/{id}", req.owner.login);
        r.headers_mut().insert(
            header::LOCATION,
            HeaderValue::from_str(&manta_types::path::encode_url_path(&loc))
                .expect("encoded paths are valid header values"),
        );
        Ok(r)
    }

    async fn list(
        &self,
        owner: &Account,
        state: Option<String>,
        name: Option<String>,
        limit: u64,
        marker: Option<String>,
    ) -> Result<Response<Body>, MantaError> {
        let mut filter = format!("(owner={})", esc(&owner.uuid));
        match state.as_deref() {
            None | Some("") | Some("all") => {}
            Some("running" | "live" | "queued") => {
                filter = format!("(&{filter}(state={}))", job_state::RUNNING);
            }
            Some("done") => {
                filter = format!(
                    "(&{filter}(|(state={})(state={})))",
                    job_state::DONE,
                    job_state::ARCHIVED
                );
            }
            Some(other) => {
                return Err(err(
                    ErrorCode::InvalidArgument,
                    format!("state={other} is invalid: must be one of running, done"),
                ));
            }
        }
        // In job id order, like a directory's names, after `marker` (the last job of the page
        // before): the listing pages stably however jobs change.
        if let Some(m) = marker.as_deref().filter(|m| !m.is_empty()) {
            filter = format!("(&{filter}(_key>={})(!(_key={})))", esc(m), esc(m));
        }
        let name_filter = name.as_deref().filter(|s| !s.is_empty());
        let mut lines = Vec::new();
        let mut offset = 0;
        while (lines.len() as u64) < limit {
            let recs = self
                .find_jobs(&filter, offset, MAX_LIST, vec![Sort::asc("_key")])
                .await?;
            offset += recs.len() as u64;
            let last = (recs.len() as u64) < MAX_LIST;
            for r in recs {
                if lines.len() as u64 >= limit {
                    break;
                }
                let Ok(j) = serde_json::from_value::<Job>(r.value) else {
                    continue;
                };
                if name_filter.is_some_and(|n| n != j.name) {
                    continue;
                }
                let mtime = manta_types::time::iso8601_ms(u64::try_from(r.mtime).unwrap_or(0));
                lines.push(
                    serde_json::json!({"name": j.job_id, "type": "directory", "mtime": mtime})
                        .to_string(),
                );
            }
            if last {
                break;
            }
        }
        Ok(lines_response(
            lines,
            "application/x-json-stream; type=directory",
        ))
    }

    async fn add_inputs(&self, req: JobsRequest, id: &str) -> Result<Response<Body>, MantaError> {
        let owner = req.owner.clone();
        let end = req.param("end") == Some("true");
        let job = self.job(&owner, id).await?;
        if job.value.input_done || job.value.state == job_state::DONE {
            return Err(err(
                ErrorCode::InvalidJobState,
                format!("job {id} is no longer accepting inputs"),
            ));
        }
        let body = axum::body::to_bytes(req.body, MAX_INPUT_BODY)
            .await
            .map_err(|_| {
                err(
                    ErrorCode::InvalidArgument,
                    format!("at most {MAX_INPUT_BODY} bytes of inputs per request"),
                )
            })?;
        let text = std::str::from_utf8(&body)
            .map_err(|_| err(ErrorCode::InvalidArgument, "inputs must be UTF-8 text"))?;
        let mut items = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let p = MantaPath::parse(line).map_err(|e| {
                err(
                    ErrorCode::InvalidResource,
                    format!("input {line:?} is not an object path: {e}"),
                )
            })?;
            if records::input_record(&p, "").is_none() {
                return Err(err(
                    ErrorCode::InvalidResource,
                    format!("input {line:?} is not an object path: a bucket names no object"),
                ));
            }
            items.push(p.to_string());
        }
        let now = now_ms();
        let ops: Vec<_> = items
            .iter()
            .map(|path| {
                let it = Item {
                    v: records::VERSION,
                    job_id: id.to_owned(),
                    to_phase: 0,
                    path: path.clone(),
                    p0input: path.clone(),
                    from_task: None,
                    r_idx: None,
                    state: item_state::NEW.into(),
                    time: now,
                };
                put_op(
                    ITEMS,
                    &uuid::Uuid::new_v4().to_string(),
                    &it,
                    PutOptions::any(),
                )
            })
            .collect();
        for chunk in ops.chunks(200) {
            self.store.batch(chunk.to_vec()).await.map_err(internal)?;
        }
        if end {
            self.end_input(&owner, id).await?;
        }
        Ok(respond(StatusCode::NO_CONTENT, "", Body::empty()))
    }

    async fn end_input(&self, owner: &Account, id: &str) -> Result<Job, MantaError> {
        self.update_job(owner, id, |j| {
            if !j.input_done {
                j.input_done = true;
                j.time_input_done = Some(now_iso());
            }
            Ok(())
        })
        .await
    }

    async fn items(&self, job: &Job, to_phase: u32) -> Result<Vec<String>, MantaError> {
        items_of(&self.store, job, to_phase).await
    }

    async fn errors(&self, job: &Job) -> Result<Vec<JobError>, MantaError> {
        errors_of(&self.store, job).await
    }

    /// The views the archive also writes: inputs, outputs, errors and failed inputs.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn views(&self, job: &Job) -> Result<JobViews, MantaError> {
        Self::views_of(&self.store, job).await
    }

    /// [`views`](Self::views) over a store.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn views_of(store: &JobStore, job: &Job) -> Result<JobViews, MantaError> {
        let n = u32::try_from(job.phases.len()).unwrap_or(u32::MAX);
        let errors = errors_of(store, job).await?;
        let mut fail: Vec<String> = errors.iter().filter_map(|e| e.input.clone()).collect();
        fail.dedup();
        Ok(JobViews {
            inputs: items_of(store, job, 0).await?,
            outputs: items_of(store, job, n).await?,
            errors,
            failures: fail,
        })
    }
}

async fn items_of(store: &JobStore, job: &Job, to_phase: u32) -> Result<Vec<String>, MantaError> {
    let filter = format!("(&(jobId={})(toPhase={to_phase}))", esc(&job.job_id));
    let recs = store
        .find_all::<Item>(ITEMS, &filter)
        .await
        .map_err(internal)?;
    Ok(recs
        .into_iter()
        .filter(|r| to_phase == 0 || r.value.state == item_state::OUT)
        .map(|r| r.value.path)
        .collect())
}

async fn errors_of(store: &JobStore, job: &Job) -> Result<Vec<JobError>, MantaError> {
    let filter = format!("(jobId={})", esc(&job.job_id));
    Ok(store
        .find_all::<JobError>(ERRORS, &filter)
        .await
        .map_err(internal)?
        .into_iter()
        .map(|r| r.value)
        .collect())
}

/// What `live/in`, `live/out`, `live/err` and `live/fail` show.
#[derive(Debug, Clone)]
pub struct JobViews {
    /// Job inputs.
    pub inputs: Vec<String>,
    /// Job outputs.
    pub outputs: Vec<String>,
    /// Errors.
    pub errors: Vec<JobError>,
    /// Inputs whose processing failed.
    pub failures: Vec<String>,
}

/// Serves one jobs API request.
///
/// # Errors
/// `JobNotFound` (404), `InvalidJob` (400), `InvalidJobState` (409), `InvalidArgumentError`
/// and `InvalidResource` (400) for bad input, `MethodNotAllowed` for other routes, and
/// `ServiceUnavailable` when the job store does not answer. Nothing is written on error.
pub async fn handle(api: &JobsApi, req: JobsRequest) -> Result<Response<Body>, MantaError> {
    let segs: Vec<String> = req.segments.clone();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let method = req.method.clone();
    match (method.as_str(), s.as_slice()) {
        ("POST", []) => api.create(req).await,
        ("GET", []) => {
            let state = req.param("state").map(str::to_owned);
            let name = req.param("name").map(str::to_owned);
            let limit = manta_types::list_limit(req.param("limit"), MAX_LIST)?;
            let marker = req.param("marker").map(str::to_owned);
            api.list(&req.owner, state, name, limit, marker).await
        }
        ("POST", [id, "live", "in"]) => api.add_inputs(req, id).await,
        ("POST", [id, "live", "in", "end"]) => {
            api.end_input(&req.owner, id).await?;
            Ok(respond(StatusCode::ACCEPTED, "", Body::empty()))
        }
        ("POST", [id, "live", "cancel"]) => {
            api.update_job(&req.owner, id, |j| {
                if j.state != job_state::DONE && !j.cancelled {
                    j.cancelled = true;
                    j.time_cancelled = Some(now_iso());
                    j.input_done = true;
                    j.time_input_done.get_or_insert_with(now_iso);
                }
                Ok(())
            })
            .await?;
            tracing::info!(job = %id, "job cancelled");
            Ok(respond(StatusCode::ACCEPTED, "", Body::empty()))
        }
        ("GET" | "HEAD", [id, "live", what]) => {
            let job = api.job(&req.owner, id).await?.value;
            match *what {
                "status" => Ok(respond(
                    StatusCode::OK,
                    "application/json",
                    job.status().to_string(),
                )),
                "in" => Ok(lines_response(api.items(&job, 0).await?, "text/plain")),
                "out" => {
                    let n = u32::try_from(job.phases.len()).unwrap_or(u32::MAX);
                    Ok(lines_response(api.items(&job, n).await?, "text/plain"))
                }
                "fail" => Ok(lines_response(
                    api.views(&job).await?.failures,
                    "text/plain",
                )),
                "err" => {
                    let lines = api
                        .errors(&job)
                        .await?
                        .iter()
                        .map(|e| e.public().to_string())
                        .collect();
                    Ok(lines_response(
                        lines,
                        "application/x-json-stream; type=job-error",
                    ))
                }
                _ => Err(err(
                    ErrorCode::ResourceNotFound,
                    format!("/{}/jobs/{}/live/{what} was not found", req.owner.login, id),
                )),
            }
        }
        (m, _) => Err(err(
            ErrorCode::MethodNotAllowed,
            format!(
                "{m} is not allowed on /{}/jobs/{}",
                req.owner.login,
                segs.join("/")
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn recognises_only_the_jobs_routes() {
        assert!(is_jobs_route(&Method::POST, &segs(&[])));
        assert!(is_jobs_route(&Method::GET, &segs(&[])));
        assert!(is_jobs_route(&Method::POST, &segs(&["j", "live", "in"])));
        assert!(is_jobs_route(
            &Method::POST,
            &segs(&["j", "live", "in", "end"])
        ));
        assert!(is_jobs_route(&Method::GET, &segs(&["j", "live", "err"])));
        assert!(!is_jobs_route(&Method::GET, &segs(&["j", "out.txt"])));
        assert!(!is_jobs_route(&Method::GET, &segs(&["j", "stor", "x"])));
        assert!(!is_jobs_route(&Method::PUT, &segs(&["j", "live", "in"])));
        assert!(!is_jobs_route(&Method::DELETE, &segs(&["j"])));
    }
}
