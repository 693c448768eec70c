//! SnapLinks: `PUT` with `Content-Type: application/json; type=link` and
//! `Location: /:login/stor/source` gives the source's bytes a new name. The new record copies
//! the source's (same object id, same copies, same checksum): no byte moves, and later changes
//! to either name do not affect the other.

use axum::response::Response;
use http::{HeaderValue, Method, header};
use manta_types::{ErrorCode, MantaPath};

use super::objects::{WriteTarget, save};
use super::{Ctx, account_named, authorize, headers, is_virtual_dir, load, no_content};
use crate::error::{ApiResult, err};

/// `PUT` of a link.
///
/// # Errors
/// `LocationRequired`, `InvalidLink`, `SourceObjectNotFound`, `LinkNotObject`, and the
/// errors of any write.
pub async fn put_link(ctx: &Ctx) -> ApiResult<Response> {
    if is_virtual_dir(&ctx.path) {
        return Err(err(
            ErrorCode::OperationNotAllowedOnRootDirectory,
            format!("PUT is not allowed on {}", ctx.path),
        ));
    }
    let location = ctx.header("location").ok_or_else(|| {
        err(
            ErrorCode::LocationRequired,
            "An HTTP Location header must be specified",
        )
    })?;
    let expanded = manta_types::expand_tilde(location, ctx.caller_login());
    let src = MantaPath::from_url_path(&expanded)
        .ok()
        .filter(|p| !p.is_account_root() && !is_virtual_dir(p))
        .ok_or_else(|| {
            err(
                ErrorCode::InvalidLink,
                format!("{location} is an invalid link"),
            )
        })?;
    // The source's owner, and whether the caller may read there.
    let src_owner = if src.login() == ctx.owner.login {
        ctx.owner.clone()
    } else {
        account_named(&ctx.fd, src.login(), || {
            err(
                ErrorCode::SourceObjectNotFound,
                format!("{location} was not found"),
            )
        })
        .await?
    };
    authorize(&ctx.caller, &src_owner, &src, &Method::GET).map_err(|_| {
        err(
            ErrorCode::SourceObjectNotFound,
            format!("{location} was not found"),
        )
    })?;
    let source = load(&ctx.fd, &src.storage_key(&src_owner.uuid))
        .await?
        .ok_or_else(|| {
            err(
                ErrorCode::SourceObjectNotFound,
                format!("{location} was not found"),
            )
        })?;
    if source.rec.is_directory() {
        return Err(err(
            ErrorCode::LinkNotObject,
            format!("{location} is not an object"),
        ));
    }

    if ctx.caller.user().is_some() && src_owner.uuid != ctx.owner.uuid {
        return Err(err(
            ErrorCode::AuthorizationFailed,
            format!(
                "{} is a sub-user; it may link only its account's objects",
                ctx.caller.name()
            ),
        ));
    }
    super::roles::check_link_source(ctx, &src, &source.rec)?;
    let tags = super::roles::requested_tags(ctx)?;
    let target = WriteTarget::for_put(ctx).await?;
    let mut rec = ctx.place().relink(source.rec.clone(), &ctx.owner.uuid);
    // A link's tags: those asked for, else the source's when it is the same account's (another
    // account's role names mean nothing here).
    rec.roles = match tags {
        Some(t) => t,
        None if src_owner.uuid == ctx.owner.uuid => source.rec.roles.clone(),
        None => Vec::new(),
    };
    // Headers given with the link request add to (and override) the source's.
    rec.headers.extend(headers::stored_headers(&ctx.headers)?);
    if let manta_types::EntryKind::Object(o) = &mut rec.kind {
        o.created_from = Some(source.rec.key.clone());
    }
    save(ctx, &rec, target.condition(ctx)).await?;
    let mut resp = no_content();
    if let Some(o) = rec.object()
        && let Ok(v) = HeaderValue::from_str(&o.etag)
    {
        resp.headers_mut().insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&headers::http_date(rec.mtime)) {
        resp.headers_mut().insert(header::LAST_MODIFIED, v);
    }
    Ok(resp)
}
