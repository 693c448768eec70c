//! Multipart uploads of the Manta API (`/:login/uploads`, the `mmpu` commands).
//!
//! - `POST /:login/uploads` `{"objectPath", "headers"}` creates an upload: it chooses the
//!   storage nodes every part will live on (as a `PUT` of the object would, over failure
//!   domains), and answers `201 {"id", "partsDirectory"}`. The parts directory,
//!   `/:login/uploads/<prefix>/<id>`, is a directory of the namespace (listed by `mls`, `mmpu
//!   list` and `mmpu parts`); its record carries what the upload was created with
//!   ([`UploadInfo`]).
//! - `PUT …/<id>/<n>` (0 ≤ n ≤ 9999) streams part `n` to those nodes; it is an object in the
//!   parts directory, read back like any other, with its object id as its etag.
//! - `POST …/<id>/commit` `{"parts": [etag of part 0, of part 1, …]}` checks every named part
//!   (it exists with that etag; all but the last hold at least 5 MiB; the sizes add up to the
//!   `content-length` given at creation, if any), asks each node to join the parts into the new
//!   object's file (the bytes do not cross the network again), checks the joined MD5 against
//!   a `content-md5` given at creation, and then writes the object's record and ends the
//!   upload in **one Moray batch**. Committing again with the same parts answers as the first
//!   commit did; with other parts, or after an abort, `InvalidMultipartUploadState`.
//! - `POST …/<id>/abort` ends an upload without an object.
//! - `GET …/<id>/state` answers the upload as JSON (`mmpu get`).
//! - `/:login/uploads/<id>[/…]` redirects (301) to the parts directory: clients locate an
//!   upload from its id alone.
//!
//! The upload's state lives in one record of the `manta_uploads` bucket, keyed
//! `<id>:<object key>` and hashed by the object's directory, so it lands on the shard of the
//! object's record and a commit is one batch there. The record says whether (and how) the upload
//! ended; every ending is conditional on the etag it was read at, so an upload ends once. Ending
//! removes the part records (their bytes go to garbage collection through the delete log); a
//! part that lands after its upload ended takes itself back.
//!
//! Uploads older than [`crate::config::Config::upload_max_age`] are swept by the front door
//! holding the repair lease ([`sweep`]): unfinished ones are aborted, and the parts
//! directory and state record of every old upload are removed.

use std::collections::HashSet;

use axum::body::Body;
use axum::response::Response;
use base64::Engine as _;
use futures_util::StreamExt as _;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use manta_auth::{Caller, Via};
use manta_types::record::{DirectoryInfo, EntryKind};
use manta_types::uploads::{self as paths, Action, Target};
use manta_types::{Area, ErrorCode, MantaError, MantaPath, MetadataRecord, ObjectId, SharkRef};
use md5::Digest as _;
use moray::filter::Filter;
use moray::types::{BatchOp, DelOptions, PutOptions};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::objects::{Placement, WriteTarget, put_object_at, settle_in_parent, written};
use super::{Ctx, Entry, headers, load, no_content};
use crate::data::{self, ObjectMeta, Stored, Uncommitted};
use crate::error::{ApiResult, err, from_moray};
use crate::state::Frontdoor;

/// The Moray bucket of upload states.
pub const UPLOADS_BUCKET: &str = moray::schema::UPLOADS;

/// Smallest part but the last, as the original.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;

/// Most parts one commit may name.
pub const MAX_PARTS: usize = paths::MAX_PART_NUMBER as usize + 1;

/// Free space the nodes of an upload of unknown size must have (its size is not known yet).
const PLACEMENT_ESTIMATE: u64 = 64 * 1024 * 1024;

/// Largest create and commit bodies (as the original).
const MAX_CREATE_BODY: usize = 100_000;
const MAX_COMMIT_BODY: usize = 500_000;

/// Part records read at once while a commit checks them.
const PART_READS: usize = 10;

/// What an upload was created with: kept in its parts directory's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadInfo {
    /// The upload id.
    pub id: String,
    /// Where the object goes (`/:login/stor/...`).
    pub object_path: String,
    /// The object's Moray key (`/<owner uuid>/stor/...`).
    pub object_path_key: String,
    /// The headers given at creation, names in lower case: the object's own (`content-type`,
    /// `m-*`, ...) and the checks of the commit (`content-length`, `content-md5`).
    pub headers: serde_json::Map<String, Value>,
    /// The nodes every part is stored on.
    pub sharks: Vec<SharkRef>,
    /// When the upload was created (epoch ms).
    pub creation_time_ms: u64,
}

