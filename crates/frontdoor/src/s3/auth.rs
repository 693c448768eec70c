//! Who is calling, and whether they may touch the bucket: the `s3s` authentication hook
//! (the secret of an access key, from the account that holds it, for itself or for one of
//! its sub-users) and access hook (an account reaches only the buckets it owns; its
//! sub-users only what their roles allow).
//!
//! Signatures are verified by `s3s` with the secret [`Keys`] returns. A looked-up account is
//! reused for `account_cache_ttl` (the same bound on how long a removed key keeps working as
//! the Manta API has); [`Owners`] then maps the verified key to its account from that cache
//! (a key never moves between accounts), so a request costs one account lookup at most.
//!
//! [`Owners::check`] runs for every operation. A bucket that does not exist is
//! `NoSuchBucket`. Of a bucket owned by another account, an unsigned caller, or one signed by
//! another account, may do only what the owner granted everyone (list it, read its objects,
//! by ACL or bucket policy); anything else is `AccessDenied`. It leaves the [`Caller`] and the
//! [`BucketRef`] in the request's extensions for the operation, and names the operation for
//! the metrics.
//!
//! A sub-user's key acts with the sub-user's active roles (those its `role` header names,
//! else its default roles). S3 has no directories: the bucket is what is tagged. The owner
//! tags it with `mchmod +ROLE /:login/buckets/<bucket>`, and a sub-user may do to the bucket
//! and its objects what one of its active roles, named in the bucket's tags, has a rule for
//! ([`check_sub_user`], through the Manta API's decision function): `getobject` to read an
//! object, `getdirectory` to list, `putobject` to write (copies and multipart uploads too),
//! `deleteobject`, `putmetadata` for tags and ACLs. A copy also reads its source, decided by
//! the source bucket's tags. Making, removing and configuring buckets, and listing them, are
//! the account's alone.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use manta_auth::{Account, AccountStore as _};
use manta_util::cache::TtlCache;
use s3s::S3ErrorCode;
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::path::S3Path;

use super::error::{S3Result, access_denied, no_such_bucket, s3err, unavailable};
use super::meta::{BucketRecord, BucketState, Meta, Versioned};
use crate::state::Frontdoor;
use manta_auth::rbac::Action;

/// Who signed a request (in the request extensions): the account, or a sub-user of it
/// acting through its roles, as the decision function knows them.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The caller.
    pub who: manta_auth::Caller,
    /// The client's address, for the conditions of roles' rules.
    pub source_ip: Option<std::net::IpAddr>,
}

impl Caller {
    /// The account (the caller's, or its sub-user's).
    pub fn account(&self) -> Option<&Account> {
        self.who.account()
    }
}

/// What a sub-user's S3 operation does, in the words of the roles' rules: the action, and the
/// method it is decided as. `None`: only the account itself may (making and removing buckets,
/// their ACLs, policies and versioning, listing the account's buckets).
fn sub_user_action(op: &str) -> Option<(Action, http::Method)> {
    use http::Method;
    Some(match op {
        "GetObject"
        | "HeadObject"
        | "GetObjectAttributes"
        | "GetObjectTagging"
        | "GetObjectAcl" => (Action::GetObject, Method::GET),
        "ListObjects"
        | "ListObjectsV2"
        | "ListObjectVersions"
        | "ListMultipartUploads"
        | "HeadBucket"
        | "GetBucketLocation" => (Action::GetDirectory, Method::GET),
        "PutObject"
        | "CopyObject"
        | "PostObject"
        | "CreateMultipartUpload"
        | "UploadPart"
        | "UploadPartCopy"
        | "CompleteMultipartUpload"
        | "AbortMultipartUpload"
        | "ListParts" => (Action::PutObject, Method::PUT),
        "DeleteObject" | "DeleteObjects" => (Action::DeleteObject, Method::DELETE),
        "PutObjectTagging" | "DeleteObjectTagging" | "PutObjectAcl" => {
            (Action::PutMetadata, Method::PUT)
        }
        _ => return None,
    })
}

/// Decides a sub-user's `action` on `bucket` (its object `key`, if any) by the bucket's role
/// tags and the roles' rules, through the one decision function (which logs it). Nothing to
/// decide for the account itself.
///
/// # Errors
/// `AccessDenied`, with the reason.
pub fn check_sub_user(
    caller: &Caller,
    bucket: &BucketRecord,
    key: Option<&str>,
    (action, method): (Action, http::Method),
) -> S3Result<()> {
    let Some(owner) = caller.account() else {
        return Err(access_denied("Access Denied"));
    };
    if caller.who.user().is_none() {
        return Ok(());
    }
    let path = manta_path(&owner.login, &bucket.name, key)?;
    let conditions = manta_auth::rbac::Conditions {
        source_ip: caller.source_ip,
        now_ms: manta_types::time::now_ms(),
    };
    let resource = manta_auth::authz::Resource {
        action,
        tags: &bucket.roles,
    };
    manta_auth::authz::authorize_logged(
        &caller.who,
        owner,
        &path,
        &method,
        manta_auth::Grant::None,
        resource,
        &conditions,
    )
    .map_err(|e| access_denied(format!("Access Denied: {}", e.message)))
}

