//! Canned ACLs: `private` and `public-read` on buckets and objects.
//!
//! A bucket keeps its ACL in its record; an object keeps `public-read` as the stored header
//! `x-amz-acl` (absent: private). `public-read` on an object lets anyone (anonymous callers
//! included) read it; on a bucket, list it, as in S3 (a public bucket does not make its
//! objects public). What a caller may do is decided by [`manta_auth::authorize_granted`], the
//! Manta API's one decision function, given the entry's [`Grant`].
//!
//! Accepted: `x-amz-acl` on `CreateBucket`, `PutObject`, `CopyObject` (the copy gets the
//! request's ACL, private by default, as in S3) and `CreateMultipartUpload`; `PutBucketAcl`
//! and `PutObjectAcl` with a canned ACL or a policy that amounts to one (the owner's
//! `FULL_CONTROL`, and `READ` for the `AllUsers` group); `GetBucketAcl` and `GetObjectAcl`.
//! The canned ACLs that mean "the owner only" here (`bucket-owner-read`,
//! `bucket-owner-full-control`: a bucket's owner owns every object in it) are private.
//! Anything else (`authenticated-read`, `public-read-write`, `x-amz-grant-*` headers, other
//! grantees) answers `NotImplemented` rather than being ignored.

use manta_auth::Grant;
use manta_types::MetadataRecord;
use s3s::dto::{
    AccessControlPolicy, GetBucketAclInput, GetBucketAclOutput, GetObjectAclInput,
    GetObjectAclOutput, Grantee, Owner, Permission, PutBucketAclInput, PutBucketAclOutput,
    PutObjectAclInput, PutObjectAclOutput, Type,
};
use s3s::{S3Request, S3Response};
use serde::{Deserialize, Serialize};

use super::error::{S3Result, conditional_conflict, not_implemented};
use super::service::{S3Api, bucket_of};

/// The stored header holding an object's canned ACL (only `public-read` is stored).
pub const ACL_HEADER: &str = "x-amz-acl";

/// The group URI S3 names "everyone" by.
const ALL_USERS: &str = "http://acs.amazonaws.com/groups/global/AllUsers";

/// A canned ACL this service keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CannedAcl {
    /// The owner only.
    #[default]
    Private,
    /// The owner, and anyone may read.
    PublicRead,
}

impl CannedAcl {
    /// True for the default (bucket records leave it out).
    pub fn is_private(&self) -> bool {
        *self == CannedAcl::Private
    }

    /// What it grants everyone, for the decision function.
    pub fn grant(self) -> Grant {
        match self {
            CannedAcl::Private => Grant::None,
            CannedAcl::PublicRead => Grant::PublicRead,
        }
    }

    /// An object's ACL, from its stored headers.
    pub fn of_object(rec: &MetadataRecord) -> CannedAcl {
        match rec.headers.get(ACL_HEADER).map(String::as_str) {
            Some("public-read") => CannedAcl::PublicRead,
            _ => CannedAcl::Private,
        }
    }

    /// Records this ACL in an object's stored headers.
    pub fn store(self, headers: &mut std::collections::BTreeMap<String, String>) {
        match self {
            CannedAcl::Private => {
                headers.remove(ACL_HEADER);
            }
            CannedAcl::PublicRead => {
                headers.insert(ACL_HEADER.into(), "public-read".into());
            }
        }
    }
}

/// The `x-amz-grant-*` fields of a request's input (distinct types with the same fields,
/// hence a macro): those of an object write, or with `write` also `x-amz-grant-write` (buckets
/// and `Put*Acl`).
macro_rules! grants_of {
    ($i:expr) => {
        [
            $i.grant_full_control.as_ref(),
            $i.grant_read.as_ref(),
            $i.grant_read_acp.as_ref(),
            $i.grant_write_acp.as_ref(),
        ]
    };
    ($i:expr, write) => {
        [
            $i.grant_full_control.as_ref(),
            $i.grant_read.as_ref(),
            $i.grant_read_acp.as_ref(),
            $i.grant_write.as_ref(),
            $i.grant_write_acp.as_ref(),
        ]
    };
}
pub(crate) use grants_of;

/// [`requested`] for a request's input: its `acl` and its grants ([`grants_of`]).
macro_rules! requested_acl {
    ($i:expr $(, $write:ident)?) => {
        $crate::s3::acl::requested(
            $i.acl.as_ref().map(|a| a.as_str()),
            &$crate::s3::acl::grants_of!($i $(, $write)?),
        )
    };
}
pub(crate) use requested_acl;

