//! Sub-users and role tags in the Manta API: what a sub-user's request acts on (the action and
//! the role tags that decide it), the decision ([`manta_auth::authz::authorize_resource`]),
//! logged with the rule that allowed or the reason that denied it, and the `role-tag` header
//! of writes and reads.
//!
//! The entry that decides: the entry itself to read it (`getobject`, `getdirectory`), to
//! change its metadata (`putmetadata`) or to delete it (`deleteobject`, `deletedirectory`);
//! the parent directory to make an entry in it (`putobject`, `putdirectory`, `putsnaplink`),
//! overwrites included. A path with no entry is decided as a read or delete of an object by its
//! parent's tags (so a sub-user learns nothing of a directory its roles cannot read). The area
//! roots `/:login/stor` and `/:login/public` have no entry; their tags are kept on the account
//! ([`set_area_tags`]), so `mchmod +ROLE /:login/stor` lets a role work at the top of it.
//! Sub-users may not use the jobs API, multipart uploads or the `/:login/buckets` view.

use http::{HeaderMap, HeaderValue, Method};
use manta_auth::authz::{Grant, Resource, authorize_logged};
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
    add_tags(out, &rec.roles);
}

/// Adds `role-tag` to a read's headers when `tags` are some.
pub fn add_tags(out: &mut HeaderMap, tags: &[String]) {
    if !tags.is_empty()
        && let Ok(v) = HeaderValue::from_str(&tags.join(","))
    {
        out.insert("role-tag", v);
    }
}

/// The role tags of an area root of the account (kept on the account: the roots have no
/// entry); none for any other path.
pub fn area_tags<'a>(owner: &'a manta_auth::Account, path: &MantaPath) -> &'a [String] {
    match path.area() {
        Some(area) if path.is_area_root() => owner
            .area_roles
            .get(area.as_str())
            .map_or(&[], Vec::as_slice),
        _ => &[],
    }
}

/// Whether an area root may be tagged: those a sub-user may write in.
pub fn taggable_root(path: &MantaPath) -> bool {
    path.is_area_root() && matches!(path.area(), Some(Area::Stor | Area::Public))
}

/// `PUT <area root>?metadata=true` naming only `role-tag` (what `mchmod` sends): the root's
/// tags are kept on the account.
///
/// # Errors
/// `InvalidRoleTag`; `ServiceUnavailable` when the account cannot be written.
pub async fn set_area_tags(ctx: &Ctx, tags: &[String]) -> ApiResult<()> {
    let area = ctx.path.area().map_or("", |a| a.as_str());
    let admin = manta_accounts::AccountAdmin::new(ctx.fd.moray.system());
    admin
        .set_area_roles(&ctx.owner.login, area, tags)
        .await
        .map_err(|e| match e {
            manta_accounts::AdminError::Access(m) => err(ErrorCode::InvalidRoleTag, m),
            other => err(
                ErrorCode::ServiceUnavailable,
                format!("account store: {other}"),
            ),
        })?;
    info!(path = %ctx.path, roles = ?tags, "area root role tags set");
    Ok(())
}

/// The tags of the entry at `key` (an area root's are the account's; none for a missing
/// entry), and whether it is a directory (`None`: no entry).
async fn tags_at(
    ctx: &Ctx,
    path: &manta_types::MantaPath,
) -> ApiResult<(Vec<String>, Option<bool>)> {
    if path.is_account_root() || is_virtual_dir(path) {
        return Ok((area_tags(&ctx.owner, path).to_vec(), Some(true)));
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
    authorize_logged(
        &ctx.caller,
        &ctx.owner,
        path,
        &method,
        Grant::None,
        r,
        &conditions,
    )
}