/// The bucket a request addresses, as read by the access check (in the request extensions).
#[derive(Debug, Clone)]
pub struct BucketRef(pub Versioned<BucketRecord>);

/// Where the access check writes the operation name, for the metrics label.
#[derive(Debug, Clone, Default)]
pub struct OpSlot(pub Arc<Mutex<Option<&'static str>>>);

impl OpSlot {
    /// The operation name, once known.
    pub fn get(&self) -> Option<&'static str> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, name: &'static str) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(name);
    }
}

/// The operations this service implements, by name (a fixed set of labels for the metrics;
/// anything else is `S3Other`).
pub const OPERATIONS: &[&str] = &[
    "AbortMultipartUpload",
    "CompleteMultipartUpload",
    "CopyObject",
    "CreateBucket",
    "CreateMultipartUpload",
    "DeleteBucket",
    "DeleteBucketPolicy",
    "DeleteObject",
    "DeleteObjectTagging",
    "DeleteObjects",
    "GetBucketAcl",
    "GetBucketLocation",
    "GetBucketPolicy",
    "GetBucketVersioning",
    "GetObject",
    "GetObjectAcl",
    "GetObjectAttributes",
    "GetObjectTagging",
    "HeadBucket",
    "HeadObject",
    "ListBuckets",
    "ListMultipartUploads",
    "ListObjectVersions",
    "ListObjects",
    "ListObjectsV2",
    "ListParts",
    "PostObject",
    "PutBucketAcl",
    "PutBucketPolicy",
    "PutBucketVersioning",
    "PutObject",
    "PutObjectAcl",
    "PutObjectTagging",
    "UploadPart",
    "UploadPartCopy",
];

/// The static label of an operation name.
pub fn static_op(name: &str) -> &'static str {
    OPERATIONS
        .iter()
        .find(|o| **o == name)
        .copied()
        .unwrap_or("S3Other")
}

/// Accounts by access key id, with the time they were read.
#[derive(Debug)]
pub struct KeyCache {
    map: TtlCache<Account>,
}

impl Default for KeyCache {
    fn default() -> Self {
        KeyCache {
            map: TtlCache::new(100_000),
        }
    }
}

impl KeyCache {
    /// The account holding `access_key`, read again when the cached one is older than
    /// `max_age`.
    ///
    /// # Errors
    /// `ServiceUnavailable` when the account store fails.
    pub async fn account(
        &self,
        fd: &Frontdoor,
        access_key: &str,
        max_age: Duration,
    ) -> S3Result<Option<Account>> {
        if let Some(a) = self.map.get(access_key, max_age) {
            return Ok(Some(a));
        }
        let found = fd
            .accounts
            .by_s3_key(access_key)
            .await
            .map_err(|e| unavailable(format!("account store: {e}")))?;
        match &found {
            Some(a) => self.map.insert(access_key, a.clone()),
            None => self.map.remove(access_key),
        }
        Ok(found)
    }
}

/// The answer to an access key id that no account holds.
fn unknown_key() -> s3s::S3Error {
    s3err(
        S3ErrorCode::InvalidAccessKeyId,
        "The AWS Access Key Id you provided does not exist in our records.",
    )
}

/// The authentication hook: access key id to secret.
#[derive(Debug)]
pub struct Keys {
    /// The service.
    pub fd: Arc<Frontdoor>,
    /// Shared with [`Owners`].
    pub cache: Arc<KeyCache>,
}

#[async_trait]
impl S3Auth for Keys {
    async fn get_secret_key(&self, access_key: &str) -> s3s::S3Result<SecretKey> {
        let account = self
            .cache
            .account(&self.fd, access_key, self.fd.cfg.account_cache_ttl)
            .await?
            .ok_or_else(unknown_key)?;
        if account.blocked {
            return Err(access_denied("This account is blocked"));
        }
        let (key, _) = account.s3_key(access_key).ok_or_else(unknown_key)?;
        Ok(SecretKey::from(key.secret_access_key.as_str()))
    }
}

/// The access hook: bucket ownership.
#[derive(Debug)]
pub struct Owners {
    /// The service.
    pub fd: Arc<Frontdoor>,
    /// Shared with [`Keys`].
    pub cache: Arc<KeyCache>,
    /// Bucket records.
    pub meta: Arc<Meta>,
}

/// How old a cached key-to-account mapping may be for the access check: the signature was
/// just verified against a fresh enough copy, and a key never changes account.
const MAPPING_MAX_AGE: Duration = Duration::from_secs(60);

