//! Directories: create (idempotent), list (JSON lines, `Result-Set-Size`, paging by marker,
//! sort by name or mtime), delete (only when empty); the account root's fixed listing; and
//! `DELETE` of objects, which shares the "what is at this path" logic.

use axum::body::Body;
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};
use manta_types::record::{DirectoryInfo, EntryKind};
use manta_types::{Area, ErrorCode, MetadataRecord};
use moray::filter::Filter;
use moray::types::{FindOptions, Sort, SortOrder};
use moray::{DelOptions, EtagCondition, PutOptions};
use serde_json::json;

use super::conditional::{self, Outcome};
use super::objects::{WriteTarget, save};
use super::{Ctx, Entry, cors, headers, load, no_content};
use crate::error::{ApiResult, err, from_moray};
use crate::state::Frontdoor;

/// Content type of directory listings.
pub const DIR_CONTENT_TYPE: &str = "application/x-json-stream; type=directory";

/// The fixed mtime of the account root's entries.
const ROOT_MTIME: &str = "2013-05-22T17:39:43.714Z";

/// Number of entries in the directory with key `dirname` (0 when it has none).
///
/// # Errors
/// When Moray fails.
pub async fn entry_count(fd: &Frontdoor, dirname: &str) -> ApiResult<u64> {
    match fd.moray.get_object("manta_directory_counts", dirname).await {
        Ok(r) => Ok(r
            .value
            .get("entries")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)),
        Err(moray::Error::ObjectNotFound { .. }) => Ok(0),
        Err(e) => Err(from_moray(e, dirname)),
    }
}

fn listing_response(
    ctx: &Ctx,
    count: u64,
    lines: String,
    stored: Option<&MetadataRecord>,
) -> Response {
    let mut resp = Response::new(if ctx.method == http::Method::HEAD {
        Body::empty()
    } else {
        Body::from(lines)
    });
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(DIR_CONTENT_TYPE),
    );
    h.insert("result-set-size", HeaderValue::from(count));
    if let Some(rec) = stored {
        h.insert(
            header::LAST_MODIFIED,
            HeaderValue::from_str(&headers::http_date(rec.mtime))
                .unwrap_or(HeaderValue::from_static("")),
        );
        cors::add_stored_headers(h, &rec.headers, ctx.header("origin"), ctx.method.as_str());
        super::roles::add_role_tag(h, rec);
    } else {
        super::roles::add_tags(h, super::roles::area_tags(&ctx.owner, &ctx.path));
    }
    resp
}

/// Makes the directory `key` of `owner` for the system (report directories, upload prefix
/// directories), if it is missing: a must-not-exist put, so one made meanwhile by another
/// request is as good.
///
/// # Errors
/// When Moray fails.
pub async fn make_system_dir(fd: &Frontdoor, key: &str, owner: &str) -> ApiResult<()> {
    let mut rec = MetadataRecord::directory(key, owner, manta_types::time::now_ms());
    rec.request_id = manta_util::http::current_request_id();
    match fd
        .moray
        .put_object("manta", key, rec.to_value(), PutOptions::must_not_exist())
        .await
    {
        Ok(_) | Err(moray::Error::EtagConflict { .. }) => Ok(()),
        Err(e) => Err(from_moray(e, key)),
    }
}

/// `GET /:login`: the five areas as directories.
///
/// # Errors
/// Never; the signature matches the other handlers.
pub fn root_listing(ctx: &Ctx) -> ApiResult<Response> {
    let marker = ctx.param("marker");
    let mut lines = String::new();
    let names: Vec<&str> = Area::ALL
        .iter()
        .map(|a| a.as_str())
        .filter(|n| marker.is_none_or(|m| *n > m))
        .collect();
    for n in &names {
        lines.push_str(&json!({"name": n, "type": "directory", "mtime": ROOT_MTIME}).to_string());
        lines.push('\n');
    }
    Ok(listing_response(ctx, names.len() as u64, lines, None))
}

