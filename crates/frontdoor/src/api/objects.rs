//! Objects: `PUT` (streamed to N storage nodes, then committed to Moray), `GET`/`HEAD` (from
//! any copy, single ranges), and `PUT ?metadata=true` (new headers, same bytes).

use axum::body::Body;
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};
use manta_types::record::{EntryKind, ObjectInfo};
use manta_types::{ErrorCode, MetadataRecord};
use moray::{DelOptions, PutOptions};
use storage_api::range::{ByteRange, RangeError};

use super::conditional::{self, Outcome};
use super::headers::{self, http_date};
use super::{Ctx, Entry, cors, is_virtual_dir, load, no_content};
use crate::data::ObjectMeta;
use crate::error::{ApiResult, err, from_moray};

/// Checks the parent of `ctx`'s path: it must exist and be a directory. A parent read as a
/// directory less than `account_cache_ttl` ago is not read again: this check only spares
/// streaming bytes into a path that cannot hold them, and [`save`] checks the parent again
/// once the write has landed.
///
/// # Errors
/// `DirectoryDoesNotExist` or `ParentNotDirectory`.
pub async fn ensure_parent(ctx: &Ctx) -> ApiResult<()> {
    let parent = ctx
        .path
        .parent()
        .expect("only the account root has no parent, and it is never written");
    if is_virtual_dir(&parent) {
        return Ok(());
    }
    let key = parent.storage_key(&ctx.owner.uuid);
    if ctx
        .fd
        .dirs
        .get(&key, ctx.fd.cfg.account_cache_ttl)
        .is_some()
    {
        return Ok(());
    }
    let found = load(&ctx.fd, &key).await?;
    // Only a directory no removal has marked is worth reusing.
    let reusable = found
        .as_ref()
        .is_some_and(|e| matches!(&e.rec.kind, EntryKind::Directory(d) if d.removing.is_none()));
    if reusable && !ctx.fd.cfg.account_cache_ttl.is_zero() {
        ctx.fd.dirs.insert(&key, ());
    } else {
        ctx.fd.dirs.remove(&key);
    }
    match found {
        None => Err(err(
            ErrorCode::DirectoryDoesNotExist,
            format!("{parent} does not exist"),
        )),
        Some(e) if !e.rec.is_directory() => Err(err(
            ErrorCode::ParentNotDirectory,
            format!("{parent} is not a directory"),
        )),
        Some(_) => Ok(()),
    }
}

/// What a write needs to know about its path, read in one round of parallel lookups: the
/// entry there now (if any), whether the parent is a directory, and how full the parent is.
#[derive(Debug)]
pub struct WriteTarget {
    /// The entry at the path now.
    pub existing: Option<Entry>,
    dir_count: u64,
}

impl WriteTarget {
    /// Reads the entry, checks the parent and counts the parent's entries, all at once.
    ///
    /// # Errors
    /// `DirectoryDoesNotExist`, `ParentNotDirectory`, Moray failures.
    pub async fn read(ctx: &Ctx) -> ApiResult<WriteTarget> {
        let key = ctx.key();
        let dirname = manta_types::path::dirname(&key).to_owned();
        let (existing, parent, count) = tokio::join!(
            load(&ctx.fd, &key),
            ensure_parent(ctx),
            super::dirs::entry_count(&ctx.fd, &dirname)
        );
        parent?;
        Ok(WriteTarget {
            existing: existing?,
            dir_count: count?,
        })
    }

    /// Reads the target of a `PUT` of an object or a link and checks it may be written there:
    /// it is not a directory, the request's conditions hold, and the parent has room.
    ///
    /// # Errors
    /// `OperationNotAllowedOnDirectory`, `PreconditionFailed`, `DirectoryLimitExceeded`, and
    /// those of [`WriteTarget::read`].
    pub async fn for_put(ctx: &Ctx) -> ApiResult<WriteTarget> {
        let target = WriteTarget::read(ctx).await?;
        if target
            .existing
            .as_ref()
            .is_some_and(|e| e.rec.is_directory())
        {
            return Err(err(
                ErrorCode::OperationNotAllowedOnDirectory,
                format!("{} is a directory: PUT is not allowed", ctx.path),
            ));
        }
        ctx.check_conditions(target.existing.as_ref())?;
        target.ensure_room(ctx)?;
        Ok(target)
    }