/// An anonymous request that may read what the bucket's owner made `public-read` (in the
/// request extensions, with the owner).
#[derive(Debug, Clone)]
pub struct Anonymous(pub Account);

/// The Manta path an S3 bucket or object is known by (`/:login/buckets/<bucket>[/objects/<key>]`),
/// for the decision function; the bucket's when a key is not a path the Manta API can name.
pub fn manta_path(
    login: &str,
    bucket: &str,
    key: Option<&str>,
) -> S3Result<manta_types::MantaPath> {
    let bucket_path = format!("/{login}/buckets/{bucket}");
    if let Some(k) = key
        && let Ok(p) = manta_types::MantaPath::parse(&format!("{bucket_path}/objects/{k}"))
    {
        return Ok(p);
    }
    manta_types::MantaPath::parse(&bucket_path)
        .map_err(|e| super::error::internal(format!("bucket {bucket} has no Manta path: {e}")))
}

/// May an anonymous caller read (`GET`) `owner`'s bucket (list it) or object `key` in it,
/// given what the owner granted on it? Decided by the Manta API's decision function.
///
/// # Errors
/// `AccessDenied`.
pub fn anonymous_read(
    owner: &Account,
    bucket: &str,
    key: Option<&str>,
    grant: manta_auth::Grant,
) -> S3Result<()> {
    let path = manta_path(&owner.login, bucket, key)?;
    manta_auth::authorize_granted(
        &manta_auth::Caller::Anonymous,
        owner,
        &path,
        &http::Method::GET,
        grant,
    )
    .map_err(|_| access_denied("Access Denied"))
}

/// What anyone may ask of a bucket that is not theirs: to list it (`Some(true)`: decided by
/// what its owner granted on the bucket) or to read an object in it (`Some(false)`: decided
/// once the object's ACL is read). `None`: nothing.
fn public_op(path: &S3Path, op: &str) -> Option<bool> {
    match path {
        S3Path::Bucket { .. } if matches!(op, "ListObjects" | "ListObjectsV2") => Some(true),
        S3Path::Object { .. } if matches!(op, "GetObject" | "HeadObject") => Some(false),
        _ => None,
    }
}

impl Owners {
    /// The owner of a bucket someone else reads (unsigned, or signed by another account),
    /// once a listing (`listing`) is known to be granted to everyone; reading an object is
    /// decided once its ACL is read.
    ///
    /// # Errors
    /// `NoSuchBucket` when the owner is gone; `AccessDenied`.
    async fn public_reading(&self, b: &BucketRecord, listing: bool) -> S3Result<Account> {
        let owner = self
            .fd
            .accounts
            .by_uuid(&b.owner)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| no_such_bucket(&b.name))?;
        if listing {
            anonymous_read(&owner, &b.name, None, super::policy::granted(b, None))?;
        }
        Ok(owner)
    }

    /// An anonymous request: it may list a `public-read` bucket, and read (`GetObject`,
    /// `HeadObject`) an object of any bucket, to be allowed once the object's own ACL is
    /// read (`objects::read_entry`). It counts against the bucket owner's share of this front
    /// door. Anything else is refused.
    async fn anonymous(&self, cx: &mut S3AccessContext<'_>, op: &'static str) -> S3Result<()> {
        let denied = || access_denied("Anonymous access is forbidden for this operation");
        let Some(listing) = public_op(cx.s3_path(), op) else {
            return Err(denied());
        };
        let bucket = match cx.s3_path() {
            S3Path::Bucket { bucket } | S3Path::Object { bucket, .. } => bucket.to_string(),
            S3Path::Root => return Err(denied()),
        };
        let b = self
            .meta
            .bucket_for_anonymous(&bucket, self.fd.cfg.account_cache_ttl)
            .await?
            .ok_or_else(|| no_such_bucket(&bucket))?;
        if b.rec.state == BucketState::Deleting {
            return Err(no_such_bucket(&bucket));
        }
        let owner = self.public_reading(&b.rec, listing).await?;
        expect_owner(cx.headers(), "x-amz-expected-bucket-owner", &b.rec.owner)?;
        let slot = crate::limits::enter(&self.fd, &owner).map_err(|most| {
            s3err(
                S3ErrorCode::SlowDown,
                format!(
                    "Please reduce your request rate: this bucket's owner may have {most} requests in progress."
                ),
            )
        })?;
        cx.extensions_mut().insert(Arc::new(slot));
        cx.extensions_mut().insert(Anonymous(owner));
        cx.extensions_mut().insert(BucketRef(b));
        Ok(())
    }
}