/// `GET`/`HEAD` of a directory (`entry` is `None` for the area roots, which have no record).
///
/// # Errors
/// `InvalidArgumentError` for a bad `limit`, `InvalidParameter` for a bad mtime marker,
/// Moray failures.
pub async fn get_directory(ctx: &Ctx, entry: Option<Entry>) -> ApiResult<Response> {
    if let Some(e) = &entry
        && ctx.check_conditions(Some(e))? == Outcome::NotModified
    {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        return Ok(r);
    }
    let limit = manta_types::list_limit(ctx.param("limit"), 256)?;
    let dirkey = ctx.key();
    let count = entry_count(&ctx.fd, &dirkey).await?;
    if ctx.method == http::Method::HEAD {
        return Ok(listing_response(
            ctx,
            count,
            String::new(),
            entry.as_ref().map(|e| &e.rec),
        ));
    }
    let reverse = ctx.param("sort_order") == Some("reverse");
    let by_mtime = ctx.param("sort") == Some("mtime");
    let (attribute, order) = match (by_mtime, reverse) {
        (true, false) => ("_mtime", SortOrder::Desc),
        (true, true) => ("_mtime", SortOrder::Asc),
        (false, false) => ("name", SortOrder::Asc),
        (false, true) => ("name", SortOrder::Desc),
    };
    let mut terms = vec![
        Filter::eq("owner", ctx.owner.uuid.as_str()),
        Filter::eq("dirname", dirkey.as_str()),
    ];
    let has_dir = ctx.param("dir").is_some() || ctx.param("directory").is_some();
    let has_obj = ctx.param("obj").is_some() || ctx.param("object").is_some();
    if has_dir != has_obj {
        terms.push(Filter::eq(
            "type",
            if has_dir { "directory" } else { "object" },
        ));
    }
    if let Some(marker) = ctx.param("marker") {
        let value = if by_mtime {
            manta_types::time::parse_iso8601_ms(marker)
                .or_else(|| {
                    httpdate::parse_http_date(marker)
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|d| d.as_millis() as u64)
                })
                .ok_or_else(|| {
                    err(
                        ErrorCode::InvalidParameter,
                        format!("\"{marker}\" is invalid for \"marker\""),
                    )
                })?
                .to_string()
        } else {
            marker.to_owned()
        };
        terms.push(match order {
            SortOrder::Asc => Filter::ge(attribute, value),
            SortOrder::Desc => Filter::le(attribute, value),
        });
    }
    let opts = FindOptions {
        limit: Some(limit),
        sort: vec![
            Sort {
                attribute: attribute.to_owned(),
                order,
            },
            Sort {
                attribute: "name".to_owned(),
                order,
            },
        ],
        no_count: true,
        ..FindOptions::default()
    };
    let recs = ctx
        .fd
        .moray
        .find_objects("manta", &Filter::and(terms).to_string(), &dirkey, opts)
        .await
        .map_err(|e| from_moray(e, &ctx.path.to_string()))?;
    let mut lines = String::new();
    for r in recs {
        let Ok(rec) = MetadataRecord::from_value(r.value) else {
            tracing::error!(key = %r.key, "unreadable metadata record skipped in a listing");
            continue;
        };
        let mtime = manta_types::time::iso8601_ms(rec.mtime);
        let line = match &rec.kind {
            EntryKind::Directory(_) => {
                json!({"name": rec.name, "type": "directory", "mtime": mtime})
            }
            EntryKind::Object(o) => json!({
                "name": rec.name,
                "etag": o.etag,
                "size": o.content_length,
                "type": "object",
                "mtime": mtime,
                "contentType": o.content_type,
                "contentMD5": o.content_md5,
                "durability": o.sharks.len(),
            }),
        };
        lines.push_str(&line.to_string());
        lines.push('\n');
    }
    Ok(listing_response(
        ctx,
        count,
        lines,
        entry.as_ref().map(|e| &e.rec),
    ))
}

/// `PUT` of a directory: idempotent; replaces an object at the path, as the original does.
///
/// # Errors
/// Missing or non-directory parent, preconditions, a full parent, Moray failures.
pub async fn put_directory(ctx: &Ctx) -> ApiResult<Response> {
    if super::is_virtual_dir(&ctx.path) {
        // The area roots always exist; creating one again changes nothing.
        return Ok(no_content());
    }
    let stored = headers::stored_headers(&ctx.headers)?;
    let tags = super::roles::requested_tags(ctx)?.unwrap_or_default();
    let target = WriteTarget::read(ctx).await?;
    let existing = target.existing.clone();
    ctx.check_conditions(existing.as_ref())?;
    if let Some(e) = &existing
        && e.rec.is_directory()
        && e.rec.headers == stored
        && e.rec.roles == tags
    {
        return Ok(no_content());
    }
    target.ensure_room(ctx)?;
    let mut rec = ctx.place().record(
        &ctx.owner.uuid,
        &ctx.owner.uuid,
        stored,
        EntryKind::Directory(DirectoryInfo::default()),
    );
    rec.roles = tags;
    save(ctx, &rec, target.condition(ctx)).await?;
    let mut resp = no_content();
    resp.headers_mut().insert(
        header::LAST_MODIFIED,
        HeaderValue::from_str(&headers::http_date(rec.mtime))
            .unwrap_or(HeaderValue::from_static("")),
    );
    Ok(resp)
}