    /// The Moray condition of the write over this target: when the request was conditional,
    /// it holds only while the entry is still the one checked.
    pub fn condition(&self, ctx: &Ctx) -> moray::EtagCondition {
        conditional::write_condition(&ctx.headers, self.existing.as_ref())
    }

    /// Refuses a new entry in a full directory (replacing an entry is always allowed).
    ///
    /// # Errors
    /// `DirectoryLimitExceeded` when the parent holds `max_dirents` entries.
    pub fn ensure_room(&self, ctx: &Ctx) -> ApiResult<()> {
        if self.existing.is_none() && self.dir_count >= ctx.fd.cfg.max_dirents {
            let parent = ctx.path.parent().map(|p| p.to_string()).unwrap_or_default();
            return Err(err(
                ErrorCode::DirectoryLimitExceeded,
                format!("{parent} cannot exceed {} entries", ctx.fd.cfg.max_dirents),
            ));
        }
        Ok(())
    }
}

/// Writes `rec` at its key with `cond`; an unconditional write that races another is retried
/// once, as the original does. A new entry whose directory was removed while it was being
/// written is taken back (see [`settle_in_parent`]).
///
/// # Errors
/// `ConcurrentRequest` when the condition fails; `DirectoryDoesNotExist` when the directory
/// went meanwhile; Moray failures.
pub async fn save(ctx: &Ctx, rec: &MetadataRecord, cond: moray::EtagCondition) -> ApiResult<()> {
    let opts = PutOptions { etag: cond };
    let put = |opts| {
        ctx.fd
            .moray
            .put_object("manta", &rec.key, rec.to_value(), opts)
    };
    let written = match put(opts.clone()).await {
        Err(moray::Error::EtagConflict { .. }) if opts.etag == moray::EtagCondition::Any => {
            put(opts).await
        }
        other => other,
    }
    .map_err(|e| from_moray(e, &ctx.path.to_string()))?;
    settle_in_parent(ctx, &rec.key, &written.etag).await
}

/// How long a removal's mark on a directory holds: a mark older than this was left by a
/// front door that stopped mid-removal, and writes no longer wait for it.
const REMOVAL_MARK_TTL_MS: u64 = 10_000;