/// How an upload ended.
pub const FINALIZED_COMMIT: &str = "commit";
/// See [`FINALIZED_COMMIT`].
pub const FINALIZED_ABORT: &str = "abort";

/// The state record of an upload (`manta_uploads`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadState {
    /// The upload id.
    pub upload_id: String,
    /// The owner's account uuid.
    pub owner: String,
    /// The object's Moray key.
    pub object_path_key: String,
    /// The parts directory's Moray key.
    pub upload_path_key: String,
    /// When the upload was created (epoch ms).
    pub creation_time_ms: u64,
    /// `commit` or `abort` once the upload ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finalizing_type: Option<String>,
    /// Base64 MD5 of the committed parts' etags, in order (what makes a commit idempotent).
    #[serde(default, rename = "partsMD5", skip_serializing_if = "Option::is_none")]
    pub parts_md5: Option<String>,
    /// The committed object's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_id: Option<String>,
    /// When the upload ended (epoch ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finalized_ms: Option<u64>,
}

impl UploadState {
    /// The key of the state record.
    pub fn key(&self) -> String {
        state_key(&self.upload_id, &self.object_path_key)
    }
}

/// `<id>:<object key>`: the key of an upload's state record (hashed by the object's
/// directory, so it lives on the shard of the object's record).
pub fn state_key(id: &str, object_key: &str) -> String {
    format!("{id}:{object_key}")
}

/// An upload read back: its parts directory, what it was created with, and its state.
#[derive(Debug)]
struct Loaded {
    dir: Entry,
    info: UploadInfo,
    state: UploadState,
    state_etag: String,
}

/// Whether the uploads code answers `method` on `target` (the rest, reads of directories
/// and parts, are the namespace's ordinary reads).
pub fn takes(method: &Method, target: &Target) -> bool {
    let read = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    !(read
        && matches!(
            target,
            Target::Root | Target::Upload { .. } | Target::Part { .. } | Target::Other
        ))
}

/// Answers a request the uploads code [`takes`].
///
/// # Errors
/// The errors of each operation; `MethodNotAllowed` for what the uploads tree does not take.
pub async fn handle(
    ctx: &Ctx,
    target: Target,
    body: Body,
    route: &mut &'static str,
) -> ApiResult<Response> {
    match (target, &ctx.method) {
        (Target::Root, &Method::POST) => {
            *route = "CreateUpload";
            create(ctx, body).await
        }
        (Target::Short { id, rest }, _) => {
            *route = "RedirectUpload";
            let mut to = paths::parts_directory(ctx.path.login(), &id);
            if let Some(r) = rest {
                to.push('/');
                to.push_str(&r);
            }
            let mut resp = no_content();
            *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
            let loc = MantaPath::parse(&to).map_or(to, |p| p.to_url_path());
            resp.headers_mut().insert(
                header::LOCATION,
                HeaderValue::from_str(&loc)
                    .map_err(|e| err(ErrorCode::InternalError, e.to_string()))?,
            );
            Ok(resp)
        }
        (Target::Part { id, .. }, &Method::PUT) => {
            *route = "UploadPart";
            upload_part(ctx, &id, body).await
        }
        (
            Target::Action {
                id,
                action: Action::State,
            },
            &Method::GET | &Method::HEAD,
        ) => {
            *route = "GetUpload";
            get_state(ctx, &id).await
        }
        (
            Target::Action {
                id,
                action: Action::Commit,
            },
            &Method::POST,
        ) => {
            *route = "CommitUpload";
            commit(ctx, &id, body).await
        }
        (
            Target::Action {
                id,
                action: Action::Abort,
            },
            &Method::POST,
        ) => {
            *route = "AbortUpload";
            abort(ctx, &id).await
        }
        (_, m) => Err(err(
            ErrorCode::MethodNotAllowed,
            format!(
                "{m} is not allowed on {}: the uploads tree changes only through its uploads \
                 (create, upload parts, commit, abort)",
                ctx.path
            ),
        )),
    }
}

fn invalid(id: &str, msg: impl std::fmt::Display) -> MantaError {
    err(
        ErrorCode::MultipartUploadInvalidArgument,
        format!("upload {id}: {msg}"),
    )
}

fn bad_state(id: &str, msg: impl std::fmt::Display) -> MantaError {
    err(
        ErrorCode::InvalidMultipartUploadState,
        format!("upload {id}: {msg}"),
    )
}

fn cannot_create(msg: impl std::fmt::Display) -> MantaError {
    err(
        ErrorCode::MultipartUploadInvalidArgument,
        format!("cannot create upload: {msg}"),
    )
}

