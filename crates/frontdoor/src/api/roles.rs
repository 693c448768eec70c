//! Sub-users and role tags in the Manta API: what a sub-user's request acts on (the action and
//! the role tags that decide it), the decision ([`manta_auth::authz::authorize_resource`]),
//! logged with the rule that allowed or the reason that denied it, and the `role-tag` header
//! of writes and reads.
//!
//! The entry that decides: the entry itself to read it (`getobject`, `getdirectory`), to
//! change its metadata (`putmetadata`) or to delete it (`deleteobject`, `deletedirectory`);
//! the parent directory to make an entry in it (`putobject`, `putdirectory`, `putsnaplink`),
//! overwrites included. A path with no entry is decided as a read or delete of an object by its
//! parent's tags (so a sub-user learns nothing of a directory its roles cannot read). Area
//! roots carry no tags. Sub-users may not use the jobs API, multipart uploads or the
//! `/:login/buckets` view.

use http::{HeaderMap, HeaderValue, Method};
use manta_auth::authz::{Grant, Resource, authorize_resource};
use manta_auth::rbac::{Action, Conditions};
use manta_types::{Area, ErrorCode, MantaPath, MetadataRecord};
use tracing::{info, warn};

use super::headers::{self, EntryType};
use super::{Ctx, is_virtual_dir, load};
use crate::error::{ApiResult, err};

/// The role tags a write asks for (`role-tag`), checked against the owner's roles; `None`
/// when the header is absent.
///
/// # Errors
/// `InvalidRoleTag` naming a role the account does not have.
pub fn requested_tags(ctx: &Ctx) -> ApiResult<Option<Vec<String>>> {
    ctx.header("role-tag")
        .map(|v| manta_auth::rbac::parse_role_tags(&ctx.owner, v))
        .transpose()
}

/// Adds `role-tag` to a read's headers when the entry has tags.
pub fn add_role_tag(out: &mut HeaderMap, rec: &MetadataRecord) {
    if !rec.roles.is_empty()
        && let Ok(v) = HeaderValue::from_str(&rec.roles.join(","))
    {
        out.insert("role-tag", v);
    }
}

/// The tags of the entry at `key` (none for an area root or a missing entry), and whether it
/// is a directory (`None`: no entry).
async fn tags_at(
    ctx: &Ctx,
    path: &manta_types::MantaPath,
) -> ApiResult<(Vec<String>, Option<bool>)> {
    if path.is_account_root() || is_virtual_dir(path) {
        return Ok((Vec::new(), Some(true)));
    }
    Ok(
        match load(&ctx.fd, &path.storage_key(&ctx.owner.uuid)).await? {
            Some(e) => (e.rec.roles.clone(), Some(e.rec.is_directory())),
            None => (Vec::new(), None),
        },
    )
}

/// What the request acts on, the tags that decide it, and whether the entry is missing (a
/// read or delete of nothing, decided by its parent's tags alone: the answer is a 404).
async fn resource(ctx: &Ctx) -> ApiResult<(Action, Vec<String>, bool)> {
    let parent = ctx.path.parent();
    let parent_tags = || async {
        match &parent {
            Some(p) => tags_at(ctx, p).await.map(|(t, _)| t),
            None => Ok(Vec::new()),
        }
    };
    let metadata = ctx.param("metadata") == Some("true");
    Ok(match ctx.method {
        Method::PUT if metadata => (Action::PutMetadata, tags_at(ctx, &ctx.path).await?.0, false),
        Method::PUT => {
            let action = match headers::entry_type(&ctx.headers) {
                EntryType::Directory => Action::PutDirectory,
                EntryType::Link => Action::PutSnapLink,
                EntryType::Object => Action::PutObject,
            };
            (action, parent_tags().await?, false)
        }
        Method::DELETE => match tags_at(ctx, &ctx.path).await? {
            (t, Some(true)) => (Action::DeleteDirectory, t, false),
            (t, Some(false)) => (Action::DeleteObject, t, false),
            (_, None) => (Action::DeleteObject, parent_tags().await?, true),
        },
        _ => match tags_at(ctx, &ctx.path).await? {
            (t, Some(true)) => (Action::GetDirectory, t, false),
            (t, Some(false)) => (Action::GetObject, t, false),
            (_, None) => (Action::GetObject, parent_tags().await?, true),
        },
    })
}

/// Decides a sub-user's request (nothing to do for anyone else: [`super::admit`] decided).
///
/// # Errors
/// `AuthorizationFailed` for what sub-users may not use; `NoMatchingRoleTag`,
/// `MissingPermission`.
pub async fn check(ctx: &Ctx) -> ApiResult<()> {
    if ctx.caller.user().is_none() {
        return Ok(());
    }
    let who = ctx.caller.name();
    let barred = match ctx.path.area() {
        Some(Area::Jobs) => Some("the jobs API and job outputs"),
        Some(Area::Uploads) => Some("multipart uploads"),
        Some(Area::Buckets) => Some("the buckets view"),
        _ => None,
    };
    if let Some(what) = barred {
        warn!(caller = %who, path = %ctx.path, "denied: sub-users may not use {what}");
        return Err(err(
            ErrorCode::AuthorizationFailed,
            format!("{who} is a sub-user; sub-users may not use {what}"),
        ));
    }
    let (action, tags, missing) = resource(ctx).await?;
    match decide(ctx, &ctx.path, action, &tags) {
        // Nothing is there, and the caller may see into its directory: the answer is a 404
        // (clients look before they write: a refusal there would stop a permitted write).
        Err(e) if missing && e.code == ErrorCode::MissingPermission => {
            info!(caller = %ctx.caller.name(), path = %ctx.path, "allowed: no such entry, in a directory tagged with an active role");
            Ok(())
        }
        other => other,
    }
}

/// Whether a sub-user's request may read `source` (the object a SnapLink copies): a link is
/// a read of its source.
///
/// # Errors
/// `NoMatchingRoleTag`, `MissingPermission`.
pub fn check_link_source(ctx: &Ctx, path: &MantaPath, source: &MetadataRecord) -> ApiResult<()> {
    if ctx.caller.user().is_none() {
        return Ok(());
    }
    decide(ctx, path, Action::GetObject, &source.roles)
}

/// The decision for `action` on `path` tagged `tags`, logged with the request id (the span's)
/// and the rule that allowed it or the reason it was denied.
fn decide(ctx: &Ctx, path: &MantaPath, action: Action, tags: &[String]) -> ApiResult<()> {
    let who = ctx.caller.name();
    let conditions = Conditions {
        source_ip: ctx.source_ip,
        now_ms: manta_types::time::now_ms(),
    };
    let method = if action == Action::GetObject {
        Method::GET
    } else {
        ctx.method.clone()
    };
    let r = Resource { action, tags };
    match authorize_resource(
        &ctx.caller,
        &ctx.owner,
        path,
        &method,
        Grant::None,
        r,
        &conditions,
    ) {
        Ok(Some(allowed)) => {
            info!(
                caller = %who,
                action = action.as_str(),
                path = %path,
                role = %allowed.role,
                policy = %allowed.policy,
                rule = %allowed.rule,
                "allowed"
            );
            Ok(())
        }
        Ok(None) => {
            info!(caller = %who, action = action.as_str(), path = %path, "allowed: anyone may read this");
            Ok(())
        }
        Err(e) => {
            warn!(
                caller = %who,
                action = action.as_str(),
                path = %path,
                roles = ?ctx.caller.user().map(|u| u.roles.clone()),
                tags = ?tags,
                code = ?e.code,
                "denied: {}",
                e.message
            );
            Err(e)
        }
    }
}