/// The ACL a request asks for: its canned `x-amz-acl` (private when absent), refusing
/// `x-amz-grant-*` headers.
///
/// # Errors
/// `NotImplemented` for a canned ACL other than those this service keeps, and for grant
/// headers.
pub fn requested(canned: Option<&str>, grants: &[Option<&String>]) -> S3Result<CannedAcl> {
    if grants.iter().any(Option::is_some) {
        return Err(not_implemented(
            "Granting access with x-amz-grant-* headers",
        ));
    }
    match canned.map(str::trim) {
        None | Some("private" | "bucket-owner-read" | "bucket-owner-full-control") => {
            Ok(CannedAcl::Private)
        }
        Some("public-read") => Ok(CannedAcl::PublicRead),
        Some(other) => Err(not_implemented(&format!("The canned ACL {other:?}"))),
    }
}

/// The canned ACL an access control policy amounts to: the owner's `FULL_CONTROL`, with or
/// without `READ` for `AllUsers`.
///
/// # Errors
/// `NotImplemented` for any other policy.
fn of_policy(p: &AccessControlPolicy, owner: &str) -> S3Result<CannedAcl> {
    let mut owner_full = false;
    let mut public = false;
    for g in p.grants.iter().flatten() {
        let (Some(who), Some(what)) = (&g.grantee, &g.permission) else {
            return Err(not_implemented("A grant without grantee or permission"));
        };
        let is_owner =
            who.type_.as_str() == Type::CANONICAL_USER && who.id.as_deref() == Some(owner);
        let is_everyone =
            who.type_.as_str() == Type::GROUP && who.uri.as_deref() == Some(ALL_USERS);
        match (is_owner, is_everyone, what.as_str()) {
            (true, _, Permission::FULL_CONTROL) => owner_full = true,
            (_, true, Permission::READ) => public = true,
            _ => {
                return Err(not_implemented(
                    "Access control policies other than the owner's FULL_CONTROL and READ for AllUsers",
                ));
            }
        }
    }
    if !owner_full {
        return Err(not_implemented(
            "An access control policy that takes the owner's FULL_CONTROL away",
        ));
    }
    Ok(if public {
        CannedAcl::PublicRead
    } else {
        CannedAcl::Private
    })
}

/// The ACL of a `Put*Acl` request: canned, or a policy in the body (one of the two).
fn put_request(
    canned: Option<&str>,
    policy: Option<&AccessControlPolicy>,
    grants: &[Option<&String>],
    owner: &str,
) -> S3Result<CannedAcl> {
    match policy {
        Some(p) if canned.is_none() && grants.iter().all(Option::is_none) => of_policy(p, owner),
        Some(_) => Err(s3s::s3_error!(
            UnexpectedContent,
            "This request does not support content alongside x-amz-acl or grant headers"
        )),
        None => requested(canned, grants),
    }
}

/// The grants S3 lists for `acl` on something `owner` owns.
fn grants(owner: &Owner, acl: CannedAcl) -> Vec<s3s::dto::Grant> {
    let mut g = vec![s3s::dto::Grant {
        grantee: Some(Grantee {
            type_: Type::from_static(Type::CANONICAL_USER),
            id: owner.id.clone(),
            display_name: owner.display_name.clone(),
            email_address: None,
            uri: None,
        }),
        permission: Some(Permission::from_static(Permission::FULL_CONTROL)),
    }];
    if acl == CannedAcl::PublicRead {
        g.push(s3s::dto::Grant {
            grantee: Some(Grantee {
                type_: Type::from_static(Type::GROUP),
                uri: Some(ALL_USERS.into()),
                id: None,
                display_name: None,
                email_address: None,
            }),
            permission: Some(Permission::from_static(Permission::READ)),
        });
    }
    g
}

/// `GetBucketAcl`.
///
/// # Errors
/// As the access check.
pub async fn get_bucket_acl(
    _api: &S3Api,
    req: S3Request<GetBucketAclInput>,
) -> S3Result<S3Response<GetBucketAclOutput>> {
    let b = bucket_of(&req, &req.input.bucket)?.rec;
    let owner = super::buckets::owner(&b.owner, &b.owner_login);
    Ok(S3Response::new(GetBucketAclOutput {
        grants: Some(grants(&owner, b.acl)),
        owner: Some(owner),
    }))
}