/// Creating, committing and aborting act on the upload as a whole: the account itself (or a
/// job acting for it) may; a presigned URL, made for one object, may not.
fn ensure_whole_upload_caller(ctx: &Ctx) -> ApiResult<()> {
    if matches!(
        ctx.caller,
        Caller::Account {
            via: Via::Presigned,
            ..
        }
    ) {
        return Err(err(
            ErrorCode::AuthorizationFailed,
            "a presigned URL uploads one object's bytes; it cannot create, commit or abort a \
             multipart upload",
        ));
    }
    Ok(())
}

async fn json_body(body: Body, most: usize, what: &str) -> ApiResult<Value> {
    let bytes = axum::body::to_bytes(body, most).await.map_err(|_| {
        err(
            ErrorCode::MultipartUploadInvalidArgument,
            format!("{what} body is larger than {most} bytes"),
        )
    })?;
    if bytes.is_empty() {
        return Ok(Value::Object(serde_json::Map::new()));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        err(
            ErrorCode::MultipartUploadInvalidArgument,
            format!("{what} body is not valid JSON: {e}"),
        )
    })
}

/// A JSON header value as text (numbers as their decimal form).
fn header_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The headers of a create request, checked: names in lower case, no conditions, a
/// `content-length` that is a number ≥ 0, a `durability-level` in range, a `content-md5` of
/// 16 bytes, and object headers the object itself would accept.
struct CreateHeaders {
    all: serde_json::Map<String, Value>,
    size: Option<u64>,
    copies: u32,
    object: HeaderMap,
}

fn create_headers(fd: &Frontdoor, raw: Option<&Value>) -> ApiResult<CreateHeaders> {
    let given = match raw {
        None | Some(Value::Null) => serde_json::Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(cannot_create("\"headers\" must be an object")),
    };
    let mut all = serde_json::Map::new();
    let mut object = HeaderMap::new();
    for (k, v) in given {
        let k = k.to_ascii_lowercase();
        let text = header_text(&v)
            .ok_or_else(|| cannot_create(format!("header \"{k}\" must be a string or a number")))?;
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| cannot_create(format!("\"{k}\" is not a header name")))?;
        let value = HeaderValue::from_str(&text)
            .map_err(|_| cannot_create(format!("header \"{k}\" has a value that is not text")))?;
        object.insert(name, value);
        all.insert(k, v);
    }
    if [
        "if-match",
        "if-none-match",
        "if-modified-since",
        "if-unmodified-since",
    ]
    .iter()
    .any(|h| all.contains_key(*h))
    {
        return Err(cannot_create(
            "conditional headers are not supported for multipart upload objects",
        ));
    }
    let size = match all.get("content-length") {
        None => None,
        Some(v) => Some(
            header_text(v)
                .and_then(|t| t.parse::<u64>().ok())
                .ok_or_else(|| cannot_create("\"content-length\" must be a number >= 0"))?,
        ),
    };
    let copies = headers::durability(&object, &fd.cfg)?;
    headers::content_md5(&object)?;
    // What the object will be stored with; checked now so that a commit cannot fail on it.
    headers::stored_headers(&object)?;
    Ok(CreateHeaders {
        all,
        size,
        copies,
        object,
    })
}

/// The context of a write of the object an upload makes: the upload request's, at the
/// object's path and without the request's own conditions (an upload takes none).
fn object_ctx(ctx: &Ctx, object_path: MantaPath) -> Ctx {
    Ctx {
        fd: ctx.fd.clone(),
        method: Method::PUT,
        path: object_path,
        query: Vec::new(),
        headers: HeaderMap::new(),
        caller: ctx.caller.clone(),
        owner: ctx.owner.clone(),
        source_ip: ctx.source_ip,
    }
}