#[async_trait]
impl S3Access for Owners {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> s3s::S3Result<()> {
        let op = static_op(cx.s3_op().name());
        if let Some(slot) = cx.extensions_mut().get::<OpSlot>() {
            slot.set(op);
        }
        let Some(cred) = cx.credentials() else {
            return self.anonymous(cx, op).await;
        };
        let access_key = cred.access_key.clone();
        let account = self
            .cache
            .account(&self.fd, &access_key, MAPPING_MAX_AGE)
            .await?
            .ok_or_else(unknown_key)?;
        // A sub-user's key acts with the roles the request names (`role`), else its defaults.
        let user = match account.s3_key(&access_key) {
            None => return Err(unknown_key()),
            Some((_, None)) => None,
            Some((_, Some(u))) => {
                let asked = cx.headers().get("role").and_then(|v| v.to_str().ok());
                let roles = manta_auth::rbac::active_roles(&account, u, asked)
                    .map_err(|e| access_denied(e.message))?;
                Some(Box::new(manta_auth::rbac::Acting {
                    login: u.login.clone(),
                    uuid: u.uuid.clone(),
                    roles,
                }))
            }
        };
        let (bucket, key) = match cx.s3_path() {
            S3Path::Root => (None, None),
            S3Path::Bucket { bucket } => (Some(bucket.to_string()), None),
            S3Path::Object { bucket, key } => (Some(bucket.to_string()), Some(key.to_string())),
        };
        let uuid = account.uuid.clone();
        // The account's share of this front door, held until the operation is done.
        let slot = crate::limits::enter(&self.fd, &account).map_err(|most| {
            s3err(
                S3ErrorCode::SlowDown,
                format!(
                    "Please reduce your request rate: this account may have {most} requests in progress."
                ),
            )
        })?;
        let caller = Caller {
            who: manta_auth::Caller::Account {
                account,
                via: manta_auth::Via::Signature,
                methods: None,
                user,
            },
            source_ip: cx
                .extensions_mut()
                .get::<manta_util::http::PeerAddr>()
                .map(|p| p.0.ip()),
        };
        let acts = sub_user_action(op);
        if caller.who.user().is_some() && (acts.is_none() || bucket.is_none()) {
            tracing::warn!(caller = %caller.who.name(), op, "denied: only the account may do this");
            return Err(access_denied(format!(
                "Access Denied: {} is a sub-user; only the account may {op}",
                caller.who.name()
            )));
        }
        cx.extensions_mut().insert(Arc::new(slot));
        cx.extensions_mut().insert(caller.clone());
        // A copy source's expected owner is checked where the source is read.
        let Some(bucket) = bucket else {
            return Ok(());
        };
        if op == "CreateBucket" {
            // Whether the name is free is the operation's answer to give.
            return Ok(());
        }
        // An object's bucket may come from the short read cache (what it guards is checked
        // again after a write lands); operations on the bucket itself read it fresh.
        let max_age = match cx.s3_path() {
            S3Path::Object { .. } => self.fd.cfg.account_cache_ttl,
            _ => Duration::ZERO,
        };
        let b = self
            .meta
            .bucket_recent(&bucket, max_age)
            .await?
            .ok_or_else(|| no_such_bucket(&bucket))?;
        if b.rec.owner != uuid {
            // Another account's bucket: only what anyone may read of it, as for an unsigned
            // request (S3's "everyone" includes other accounts).
            let Some(listing) = public_op(cx.s3_path(), op) else {
                return Err(access_denied("Access Denied"));
            };
            let owner = self.public_reading(&b.rec, listing).await?;
            expect_owner(cx.headers(), "x-amz-expected-bucket-owner", &b.rec.owner)?;
            cx.extensions_mut().insert(Anonymous(owner));
            cx.extensions_mut().insert(BucketRef(b));
            return Ok(());
        }
        expect_owner(cx.headers(), "x-amz-expected-bucket-owner", &b.rec.owner)?;
        if b.rec.state == BucketState::Deleting && op != "DeleteBucket" {
            return Err(no_such_bucket(&bucket));
        }
        if let Some(acts) = acts {
            check_sub_user(&caller, &b.rec, key.as_deref(), acts)?;
        }
        cx.extensions_mut().insert(BucketRef(b));
        Ok(())
    }
}

/// Checks an expected-owner header (`x-amz-expected-bucket-owner` and its copy-source twin),
/// which every bucket and object operation accepts: when given, it must name `owner` (the
/// account id S3 answers as an owner's `ID`).
///
/// # Errors
/// `AccessDenied` (403) when it names another account or is not text.
fn expect_owner(headers: &http::HeaderMap, name: &str, owner: &str) -> S3Result<()> {
    match headers.get(name) {
        None => Ok(()),
        Some(v) if v.to_str().is_ok_and(|v| v.trim() == owner) => Ok(()),
        Some(_) => Err(access_denied(format!(
            "Access Denied: the bucket is not owned by the account {name} names"
        ))),
    }
}