/// After a write of `key` (now at `etag`) has landed: the directory it landed in must still
/// be there. A removal marks the directory before checking it is empty and deletes it only
/// if the mark is unchanged, so a write that sees no mark after landing is safe: the
/// removal's check will see the entry. While the directory is marked, this waits for the
/// removal to end; when the directory is gone, the write is taken back (its bytes go to
/// garbage collection through the delete log), so no entry outlives its directory unseen.
///
/// # Errors
/// `DirectoryDoesNotExist` when the directory went; Moray failures.
pub(crate) async fn settle_in_parent(ctx: &Ctx, key: &str, etag: &str) -> ApiResult<()> {
    let Some(parent) = ctx.path.parent() else {
        return Ok(());
    };
    if is_virtual_dir(&parent) {
        return Ok(());
    }
    let parent_key = parent.storage_key(&ctx.owner.uuid);
    let deadline =
        std::time::Instant::now() + std::time::Duration::from_millis(REMOVAL_MARK_TTL_MS);
    loop {
        let dir = load(&ctx.fd, &parent_key).await?;
        let marked = match dir.as_ref().map(|d| &d.rec.kind) {
            Some(EntryKind::Directory(info)) => info.removing.is_some_and(|at| {
                manta_types::time::now_ms().saturating_sub(at) < REMOVAL_MARK_TTL_MS
            }),
            _ => {
                // Gone (or replaced by an object): take the write back.
                ctx.fd.dirs.remove(&parent_key);
                let undo = DelOptions {
                    etag: moray::EtagCondition::MustMatch(etag.to_owned()),
                };
                match ctx.fd.moray.del_object("manta", key, undo).await {
                    Ok(())
                    | Err(
                        moray::Error::ObjectNotFound { .. } | moray::Error::EtagConflict { .. },
                    ) => {}
                    Err(e) => return Err(from_moray(e, &ctx.path.to_string())),
                }
                tracing::info!(
                    key,
                    "directory removed while a write landed in it: write taken back"
                );
                return Err(err(
                    ErrorCode::DirectoryDoesNotExist,
                    format!("{parent} was removed"),
                ));
            }
        };
        if !marked || std::time::Instant::now() >= deadline {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Where the copies of a new object go.
#[derive(Debug)]
pub enum Placement {
    /// On this many nodes the picker chooses.
    Choose(u32),
    /// On exactly these nodes (a multipart upload's parts, which its nodes join at the end).
    On(Vec<crate::picker::Node>),
}

/// `PUT` of an object.
///
/// # Errors
/// The API's errors for bad headers, missing parents, preconditions, placement and streaming.
pub async fn put_object(ctx: &Ctx, body: Body) -> ApiResult<Response> {
    let copies = headers::durability(&ctx.headers, &ctx.fd.cfg)?;
    put_object_at(ctx, body, Placement::Choose(copies)).await
}

/// `PUT` of an object whose copies go where `placement` says.
///
/// # Errors
/// As [`put_object`].
pub async fn put_object_at(ctx: &Ctx, body: Body, placement: Placement) -> ApiResult<Response> {
    if is_virtual_dir(&ctx.path) {
        return Err(err(
            ErrorCode::OperationNotAllowedOnRootDirectory,
            format!("PUT is not allowed on {}", ctx.path),
        ));
    }
    let len = headers::body_length(&ctx.headers)?;
    let md5 = headers::content_md5(&ctx.headers)?;
    let mut stored_headers = headers::stored_headers(&ctx.headers)?;
    if ctx.path.area() == Some(manta_types::Area::Public) {
        stored_headers
            .entry("access-control-allow-origin".into())
            .or_insert_with(|| "*".into());
    }
    let content_type = ctx
        .header("content-type")
        .unwrap_or("application/octet-stream")
        .to_owned();
    let tags = super::roles::requested_tags(ctx)?;

    let target = ctx
        .fd
        .step("put", "check", WriteTarget::for_put(ctx))
        .await?;

    let (fd, owner, body) = (&ctx.fd, &ctx.owner.uuid, body.into_data_stream());
    let upload = match placement {
        Placement::Choose(copies) => {
            crate::data::store(fd, owner, copies, len, md5.as_deref(), body).await?
        }
        Placement::On(nodes) => {
            crate::data::store_on(fd, &nodes, owner, len, md5.as_deref(), body).await?
        }
    };
    let oid = upload.object_id().to_string();
    let computed_md5 = upload.stored().md5.clone();
    let meta = ObjectMeta {
        etag: oid.clone(),
        content_type,
        headers: stored_headers,
    };
    let mut rec = upload.record(ctx.place(), meta);
    rec.roles = tags.unwrap_or_default();
    upload
        .commit(save(ctx, &rec, target.condition(ctx)))
        .await?;
    Ok(written(
        &oid,
        rec.mtime,
        &computed_md5,
        StatusCode::NO_CONTENT,
    ))
}

/// The answer to a write of an object: `status` with its `Etag`, `Last-Modified` and
/// `Computed-MD5`.
pub fn written(etag: &str, mtime: u64, md5: &str, status: StatusCode) -> Response {
    let mut resp = no_content();
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::ETAG, hv(etag));
    h.insert(header::LAST_MODIFIED, hv(&http_date(mtime)));
    h.insert("computed-md5", hv(md5));
    resp
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The headers every read of an object carries.
pub fn object_headers(ctx: &Ctx, rec: &MetadataRecord, o: &ObjectInfo, out: &mut http::HeaderMap) {
    out.insert(header::ETAG, hv(&o.etag));
    out.insert(header::LAST_MODIFIED, hv(&http_date(rec.mtime)));
    out.insert(header::CONTENT_TYPE, hv(&o.content_type));
    out.insert("content-md5", hv(&o.content_md5));
    out.insert("durability-level", HeaderValue::from(o.sharks.len()));
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(sha) = &o.sha256 {
        out.insert("x-manta-content-sha256", hv(sha));
    }
    cors::add_stored_headers(out, &rec.headers, ctx.header("origin"), ctx.method.as_str());
    super::roles::add_role_tag(out, rec);
}

/// Whether a read refuses an object whose content type the request's `Accept` does not admit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Negotiation {
    /// `NotAcceptable` (the directory tree's objects).
    Enforce,
    /// Serve the bytes whatever `Accept` says (S3 objects read through this API, which never
    /// negotiated).
    Ignore,
}

/// `GET`/`HEAD` of an object in the directory tree.
///
/// # Errors
/// As [`read_object`].
pub async fn get_object(ctx: &Ctx, entry: Entry) -> ApiResult<Response> {
    read_object(ctx, &entry, &ctx.path.to_string(), Negotiation::Enforce).await
}

/// Answers a `GET`/`HEAD` of the object `entry`, called `name` in messages: the object
/// headers ([`object_headers`]), the conditional headers ([`conditional::check`]; `304` for
/// a read that is not modified), `Accept` as `negotiation` says, then one range or the whole
/// object, streamed from any copy.
///
/// # Errors
/// `PreconditionFailed`, `NotAcceptable`, `RequestedRangeNotSatisfiable`, `NotImplemented`
/// (several ranges), `ServiceUnavailable` when no copy answers.
pub async fn read_object(
    ctx: &Ctx,
    entry: &Entry,
    name: &str,
    negotiation: Negotiation,
) -> ApiResult<Response> {
    let Some(o) = entry.rec.object().cloned() else {
        return Err(err(ErrorCode::InternalError, "not an object"));
    };
    let mut resp = Response::new(Body::empty());
    object_headers(ctx, &entry.rec, &o, resp.headers_mut());
    if conditional::check(&ctx.method, &ctx.headers, Some(entry), name)? == Outcome::NotModified {
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        resp.headers_mut().remove(header::CONTENT_TYPE);
        return Ok(resp);
    }
    if negotiation == Negotiation::Enforce
        && !headers::accepts(ctx.header("accept"), &o.content_type)
    {
        return Err(err(
            ErrorCode::NotAcceptable,
            format!("{name} accepts {}", o.content_type),
        ));
    }
    let total = o.content_length;
    let range = match ctx.header("range") {
        None => None,
        Some(r) => match ByteRange::parse(r) {
            Ok(br) => Some((r.to_owned(), br)),
            Err(RangeError::Multiple(_)) => {
                return Err(err(
                    ErrorCode::NotImplemented,
                    "multiple ranges are not supported",
                ));
            }
            // A malformed Range is ignored, as HTTP says.
            Err(_) => None,
        },
    };
    let resolved = match &range {
        None => None,
        Some((_, br)) => match br.resolve(total) {
            Some(r) => Some(r),
            None => {
                let mut e = Response::new(Body::from(
                    manta_types::ErrorBody::new(
                        ErrorCode::RequestedRangeNotSatisfiable,
                        format!(
                            "{} is an invalid range",
                            ctx.header("range").unwrap_or_default()
                        ),
                    )
                    .to_json(),
                ));
                *e.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                e.headers_mut()
                    .insert(header::CONTENT_RANGE, hv(&format!("bytes */{total}")));
                e.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                return Ok(e);
            }
        },
    };
    let length = resolved.as_ref().map(|r| r.len).unwrap_or(total);
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if let Some(r) = &resolved {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        resp.headers_mut()
            .insert(header::CONTENT_RANGE, hv(&r.content_range(total)));
    }
    if ctx.method == http::Method::HEAD || length == 0 {
        return Ok(resp);
    }
    let (status, content_range, stream) =
        crate::data::fetch(&ctx.fd, &o, &entry.rec.creator, range.map(|(_, br)| br)).await?;
    if status == StatusCode::RANGE_NOT_SATISFIABLE {
        return Err(err(
            ErrorCode::RequestedRangeNotSatisfiable,
            "the range is not satisfiable",
        ));
    }
    if let Some(cr) = content_range {
        resp.headers_mut().insert(header::CONTENT_RANGE, hv(&cr));
    }
    *resp.body_mut() = Body::from_stream(stream);
    Ok(resp)
}

/// `PUT ?metadata=true`: replaces an entry's stored headers (and content type) without
/// touching its bytes.
///
/// # Errors
/// `ResourceNotFound`; `InvalidUpdate` for headers that describe the bytes.
pub async fn put_metadata(ctx: &Ctx) -> ApiResult<Response> {
    for forbidden in ["content-md5", "durability-level", "x-durability-level"] {
        if ctx.headers.contains_key(forbidden) {
            return Err(err(
                ErrorCode::InvalidUpdate,
                format!("overwrite of \"{forbidden}\" forbidden"),
            ));
        }
    }
    if ctx.header("content-length").is_some_and(|v| v != "0") {
        return Err(err(
            ErrorCode::InvalidUpdate,
            "overwrite of \"content-length\" forbidden",
        ));
    }
    if is_virtual_dir(&ctx.path) {
        // An area root keeps only role tags (on the account).
        let stored = headers::stored_headers(&ctx.headers)?;
        if let Some(tags) = super::roles::requested_tags(ctx)?
            && stored.is_empty()
            && super::roles::taggable_root(&ctx.path)
        {
            super::roles::set_area_tags(ctx, &tags).await?;
            return Ok(no_content());
        }
        return Err(err(
            ErrorCode::OperationNotAllowedOnRootDirectory,
            format!(
                "PUT is not allowed on {} (its role tags may be set, alone)",
                ctx.path
            ),
        ));
    }
    let Some(entry) = load(&ctx.fd, &ctx.key()).await? else {
        return Err(err(
            ErrorCode::ResourceNotFound,
            format!("{} was not found", ctx.path),
        ));
    };
    ctx.check_conditions(Some(&entry))?;
    let mut rec = entry.rec.clone();
    let stored = headers::stored_headers(&ctx.headers)?;
    // Role tags change only when the request names them; a request that names only them
    // (`mchmod`) keeps the other stored headers.
    match super::roles::requested_tags(ctx)? {
        Some(tags) if stored.is_empty() => rec.roles = tags,
        Some(tags) => {
            rec.roles = tags;
            rec.headers = stored;
        }
        None => rec.headers = stored,
    }
    rec.mtime = manta_types::time::now_ms();
    rec.request_id = manta_util::http::current_request_id();
    if let EntryKind::Object(o) = &mut rec.kind {
        if let Some(ct) = ctx.header("content-type") {
            o.content_type = ct.to_owned();
        }
        o.content_disposition = rec.headers.get("content-disposition").cloned();
    }
    // Always conditional on what was read: headers of a concurrently replaced object must not
    // land on the new one.
    save(
        ctx,
        &rec,
        moray::EtagCondition::MustMatch(entry.etag.clone()),
    )
    .await?;
    let mut resp = no_content();
    if let Some(o) = rec.object() {
        resp.headers_mut().insert(header::ETAG, hv(&o.etag));
    }
    resp.headers_mut()
        .insert(header::LAST_MODIFIED, hv(&http_date(rec.mtime)));
    Ok(resp)
}