/// `POST /:login/uploads`.
async fn create(ctx: &Ctx, body: Body) -> ApiResult<Response> {
    ensure_whole_upload_caller(ctx)?;
    let req = json_body(body, MAX_CREATE_BODY, "a create request's").await?;
    let Some(raw_path) = req.get("objectPath").and_then(Value::as_str) else {
        return Err(cannot_create("a valid \"objectPath\" is required"));
    };
    let object_path = MantaPath::parse(&manta_types::expand_tilde(raw_path, ctx.path.login()))
        .map_err(|e| cannot_create(format!("\"objectPath\": {e}")))?;
    if object_path.login() != ctx.owner.login {
        return Err(err(
            ErrorCode::AuthorizationFailed,
            format!("{} may not upload into {object_path}", ctx.caller_login()),
        ));
    }
    if !matches!(object_path.area(), Some(Area::Stor | Area::Public)) || object_path.is_area_root()
    {
        return Err(cannot_create(format!(
            "{object_path} is not an object path under /{0}/stor or /{0}/public",
            ctx.owner.login
        )));
    }
    let h = create_headers(&ctx.fd, req.get("headers"))?;
    // The object's directory must exist now (it is checked again at commit).
    let octx = object_ctx(ctx, object_path.clone());
    WriteTarget::for_put(&octx).await?;

    let fd = &ctx.fd;
    fd.picker.ensure_loaded().await.map_err(|e| {
        err(
            ErrorCode::ServiceUnavailable,
            format!("storage heartbeats: {e}"),
        )
    })?;
    let nodes = fd.picker.choose(
        h.copies as usize,
        h.size.unwrap_or(PLACEMENT_ESTIMATE).max(1),
        &HashSet::new(),
    )?;
    let id = paths::new_upload_id();
    let upload_path = MantaPath::parse(&paths::parts_directory(&ctx.owner.login, &id))
        .map_err(|e| err(ErrorCode::InternalError, e.to_string()))?;
    let upload_key = upload_path.storage_key(&ctx.owner.uuid);
    let prefix_key = manta_types::path::dirname(&upload_key).to_owned();
    let now = manta_types::time::now_ms();
    let state = UploadState {
        upload_id: id.clone(),
        owner: ctx.owner.uuid.clone(),
        object_path_key: octx.key(),
        upload_path_key: upload_key.clone(),
        creation_time_ms: now,
        finalizing_type: None,
        parts_md5: None,
        object_id: None,
        finalized_ms: None,
    };
    let info = UploadInfo {
        id: id.clone(),
        object_path: object_path.to_string(),
        object_path_key: octx.key(),
        headers: h.all,
        sharks: nodes.iter().map(crate::picker::Node::shark_ref).collect(),
        creation_time_ms: now,
    };
    drop(h.object);
    // The prefix directory, then the state (first: the sweeper finds uploads by it), then
    // the parts directory.
    ensure_prefix_dir(ctx, &prefix_key).await?;
    put(
        fd,
        UPLOADS_BUCKET,
        &state.key(),
        to_value(&state)?,
        PutOptions::must_not_exist(),
    )
    .await?;
    let mut dir = MetadataRecord::directory(&upload_key, &ctx.owner.uuid, now);
    dir.kind = EntryKind::Directory(DirectoryInfo {
        upload: Some(to_value(&info)?),
        removing: None,
    });
    dir.request_id = manta_util::http::current_request_id();
    put(
        fd,
        "manta",
        &upload_key,
        dir.to_value(),
        PutOptions::must_not_exist(),
    )
    .await?;
    tracing::info!(upload = %id, object = %object_path, copies = info.sharks.len(), "upload created");
    let body = json!({ "id": id, "partsDirectory": upload_path.to_string() });
    Ok(json_response(StatusCode::CREATED, &body))
}

fn to_value<T: Serialize>(v: &T) -> ApiResult<Value> {
    serde_json::to_value(v).map_err(|e| err(ErrorCode::InternalError, e.to_string()))
}