/// `PutBucketAcl` with a canned ACL (or a policy amounting to one).
///
/// # Errors
/// `NotImplemented` for other ACLs; `ConditionalRequestConflict` when the bucket changed
/// meanwhile.
pub async fn put_bucket_acl(
    api: &S3Api,
    req: S3Request<PutBucketAclInput>,
) -> S3Result<S3Response<PutBucketAclOutput>> {
    let b = bucket_of(&req, &req.input.bucket)?;
    let i = &req.input;
    let acl = put_request(
        i.acl.as_ref().map(|a| a.as_str()),
        i.access_control_policy.as_ref(),
        &grants_of!(i, write),
        &b.rec.owner,
    )?;
    let mut rec = b.rec.clone();
    rec.acl = acl;
    let cond = moray::EtagCondition::MustMatch(b.etag.clone());
    if !api.meta.put_bucket(&rec, cond).await? {
        return Err(conditional_conflict());
    }
    tracing::info!(bucket = %rec.name, ?acl, "bucket ACL set");
    Ok(S3Response::new(PutBucketAclOutput::default()))
}

/// `GetObjectAcl`.
///
/// # Errors
/// `NoSuchKey`.
pub async fn get_object_acl(
    api: &S3Api,
    req: S3Request<GetObjectAclInput>,
) -> S3Result<S3Response<GetObjectAclOutput>> {
    let b = bucket_of(&req, &req.input.bucket)?.rec;
    let i = &req.input;
    let version = i.version_id.as_deref();
    let e = super::objects::existing_version(api, &b.owner, &b.name, &i.key, version).await?;
    let owner = super::buckets::owner(&b.owner, &b.owner_login);
    Ok(S3Response::new(GetObjectAclOutput {
        grants: Some(grants(&owner, CannedAcl::of_object(&e.rec))),
        owner: Some(owner),
        request_charged: None,
    }))
}

/// `PutObjectAcl` with a canned ACL (or a policy amounting to one): the record is rewritten
/// with the new ACL if it did not change meanwhile.
///
/// # Errors
/// `NoSuchKey`, `NotImplemented` for other ACLs, `ConditionalRequestConflict`.
pub async fn put_object_acl(
    api: &S3Api,
    req: S3Request<PutObjectAclInput>,
) -> S3Result<S3Response<PutObjectAclOutput>> {
    let b = bucket_of(&req, &req.input.bucket)?.rec;
    let i = &req.input;
    let acl = put_request(
        i.acl.as_ref().map(|a| a.as_str()),
        i.access_control_policy.as_ref(),
        &grants_of!(i, write),
        &b.owner,
    )?;
    super::objects::rewrite_headers(api, &b, (&i.key, i.version_id.as_deref()), |h| acl.store(h))
        .await?;
    Ok(S3Response::new(PutObjectAclOutput::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::s3::testing::code;

    #[test]
    fn canned_acls_kept_refused_or_private() {
        for (asked, want) in [
            (None, "Private"),
            (Some("private"), "Private"),
            (Some("bucket-owner-full-control"), "Private"),
            (Some("public-read"), "PublicRead"),
            (Some("public-read-write"), "NotImplemented"),
            (Some("authenticated-read"), "NotImplemented"),
            (Some("nonsense"), "NotImplemented"),
        ] {
            assert_eq!(code(requested(asked, &[])), want, "{asked:?}");
        }
        let g = "id=123".to_owned();
        assert_eq!(code(requested(None, &[Some(&g)])), "NotImplemented");
    }

    #[test]
    fn policies_that_amount_to_a_canned_acl() {
        let owner = Owner {
            id: Some("me".into()),
            display_name: Some("jill".into()),
        };
        for acl in [CannedAcl::Private, CannedAcl::PublicRead] {
            let p = AccessControlPolicy {
                grants: Some(grants(&owner, acl)),
                owner: Some(owner.clone()),
            };
            assert_eq!(of_policy(&p, "me").unwrap(), acl);
            // Someone else's FULL_CONTROL is not ours.
            assert_eq!(code(of_policy(&p, "you")), "NotImplemented");
        }
        let empty = AccessControlPolicy {
            grants: Some(vec![]),
            owner: Some(owner),
        };
        assert_eq!(code(of_policy(&empty, "me")), "NotImplemented");
    }

    #[test]
    fn an_objects_acl_lives_in_its_stored_headers() {
        let mut h = std::collections::BTreeMap::new();
        CannedAcl::PublicRead.store(&mut h);
        assert_eq!(h.get(ACL_HEADER).map(String::as_str), Some("public-read"));
        CannedAcl::Private.store(&mut h);
        assert!(h.is_empty());
    }
}