/// Marks directory `key` (read as `entry`) as being removed; answers the marked record's etag.
///
/// # Errors
/// `ConcurrentRequest` when the directory changed since it was read; Moray failures.
async fn mark_removing(ctx: &Ctx, key: &str, entry: &Entry) -> ApiResult<String> {
    let mut rec = entry.rec.clone();
    if let EntryKind::Directory(info) = &mut rec.kind {
        info.removing = Some(manta_types::time::now_ms());
    }
    let opts = PutOptions::if_match(entry.etag.clone());
    ctx.fd
        .moray
        .put_object("manta", key, rec.to_value(), opts)
        .await
        .map(|r| r.etag)
        .map_err(|e| from_moray(e, &ctx.path.to_string()))
}

/// Puts a directory back as it was read (`entry`) after a removal that found it not empty,
/// unless it changed since it was marked. A mark left behind expires by itself.
async fn unmark(ctx: &Ctx, key: &str, entry: &Entry, marked: &str) {
    let opts = PutOptions::if_match(marked.to_owned());
    if let Err(e) = ctx
        .fd
        .moray
        .put_object("manta", key, entry.rec.to_value(), opts)
        .await
    {
        tracing::warn!(key, error = %e, "could not take a removal's mark off a directory");
    }
}

/// Whether directory `key` holds any entry.
///
/// # Errors
/// Moray failures.
async fn has_entries(ctx: &Ctx, key: &str) -> ApiResult<bool> {
    let filter = Filter::and(vec![
        Filter::eq("owner", ctx.owner.uuid.as_str()),
        Filter::eq("dirname", key),
    ]);
    let children = ctx
        .fd
        .moray
        .find_objects(
            "manta",
            &filter.to_string(),
            key,
            FindOptions {
                limit: Some(1),
                no_count: true,
                ..FindOptions::default()
            },
        )
        .await
        .map_err(|e| from_moray(e, &ctx.path.to_string()))?;
    Ok(!children.is_empty())
}

/// `DELETE` of an object or an empty directory. Only metadata changes here: the bytes are
/// reclaimed by the storage nodes' garbage collection from the delete log.
///
/// # Errors
/// `ResourceNotFound`, `DirectoryNotEmpty`, preconditions, Moray failures.
pub async fn delete_entry(ctx: &Ctx) -> ApiResult<Response> {
    let key = ctx.key();
    let Some(entry) = load(&ctx.fd, &key).await? else {
        return Err(err(
            ErrorCode::ResourceNotFound,
            format!("{} was not found", ctx.path),
        ));
    };
    ctx.check_conditions(Some(&entry))?;
    let cond = if entry.rec.is_directory() {
        // Writes checked against this front door's cache would stream their bytes before
        // learning the directory went: forget it now.
        ctx.fd.dirs.remove(&key);
        // Mark, check it is empty, then delete only if the mark is unchanged: a write landing
        // in it meanwhile sees the mark and waits for the outcome (objects::save).
        let marked = mark_removing(ctx, &key, &entry).await?;
        if has_entries(ctx, &key).await? {
            unmark(ctx, &key, &entry, &marked).await;
            return Err(err(
                ErrorCode::DirectoryNotEmpty,
                format!("{} is not empty", ctx.path),
            ));
        }
        EtagCondition::MustMatch(marked)
    } else if conditional::is_conditional(&ctx.headers) {
        EtagCondition::MustMatch(entry.etag.clone())
    } else {
        EtagCondition::Any
    };
    match ctx
        .fd
        .moray
        .del_object("manta", &key, DelOptions { etag: cond })
        .await
    {
        Ok(()) | Err(moray::Error::ObjectNotFound { .. }) => {
            // A write that read the marked directory meanwhile may have cached it again.
            ctx.fd.dirs.remove(&key);
            Ok(no_content())
        }
        Err(e) => Err(from_moray(e, &ctx.path.to_string())),
    }
}