async fn put(
    fd: &Frontdoor,
    bucket: &str,
    key: &str,
    value: Value,
    opts: PutOptions,
) -> ApiResult<String> {
    fd.moray
        .put_object(bucket, key, value, opts)
        .await
        .map(|r| r.etag)
        .map_err(|e| from_moray(e, key))
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Makes the prefix directory `key` unless it exists; refuses a new upload when it is full.
async fn ensure_prefix_dir(ctx: &Ctx, key: &str) -> ApiResult<()> {
    let fd = &ctx.fd;
    match load(fd, key).await? {
        Some(e) if e.rec.is_directory() => {
            let count = super::dirs::entry_count(fd, key).await?;
            if count >= fd.cfg.max_dirents {
                return Err(err(
                    ErrorCode::DirectoryLimitExceeded,
                    format!(
                        "{} cannot exceed {} entries: commit or abort uploads first",
                        ctx.path, fd.cfg.max_dirents
                    ),
                ));
            }
            Ok(())
        }
        Some(_) => Err(err(
            ErrorCode::InternalError,
            format!("{key} is not a directory"),
        )),
        None => super::dirs::make_system_dir(fd, key, &ctx.owner.uuid).await,
    }
}

/// Reads upload `id` of the request's owner.
async fn load_upload(ctx: &Ctx, id: &str) -> ApiResult<Loaded> {
    let dir_path = paths::parts_directory(&ctx.owner.login, id);
    let dir_key = MantaPath::parse(&dir_path)
        .map_err(|e| err(ErrorCode::InternalError, e.to_string()))?
        .storage_key(&ctx.owner.uuid);
    let not_found = || {
        err(
            ErrorCode::ResourceNotFound,
            format!("upload {id} does not exist"),
        )
    };
    let dir = load(&ctx.fd, &dir_key).await?.ok_or_else(not_found)?;
    let info = match &dir.rec.kind {
        EntryKind::Directory(DirectoryInfo {
            upload: Some(u), ..
        }) => serde_json::from_value::<UploadInfo>(u.clone()).map_err(|e| {
            err(
                ErrorCode::InternalError,
                format!("unreadable upload record: {e}"),
            )
        })?,
        _ => return Err(not_found()),
    };
    let (state, state_etag) = read_state(&ctx.fd, &state_key(id, &info.object_path_key))
        .await?
        .ok_or_else(not_found)?;
    Ok(Loaded {
        dir,
        info,
        state,
        state_etag,
    })
}

async fn read_state(fd: &Frontdoor, key: &str) -> ApiResult<Option<(UploadState, String)>> {
    match fd.moray.get_object(UPLOADS_BUCKET, key).await {
        Ok(r) => {
            let s = serde_json::from_value(r.value).map_err(|e| {
                err(
                    ErrorCode::InternalError,
                    format!("unreadable upload state: {e}"),
                )
            })?;
            Ok(Some((s, r.etag)))
        }
        Err(moray::Error::ObjectNotFound { .. }) => Ok(None),
        Err(e) => Err(from_moray(e, key)),
    }
}

/// The state of `l` after its upload ended `how`.
fn finalized(l: &Loaded, how: &str) -> UploadState {
    let mut s = l.state.clone();
    s.finalizing_type = Some(how.to_owned());
    s.finalized_ms = Some(manta_types::time::now_ms());
    s
}

/// `PUT …/<id>/<n>`.
async fn upload_part(ctx: &Ctx, id: &str, body: Body) -> ApiResult<Response> {
    let l = load_upload(ctx, id).await?;
    if let Some(how) = &l.state.finalizing_type {
        return Err(bad_state(id, format!("already {}", ended_word(how))));
    }
    // Every part lives on the upload's nodes; a part cannot ask for another number of copies.
    if let Some(d) = ctx
        .header("durability-level")
        .or_else(|| ctx.header("x-durability-level"))
        && d.parse::<usize>().ok() != Some(l.info.sharks.len())
    {
        return Err(invalid(
            id,
            format!(
                "parts are stored as the upload was created: {} copies (durability-level {d} \
                 was asked)",
                l.info.sharks.len()
            ),
        ));
    }
    let nodes = data::nodes_of(&ctx.fd, &l.info.sharks).await?;
    let resp = put_object_at(ctx, body, Placement::On(nodes)).await?;
    // An upload that ended while this part streamed keeps no part: take it back.
    let key = ctx.key();
    match read_state(&ctx.fd, &l.state.key()).await? {
        Some((s, _)) if s.finalizing_type.is_none() => Ok(resp),
        other => {
            if let Err(e) = ctx
                .fd
                .moray
                .del_object("manta", &key, DelOptions::default())
                .await
            {
                tracing::warn!(key, error = %e, "cannot take back a part of an ended upload");
            }
            let how = other
                .and_then(|(s, _)| s.finalizing_type)
                .unwrap_or_else(|| "removed".into());
            Err(bad_state(id, format!("already {}", ended_word(&how))))
        }
    }
}

fn ended_word(how: &str) -> &str {
    match how {
        FINALIZED_COMMIT => "committed",
        FINALIZED_ABORT => "aborted",
        other => other,
    }
}

/// `GET …/<id>/state`.
async fn get_state(ctx: &Ctx, id: &str) -> ApiResult<Response> {
    let l = load_upload(ctx, id).await?;
    let mut out = json!({
        "id": id,
        "state": if l.state.finalizing_type.is_some() { "done" } else { "created" },
        "targetObject": l.info.object_path,
        "headers": l.info.headers,
        "numCopies": l.info.sharks.len(),
        "creationTimeMs": l.info.creation_time_ms,
        // Kept once the upload ended (the original dropped it, and `mmpu parts` of an ended
        // upload then crashed): the directory stays, empty, until the upload is swept.
        "partsDirectory": paths::parts_directory(&ctx.owner.login, id),
    });
    match l.state.finalizing_type.as_deref() {
        None => {}
        Some(FINALIZED_COMMIT) => {
            out["result"] = Value::String("committed".into());
            out["partsMD5Summary"] = l.state.parts_md5.clone().map_or(Value::Null, Value::String);
        }
        Some(_) => out["result"] = Value::String("aborted".into()),
    }
    Ok(json_response(StatusCode::OK, &out))
}

/// Base64 MD5 of the etags, concatenated in order.
pub fn parts_md5(etags: &[String]) -> String {
    let mut h = md5::Md5::new();
    for e in etags {
        h.update(e.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Reads part `i` of the parts directory `dir_key` and checks it against the commit: it
/// exists with `etag` and, unless it is the `last`, holds at least [`MIN_PART_SIZE`].
async fn check_part(
    fd: &Frontdoor,
    dir_key: &str,
    id: &str,
    (i, etag): (usize, &String),
    last: usize,
) -> ApiResult<(u64, String)> {
    if etag.is_empty() {
        return Err(invalid(id, format!("[part {i}] no etag provided")));
    }
    let part = load(fd, &format!("{dir_key}/{i}")).await?;
    let Some(o) = part.as_ref().and_then(|p| p.rec.object()) else {
        return Err(invalid(id, format!("[part {i}] part does not exist")));
    };
    if o.etag != *etag {
        return Err(invalid(id, format!("[part {i}] invalid etag \"{etag}\"")));
    }
    if i < last && o.content_length < MIN_PART_SIZE {
        return Err(invalid(
            id,
            format!("[part {i}] part is too small (size {})", o.content_length),
        ));
    }
    Ok((o.content_length, o.object_id.to_string()))
}

/// Checks every part a commit names ([`check_part`], a few at a time), answering their sizes
/// and object ids in order, or the error of the first that fails.
async fn check_parts(
    fd: &Frontdoor,
    l: &Loaded,
    etags: &[String],
) -> ApiResult<Vec<(u64, String)>> {
    let (id, dir_key) = (&l.info.id, &l.dir.rec.key);
    let last = etags.len().saturating_sub(1);
    let reads: Vec<_> = etags
        .iter()
        .enumerate()
        .map(|part| check_part(fd, dir_key, id, part, last))
        .collect();
    futures_util::stream::iter(reads)
        .buffered(PART_READS)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// `POST …/<id>/commit`.
async fn commit(ctx: &Ctx, id: &str, body: Body) -> ApiResult<Response> {
    ensure_whole_upload_caller(ctx)?;
    let req = json_body(body, MAX_COMMIT_BODY, "a commit request's").await?;
    let etags: Vec<String> = match req.get("parts") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(|| invalid(id, "\"parts\" must be an array of etags"))?,
        Some(_) => return Err(invalid(id, "\"parts\" must be an array of etags")),
    };
    if etags.len() > MAX_PARTS {
        return Err(invalid(
            id,
            format!(
                "too many parts provided ({} provided; max is {MAX_PARTS})",
                etags.len()
            ),
        ));
    }
    let l = load_upload(ctx, id).await?;
    let summary = parts_md5(&etags);
    let object_path = MantaPath::parse(&l.info.object_path)
        .map_err(|e| err(ErrorCode::InternalError, e.to_string()))?;
    let octx = object_ctx(ctx, object_path);
    match l.state.finalizing_type.as_deref() {
        None => {}
        Some(FINALIZED_COMMIT) if l.state.parts_md5.as_deref() == Some(summary.as_str()) => {
            // The same commit again: answer as it did.
            let Some(Entry { rec, .. }) = load(&ctx.fd, &octx.key()).await? else {
                return Err(bad_state(
                    id,
                    "already committed; its object was removed since",
                ));
            };
            let Some(o) = rec.object() else {
                return Err(bad_state(
                    id,
                    "already committed; its object was replaced since",
                ));
            };
            return Ok(committed(
                &l.info.object_path,
                &rec,
                &o.etag,
                &o.content_md5,
            ));
        }
        Some(FINALIZED_COMMIT) => {
            return Err(bad_state(id, "already committed with other parts"));
        }
        Some(_) => return Err(bad_state(id, "already aborted")),
    }
    let target = WriteTarget::for_put(&octx).await?;
    let sized = check_parts(&ctx.fd, &l, &etags).await?;
    let total: u64 = sized.iter().map(|(n, _)| n).sum();
    let wanted = l.info.headers.get("content-length").and_then(header_text);
    if let Some(w) = wanted
        && w != total.to_string()
    {
        return Err(invalid(
            id,
            format!("expected content-length {w}, but object was {total}"),
        ));
    }
    let owner = &ctx.owner.uuid;
    let object_id = ObjectId::random();
    let joined = if total == 0 {
        Uncommitted::adopt(&ctx.fd, owner, object_id, Vec::new(), Stored::empty())
    } else {
        let ids: Vec<String> = sized
            .into_iter()
            .filter(|(n, _)| *n > 0)
            .map(|(_, oid)| oid)
            .collect();
        data::join_on(&ctx.fd, &l.info.sharks, owner, object_id, &ids).await?
    };
    let md5 = joined.stored().md5.clone();
    let wrong = if joined.stored().size != total {
        Some(err(
            ErrorCode::InternalError,
            format!("joined {} bytes, expected {total}", joined.stored().size),
        ))
    } else {
        l.info
            .headers
            .get("content-md5")
            .and_then(header_text)
            .filter(|want| *want != md5)
            .map(|want| {
                invalid(
                    id,
                    format!("expected content-md5 \"{want}\", but object has md5 \"{md5}\""),
                )
            })
    };
    if let Some(e) = wrong {
        joined.abort().await;
        return Err(e);
    }
    let object_headers = create_headers(&ctx.fd, Some(&Value::Object(l.info.headers.clone())))?;
    let meta = ObjectMeta {
        etag: object_id.to_string(),
        content_type: object_headers
            .object
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_owned(),
        headers: headers::stored_headers(&object_headers.object)?,
    };
    let rec = joined.record(octx.place(), meta);
    let mut done = finalized(&l, FINALIZED_COMMIT);
    done.parts_md5 = Some(summary);
    done.object_id = Some(object_id.to_string());
    let ops = vec![
        BatchOp::Put {
            bucket: "manta".into(),
            key: rec.key.clone(),
            value: rec.to_value(),
            options: PutOptions {
                etag: target.condition(&octx),
            },
        },
        BatchOp::Put {
            bucket: UPLOADS_BUCKET.into(),
            key: done.key(),
            value: to_value(&done)?,
            options: PutOptions::if_match(l.state_etag.clone()),
        },
    ];
    let fd = &ctx.fd;
    let state_key = done.key();
    joined
        .commit(async {
            let written = match fd.moray.batch(ops).await {
                Ok(r) => r.results.first().and_then(|r| r.etag.clone()),
                Err(moray::Error::EtagConflict { .. }) => {
                    return Err(bad_state(id, "ended by another request meanwhile"));
                }
                Err(e) => return Err(from_moray(e, &l.info.object_path)),
            };
            let Some(etag) = written else {
                return Ok(());
            };
            if let Err(e) = settle_in_parent(&octx, &rec.key, &etag).await {
                // The object's directory went: the object was taken back, so the upload has
                // not ended; the same commit may be tried again.
                let undo = PutOptions::any();
                if let Err(e) = fd
                    .moray
                    .put_object(UPLOADS_BUCKET, &state_key, to_value(&l.state)?, undo)
                    .await
                {
                    tracing::warn!(upload = %id, error = %e, "cannot reopen an upload");
                }
                return Err(e);
            }
            Ok(())
        })
        .await?;
    remove_parts(fd, &l.dir.rec.key).await;
    tracing::info!(
        upload = %id,
        object = %l.info.object_path,
        parts = etags.len(),
        size = total,
        "upload committed"
    );
    Ok(committed(
        &l.info.object_path,
        &rec,
        &object_id.to_string(),
        &md5,
    ))
}

fn committed(object_path: &str, rec: &MetadataRecord, etag: &str, md5: &str) -> Response {
    let mut resp = written(etag, rec.mtime, md5, StatusCode::CREATED);
    let loc = MantaPath::parse(object_path).map_or(object_path.to_owned(), |p| p.to_url_path());
    if let Ok(v) = HeaderValue::from_str(&loc) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// Removes every part record of the parts directory `dir_key` (their bytes go to garbage
/// collection through the delete log). Best effort: the sweep removes what is left.
async fn remove_parts(fd: &Frontdoor, dir_key: &str) {
    let (shard, _) = fd.moray.shard_for_hashkey(dir_key);
    let filter = Filter::and(vec![
        Filter::eq("dirname", dir_key),
        Filter::eq("type", "object"),
    ]);
    if let Err(e) = shard.delete_many("manta", &filter.to_string(), None).await {
        tracing::warn!(dir = dir_key, error = %e, "cannot remove the parts of an ended upload");
    }
}

/// `POST …/<id>/abort`.
async fn abort(ctx: &Ctx, id: &str) -> ApiResult<Response> {
    ensure_whole_upload_caller(ctx)?;
    let l = load_upload(ctx, id).await?;
    match l.state.finalizing_type.as_deref() {
        None => {}
        Some(FINALIZED_COMMIT) => return Err(bad_state(id, "already committed")),
        Some(_) => return Ok(no_content()),
    }
    let done = finalized(&l, FINALIZED_ABORT);
    let opts = PutOptions::if_match(l.state_etag.clone());
    match ctx
        .fd
        .moray
        .put_object(UPLOADS_BUCKET, &done.key(), to_value(&done)?, opts)
        .await
    {
        Ok(_) => {}
        Err(moray::Error::EtagConflict { .. }) => {
            return Err(bad_state(id, "ended by another request meanwhile"));
        }
        Err(e) => return Err(from_moray(e, id)),
    }
    remove_parts(&ctx.fd, &l.dir.rec.key).await;
    tracing::info!(upload = %id, "upload aborted");
    Ok(no_content())
}

/// Ends and removes every upload created more than `max_age` ago, on every shard: an
/// unfinished one is aborted first; then its parts, its parts directory and its state go.
/// Answers how many were removed.
///
/// # Errors
/// When a shard cannot be read.
pub async fn sweep(fd: &Frontdoor, max_age: std::time::Duration) -> Result<u64, moray::Error> {
    let cutoff = manta_types::time::now_ms().saturating_sub(max_age.as_millis() as u64);
    let mut removed = 0;
    for shard in fd.moray.shards() {
        let mut old = Vec::new();
        shard
            .scan(UPLOADS_BUCKET, "(uploadId=*)", 1_000, |r| {
                if let Ok(state) = serde_json::from_value::<UploadState>(r.value.clone())
                    && state.creation_time_ms <= cutoff
                {
                    old.push((r, state));
                }
            })
            .await?;
        for (r, state) in old {
            if state.finalizing_type.is_none() {
                let mut done = state.clone();
                done.finalizing_type = Some(FINALIZED_ABORT.into());
                done.finalized_ms = Some(manta_types::time::now_ms());
                let Ok(v) = serde_json::to_value(&done) else {
                    continue;
                };
                // A commit or abort that won meanwhile is swept next time.
                if shard
                    .put_object(
                        UPLOADS_BUCKET,
                        &r.key,
                        v,
                        PutOptions::if_match(r.etag.clone()),
                    )
                    .await
                    .is_err()
                {
                    continue;
                }
            }
            remove_parts(fd, &state.upload_path_key).await;
            match fd
                .moray
                .del_object("manta", &state.upload_path_key, DelOptions::default())
                .await
            {
                Ok(()) | Err(moray::Error::ObjectNotFound { .. }) => {}
                Err(e) => {
                    tracing::warn!(upload = %state.upload_id, error = %e, "cannot remove a parts directory");
                    continue;
                }
            }
            let _ = shard
                .del_object(UPLOADS_BUCKET, &r.key, DelOptions::default())
                .await;
            tracing::info!(upload = %state.upload_id, ended = ?state.finalizing_type, "old upload swept");
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_md5_is_the_md5_of_the_etags_in_order() {
        // MD5 of nothing, as the original's summary of a commit of no parts.
        assert_eq!(parts_md5(&[]), "1B2M2Y8AsgTpgAmY7PhCfg==");
        let ab = parts_md5(&["a".into(), "b".into()]);
        assert_eq!(ab, parts_md5(&["ab".into()]));
        assert_ne!(ab, parts_md5(&["b".into(), "a".into()]));
    }

    #[test]
    fn state_records_round_trip_in_the_originals_field_names() {
        let s = UploadState {
            upload_id: "u".into(),
            owner: "o".into(),
            object_path_key: "/o/stor/x".into(),
            upload_path_key: "/o/uploads/abc/u".into(),
            creation_time_ms: 1,
            finalizing_type: Some(FINALIZED_COMMIT.into()),
            parts_md5: Some("m".into()),
            object_id: None,
            finalized_ms: None,
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["uploadId"], "u");
        assert_eq!(v["finalizingType"], "commit");
        assert_eq!(v["partsMD5"], "m");
        assert_eq!(serde_json::from_value::<UploadState>(v).unwrap(), s);
        assert_eq!(s.key(), "u:/o/stor/x");
    }

    #[test]
    fn only_reads_of_entries_go_to_the_namespace() {
        let id = "b2c5d1e2-0000-4000-8000-000000000003".to_owned();
        assert!(!takes(&Method::GET, &Target::Root));
        assert!(takes(&Method::POST, &Target::Root));
        assert!(!takes(
            &Method::GET,
            &Target::Part {
                id: id.clone(),
                number: 0
            }
        ));
        assert!(takes(
            &Method::PUT,
            &Target::Part {
                id: id.clone(),
                number: 0
            }
        ));
        assert!(takes(&Method::DELETE, &Target::Upload { id: id.clone() }));
        assert!(takes(&Method::HEAD, &Target::Short { id, rest: None }));
    }
}
