//! The S3 API's metadata in Moray: which buckets exist, the object records, and multipart
//! uploads with their parts (see the module docs of [`crate::s3`] for the layout).
//!
//! The three Moray buckets are created (or brought up to date) idempotently before the first
//! request that needs them, on every shard; a failure is retried by the next request.

use std::collections::BTreeMap;

use manta_types::MetadataRecord;
use manta_util::cache::TtlCache;
use moray::filter::Filter;
use moray::types::{
    BatchOp, BucketConfig, DelOptions, FindOptions, IndexSpec, IndexType, ObjectRecord, PutOptions,
    Sort,
};
use moray::{EtagCondition, ShardedClient};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::OnceCell;

use super::error::{S3Result, from_moray, internal};
use super::names;

/// Bucket records (system shard), keyed by bucket name.
pub const BUCKETS: &str = "manta_s3_buckets";
/// Object records, keyed `<bucket>/<key>`.
pub const OBJECTS: &str = manta_types::s3::OBJECTS_BUCKET;
/// Older versions and delete markers (buckets with versioning), keyed `<bucket>/<order>`.
pub const VERSIONS: &str = manta_types::s3::VERSIONS_BUCKET;
/// Multipart uploads and parts, keyed `<bucket>/<uploadId>[/<part>]`.
pub const UPLOADS: &str = "manta_s3_uploads";

/// The record type of an upload in [`UPLOADS`] (parts are `object`).
pub const UPLOAD_TYPE: &str = "upload";

/// The version of bucket and upload records this code writes.
pub const S3_RECORD_VERSION: u32 = 1;

/// The configuration of [`BUCKETS`].
pub fn buckets_config() -> BucketConfig {
    BucketConfig::new(1).with_index("owner", IndexSpec::new(IndexType::String))
}

/// The configuration of [`OBJECTS`]: the `manta` bucket's (taken from
/// [`moray::schema::manta_buckets`], so the same indexes and filters work) without its
/// directory-count trigger, keeping the delete-log trigger (so GC reclaims replaced and
/// deleted objects).
pub fn objects_config() -> BucketConfig {
    let (_, mut config) = moray::schema::manta_buckets()
        .into_iter()
        .find(|(name, _)| *name == moray::schema::MANTA)
        .expect("moray's schema configures the manta bucket");
    config
        .post
        .retain(|trigger| trigger != moray::schema::TRIGGER_DIRCOUNT);
    config
}

/// The configuration of [`UPLOADS`]: as [`objects_config`] plus the upload id and bucket,
/// with the delete-log trigger so parts that are replaced, aborted or joined are reclaimed.
pub fn uploads_config() -> BucketConfig {
    let s = || IndexSpec::new(IndexType::String);
    objects_config()
        .with_index("uploadId", s())
        .with_index("bucket", s())
}

/// The configuration of [`VERSIONS`]: as [`objects_config`] (its records are object
/// records, and the delete-log trigger reclaims a version's bytes when it is deleted for
/// good) plus the version's order and id.
pub fn versions_config() -> BucketConfig {
    let s = || IndexSpec::new(IndexType::String);
    objects_config()
        .with_index(super::versioning::ORDER, s())
        .with_index(super::versioning::VID, s())
}

/// The lifecycle state of a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BucketState {
    /// In use.
    #[default]
    Active,
    /// `DeleteBucket` is checking that it is empty: new writes are refused.
    Deleting,
}

/// How long a write that landed in a bucket being deleted waits for `DeleteBucket`'s outcome.
pub const DELETING_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A bucket, as stored in [`BUCKETS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BucketRecord {
    /// Record version.
    #[serde(rename = "v", default = "one")]
    pub version: u32,
    /// The bucket name (also the key).
    pub name: String,
    /// Uuid of the owning account.
    pub owner: String,
    /// Login of the owning account when the bucket was made (for listings).
    pub owner_login: String,
    /// Creation time, epoch ms.
    pub created: u64,
    /// Region the bucket was created in.
    pub region: String,
    /// Lifecycle state.
    #[serde(default)]
    pub state: BucketState,
    /// Canned ACL (private when absent).
    #[serde(default, skip_serializing_if = "super::acl::CannedAcl::is_private")]
    pub acl: super::acl::CannedAcl,
    /// Versioning (never enabled when absent).
    #[serde(default, skip_serializing_if = "super::versioning::Versioning::is_off")]
    pub versioning: super::versioning::Versioning,
    /// Role tags: the roles whose sub-users may act on the bucket and its objects, as their
    /// policies allow (set by the owner with `mchmod` on `/:login/buckets/<bucket>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// The bucket policy, when one is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<super::policy::BucketPolicy>,
}

fn one() -> u32 {
    1
}

/// A multipart upload, as stored in [`UPLOADS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadRecord {
    /// Record version.
    #[serde(rename = "v", default = "one")]
    pub version: u32,
    /// Always [`UPLOAD_TYPE`].
    #[serde(rename = "type")]
    pub kind: String,
    /// The S3 bucket (indexed as `bucket` and, like objects, `dirname`).
    pub bucket: String,
    /// Same as `bucket` (objects list by `dirname`; uploads do too).
    pub dirname: String,
    /// The key of the object the upload will make.
    pub name: String,
    /// The upload id.
    pub upload_id: String,
    /// Uuid of the owning account (and creator of the part files).
    pub owner: String,
    /// Login of the owner when the upload began.
    pub owner_login: String,
    /// Start time, epoch ms.
    pub initiated: u64,
    /// Storage ids of the nodes every part is written to.
    pub sharks: Vec<manta_types::SharkRef>,
    /// `Content-Type` for the object.
    pub content_type: String,
    /// Headers stored with the object (user metadata, content headers).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// A record with the Moray etag it was read at.
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    /// The record.
    pub rec: T,
    /// Moray's etag of it (for conditional writes).
    pub etag: String,
}

/// Access to the S3 API's Moray buckets.
#[derive(Debug)]
pub struct Meta {
    moray: ShardedClient,
    ready: OnceCell<()>,
    /// Bucket records recently read ([`Meta::bucket_recent`]); forgotten when this front door
    /// changes one.
    buckets: TtlCache<Versioned<BucketRecord>>,
    /// Bucket names recently found not to exist, for anonymous requests only
    /// ([`Meta::bucket_for_anonymous`]); forgotten when this front door creates one.
    absent: TtlCache<()>,
}

fn parse<T: for<'de> Deserialize<'de>>(v: Value, what: &str) -> S3Result<T> {
    serde_json::from_value(v).map_err(|e| internal(format!("unreadable {what} record: {e}")))
}

/// A listing's records; none when the Moray bucket does not exist yet (nothing was ever
/// written there).
fn none_if_no_bucket<T>(found: Result<Vec<T>, moray::Error>) -> S3Result<Vec<T>> {
    match found {
        Ok(f) => Ok(f),
        Err(moray::Error::BucketNotFound { .. }) => Ok(Vec::new()),
        Err(e) => Err(from_moray(e)),
    }
}

/// A record Moray answered for a key, with its etag (`read` parses the value); `None` when
/// there is no such record, or no such Moray bucket yet.
fn found<T>(
    got: Result<ObjectRecord, moray::Error>,
    read: impl FnOnce(Value) -> S3Result<T>,
) -> S3Result<Option<Versioned<T>>> {
    match got {
        Ok(r) => Ok(Some(Versioned {
            rec: read(r.value)?,
            etag: r.etag,
        })),
        Err(moray::Error::ObjectNotFound { .. } | moray::Error::BucketNotFound { .. }) => Ok(None),
        Err(e) => Err(from_moray(e)),
    }
}

/// Whether a conditional write went through: `Ok(false)` when its etag condition failed or
/// the record it was conditioned on is gone.
fn applied<T>(outcome: Result<T, moray::Error>) -> S3Result<bool> {
    match outcome {
        Ok(_) => Ok(true),
        Err(moray::Error::EtagConflict { .. } | moray::Error::ObjectNotFound { .. }) => Ok(false),
        Err(e) => Err(from_moray(e)),
    }
}

/// How the listings here ask Moray: at most `limit` records in `sort` order, uncounted.
fn listing(limit: u64, sort: Vec<Sort>) -> FindOptions {
    FindOptions {
        limit: Some(limit),
        sort,
        no_count: true,
        ..FindOptions::default()
    }
}

/// The records matching every filter of `parts` and, unless `prefix` is empty, whose `name`
/// starts with `prefix`.
fn named_under(mut parts: Vec<Filter>, prefix: &str) -> Filter {
    if !prefix.is_empty() {
        parts.push(Filter::Substring {
            attr: "name".into(),
            initial: Some(prefix.to_owned()),
            any: Vec::new(),
            fin: None,
        });
    }
    Filter::and(parts)
}

/// Reads an object record.
///
/// # Errors
/// `InternalError` when it cannot be read.
pub fn object_record(v: Value) -> S3Result<MetadataRecord> {
    MetadataRecord::from_value(v).map_err(|e| internal(format!("unreadable object record: {e}")))
}

impl Meta {
    /// Access over `moray`; the buckets are created before first use.
    pub fn new(moray: ShardedClient) -> Meta {
        Meta {
            moray,
            ready: OnceCell::new(),
            buckets: TtlCache::new(10_000),
            absent: TtlCache::new(10_000),
        }
    }

    /// Read access over `moray` that never creates anything: buckets that do not exist yet
    /// read as empty (for the Manta API's view, which may run before any S3 request).
    pub fn existing(moray: ShardedClient) -> Meta {
        Meta {
            moray,
            ready: OnceCell::new_with(Some(())),
            buckets: TtlCache::new(10_000),
            absent: TtlCache::new(10_000),
        }
    }

    /// The sharded client.
    pub fn moray(&self) -> &ShardedClient {
        &self.moray
    }

    /// Creates the buckets if needed (once per process; retried after a failure).
    ///
    /// # Errors
    /// `ServiceUnavailable`/`InternalError` when Moray fails.
    pub async fn ensure(&self) -> S3Result<()> {
        self.ready
            .get_or_try_init(|| async {
                self.moray
                    .system()
                    .put_bucket(BUCKETS, buckets_config())
                    .await?;
                // The delete-log trigger writes into manta_delete_log, which the front door
                // creates at start-up (Frontdoor::new) before any request is served.
                self.moray.put_bucket(OBJECTS, objects_config()).await?;
                self.moray.put_bucket(VERSIONS, versions_config()).await?;
                self.moray.put_bucket(UPLOADS, uploads_config()).await?;
                Ok::<(), moray::Error>(())
            })
            .await
            .map(|_| ())
            .map_err(from_moray)
    }

    // ---- buckets -------------------------------------------------------------------------

    /// A bucket by name.
    ///
    /// # Errors
    /// When Moray fails.
    pub async fn bucket(&self, name: &str) -> S3Result<Option<Versioned<BucketRecord>>> {
        self.ensure().await?;
        let got = self.moray.system().get_object(BUCKETS, name).await;
        found(got, |v| parse(v, "bucket"))
    }

    /// A bucket by name, from a read less than `max_age` old when there is one. Only for checks
    /// that are made again where it matters: a bucket deleted or given up meanwhile may still
    /// be seen for `max_age` (by another front door; this one forgets its own changes).
    ///
    /// # Errors
    /// When Moray fails.
    pub async fn bucket_recent(
        &self,
        name: &str,
        max_age: std::time::Duration,
    ) -> S3Result<Option<Versioned<BucketRecord>>> {
        if let Some(b) = self.buckets.get(name, max_age) {
            return Ok(Some(b));
        }
        let b = self.bucket(name).await?;
        match &b {
            Some(b) if !max_age.is_zero() => self.buckets.insert(name, b.clone()),
            _ => self.buckets.remove(name),
        }
        Ok(b)
    }

    /// As [`Meta::bucket_recent`] for an unauthenticated request, which also remembers (for
    /// `max_age`) that a name has no bucket: anyone on the network can ask for made-up
    /// names, and a name asked for again costs no Moray read. A bucket created through
    /// another front door meanwhile is seen by anonymous callers here within `max_age`.
    ///
    /// # Errors
    /// When Moray fails.
    pub async fn bucket_for_anonymous(
        &self,
        name: &str,
        max_age: std::time::Duration,
    ) -> S3Result<Option<Versioned<BucketRecord>>> {
        if self.absent.get(name, max_age).is_some() {
            return Ok(None);
        }
        let b = self.bucket_recent(name, max_age).await?;
        if b.is_none() && !max_age.is_zero() {
            self.absent.insert(name, ());
        }
        Ok(b)
    }

    /// Writes a bucket record on condition `cond`; `Ok(false)` when the condition failed.
    ///
    /// # Errors
    /// When Moray fails.
    pub async fn put_bucket(&self, rec: &BucketRecord, cond: EtagCondition) -> S3Result<bool> {
        self.ensure().await?;
        let value = serde_json::to_value(rec).map_err(internal)?;
        let put = self
            .moray
            .system()
            .put_object(BUCKETS, &rec.name, value, PutOptions { etag: cond })
            .await;
        self.buckets.remove(&rec.name);
        self.absent.remove(&rec.name);
        applied(put)
    }

    /// Deletes a bucket record read at `etag`; `Ok(false)` when it changed or went.
    ///
    /// # Errors
    /// When Moray fails.
    pub async fn delete_bucket(&self, name: &str, etag: &str) -> S3Result<bool> {
        let deleted = self
            .moray
            .system()
            .del_object(BUCKETS, name, DelOptions::if_match(etag))
            .await;
        self.buckets.remove(name);
        applied(deleted)
    }

    /// The buckets of an account, by name.
    ///
    /// # Errors
    /// When Moray fails.
    pub async fn buckets_of(&self, owner: &str) -> S3Result<Vec<BucketRecord>> {
        self.ensure().await?;
        let found = self
            .moray
            .system()
            .find_objects(
                BUCKETS,
                &Filter::eq("owner", owner).to_string(),
                listing(100_000, vec![Sort::asc("_key")]),
            )
            .await;
        let found = none_if_no_bucket(found)?;
        found
            .into_iter()
            .map(|r| parse(r.value, "bucket"))
            .collect()
    }

    // ---- objects -------------------------------------------------------------------------

    /// The record of object `key` in `bucket`, whose owner is `owner`. A record another
    /// account wrote is not this bucket's: it outlived an earlier bucket of the same name (a
    /// write that landed after `DeleteBucket`), and the name's new owner must not see it.
    ///
    /// # Errors
    /// When Moray fails or the record is unreadable.
    pub async fn object(
        &self,
        owner: &str,
        bucket: &str,
        key: &str,
    ) -> S3Result<Option<Versioned<MetadataRecord>>> {
        let found = self
            .get(OBJECTS, &names::object_key(bucket, key), object_record)
            .await?;
        Ok(found.filter(|v| v.rec.owner == owner))
    }

    /// Writes an object record on condition `cond`; its new etag, `None` when the condition
    /// failed.
    ///
    /// # Errors
    /// When Moray fails.
    pub async fn put_object(
        &self,
        rec: &MetadataRecord,
        cond: EtagCondition,
    ) -> S3Result<Option<String>> {
        self.ensure().await?;
        let put = self
            .moray
            .put_object(OBJECTS, &rec.key, rec.to_value(), PutOptions { etag: cond })
            .await;
        match put {
            Ok(r) => Ok(Some(r.etag)),
            Err(moray::Error::EtagConflict { .. } | moray::Error::ObjectNotFound { .. }) => {
                Ok(None)
            }
            Err(e) => Err(from_moray(e)),
        }
    }

    /// Whether an object `owner` has just written into `bucket` may stay there: the bucket is
    /// still `owner`'s and not being deleted. While `DeleteBucket` is checking the bucket is
    /// empty this waits for its outcome (at most [`DELETING_WAIT`]: a mark older than that was
    /// left by a front door that stopped, and the bucket is then taken as still there).
    ///
    /// # Errors
    /// When Moray fails.
    pub async fn bucket_keeps(&self, bucket: &str, owner: &str) -> S3Result<bool> {
        let deadline = tokio::time::Instant::now() + DELETING_WAIT;
        loop {
            match self.bucket(bucket).await? {
                Some(b) if b.rec.owner != owner => return Ok(false),
                None => return Ok(false),
                Some(b) if b.rec.state == BucketState::Active => return Ok(true),
                Some(_) if tokio::time::Instant::now() >= deadline => return Ok(true),
                Some(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
    }

    /// Deletes an object record (on condition `cond`). `Ok(false)` when there was nothing to
    /// delete or the condition failed.
    ///
    /// # Errors
    /// When Moray fails.
    pub async fn delete_object(
        &self,
        bucket: &str,
        key: &str,
        cond: EtagCondition,
    ) -> S3Result<bool> {
        self.ensure().await?;
        let deleted = self
            .moray
            .del_object(
                OBJECTS,
                &names::object_key(bucket, key),
                DelOptions { etag: cond },
            )
            .await;
        applied(deleted)
    }

    /// Up to `limit` object records of `bucket` (owned by `owner`: see [`Meta::object`]) with
    /// keys `>= from` that start with `prefix`, in key order (bytewise).
    ///
    /// # Errors
    /// When Moray fails.
    pub async fn scan(
        &self,
        owner: &str,
        bucket: &str,
        from: &str,
        prefix: &str,
        limit: u64,
    ) -> S3Result<Vec<MetadataRecord>> {
        self.ensure().await?;
        let mut parts = vec![Filter::eq("dirname", bucket), Filter::eq("owner", owner)];
        if !from.is_empty() {
            parts.push(Filter::ge("name", from));
        }
        let filter = named_under(parts, prefix);
        let options = listing(limit, vec![Sort::asc("name")]);
        self.find(OBJECTS, &filter, bucket, options, object_record)
            .await
    }

    /// The record at `key` in Moray bucket `moray_bucket` (on its shard), read by `read`, with
    /// its etag; `None` when there is none.
    async fn get<T>(
        &self,
        moray_bucket: &str,
        key: &str,
        read: impl FnOnce(Value) -> S3Result<T>,
    ) -> S3Result<Option<Versioned<T>>> {
        self.ensure().await?;
        found(self.moray.get_object(moray_bucket, key).await, read)
    }

    /// The records of Moray bucket `moray_bucket` on the shard of `hashkey` that match
    /// `filter`, each read by `read`; none when the Moray bucket does not exist yet.
    async fn find<T>(
        &self,
        moray_bucket: &str,
        filter: &Filter,
        hashkey: &str,
        options: FindOptions,
        read: impl Fn(Value) -> S3Result<T>,
    ) -> S3Result<Vec<T>> {
        let found = self.find_versioned(moray_bucket, filter, hashkey, options, read);
        Ok(found.await?.into_iter().map(|v| v.rec).collect())
    }

    /// As [`Meta::find`], with each record's etag.
    async fn find_versioned<T>(
        &self,
        moray_bucket: &str,
        filter: &Filter,
        hashkey: &str,
        options: FindOptions,
        read: impl Fn(Value) -> S3Result<T>,
    ) -> S3Result<Vec<Versioned<T>>> {
        let found = self
            .moray
            .find_objects(moray_bucket, &filter.to_string(), hashkey, options)
            .await;
        let found = none_if_no_bucket(found)?;
        found
            .into_iter()
            .map(|r| {
                Ok(Versioned {
                    rec: read(r.value)?,
                    etag: r.etag,
                })
            })
            .collect()
    }

    // ---- versions ------------------------------------------------------------------------

    /// The older versions and delete markers of `key` in `bucket` (owned by `owner`), newest
    /// first, at most `limit`.
    ///
    /// # Errors
    /// When Moray fails or a record is unreadable.
    pub async fn versions_of(
        &self,
        owner: &str,
        bucket: &str,
        key: &str,
        limit: u64,
    ) -> S3Result<Vec<Versioned<super::versioning::Version>>> {
        self.ensure().await?;
        let filter = Filter::and(vec![
            Filter::eq("dirname", bucket),
            Filter::eq("name", key),
            Filter::eq("owner", owner),
        ]);
        let options = listing(limit, vec![Sort::asc(super::versioning::ORDER)]);
        let read = super::versioning::Version::from_value;
        self.find_versioned(VERSIONS, &filter, bucket, options, read)
            .await
    }

    /// The older version or delete marker `vid` ("null" too) of `key` in `bucket`.
    ///
    /// # Errors
    /// When Moray fails or the record is unreadable.
    pub async fn version(
        &self,
        owner: &str,
        bucket: &str,
        key: &str,
        vid: &str,
    ) -> S3Result<Option<Versioned<super::versioning::Version>>> {
        self.ensure().await?;
        let read = super::versioning::Version::from_value;
        let found = if vid == super::versioning::NULL {
            let filter = Filter::and(vec![
                Filter::eq("dirname", bucket),
                Filter::eq("name", key),
                Filter::eq(super::versioning::VID, vid),
            ]);
            let options = listing(1, Vec::new());
            let mut found = self
                .find_versioned(VERSIONS, &filter, bucket, options, read)
                .await?;
            found.pop()
        } else {
            let mkey = super::versioning::moray_key(bucket, vid);
            self.get(VERSIONS, &mkey, read).await?
        };
        Ok(found.filter(|v| v.rec.name() == key && v.rec.owner() == owner))
    }

    /// Up to `limit` older versions and delete markers of `bucket` whose keys start with
    /// `prefix`, from position `from` (a key, and an order within it: inclusive) on, by key
    /// then newest first.
    ///
    /// # Errors
    /// When Moray fails or a record is unreadable.
    pub async fn scan_versions(
        &self,
        owner: &str,
        bucket: &str,
        (from, order): (&str, &str),
        prefix: &str,
        limit: u64,
    ) -> S3Result<Vec<super::versioning::Version>> {
        self.ensure().await?;
        let mut parts = vec![Filter::eq("dirname", bucket), Filter::eq("owner", owner)];
        if !from.is_empty() {
            // name > from, or name = from and order >= order.
            parts.push(Filter::ge("name", from));
            parts.push(Filter::or(vec![
                Filter::negate(Filter::eq("name", from)),
                Filter::ge(super::versioning::ORDER, order),
            ]));
        }
        let filter = named_under(parts, prefix);
        let sort = vec![Sort::asc("name"), Sort::asc(super::versioning::ORDER)];
        let read = super::versioning::Version::from_value;
        self.find(VERSIONS, &filter, bucket, listing(limit, sort), read)
            .await
    }

    /// True when the bucket holds at least one older version or delete marker.
    ///
    /// # Errors
    /// When Moray fails.
    pub async fn has_versions(&self, owner: &str, bucket: &str) -> S3Result<bool> {
        let one = self.scan_versions(owner, bucket, ("", ""), "", 1).await?;
        Ok(!one.is_empty())
    }

    /// Runs `ops` as one transaction: the results, or `Err(bucket)` naming the Moray bucket
    /// whose etag condition failed (or whose record was gone).
    ///
    /// # Errors
    /// When Moray fails.
    pub async fn transact(
        &self,
        ops: Vec<BatchOp>,
    ) -> S3Result<Result<moray::types::BatchResult, String>> {
        self.ensure().await?;
        match self.moray.batch(ops).await {
            Ok(r) => Ok(Ok(r)),
            Err(
                moray::Error::EtagConflict { bucket, .. }
                | moray::Error::ObjectNotFound { bucket, .. },
            ) => Ok(Err(bucket)),
            Err(e) => Err(from_moray(e)),
        }
    }

    /// True when the bucket (owned by `owner`) holds at least one object.
    ///
    /// # Errors
    /// When Moray fails.
    pub async fn has_objects(&self, owner: &str, bucket: &str) -> S3Result<bool> {
        Ok(!self.scan(owner, bucket, "", "", 1).await?.is_empty())
    }

    // ---- uploads -------------------------------------------------------------------------

    /// An upload record.
    ///
    /// # Errors
    /// When Moray fails or the record is unreadable.
    pub async fn upload(
        &self,
        bucket: &str,
        upload_id: &str,
    ) -> S3Result<Option<Versioned<UploadRecord>>> {
        self.ensure().await?;
        if !names::valid_upload_id(upload_id) {
            return Ok(None);
        }
        let key = names::upload_key(bucket, upload_id);
        self.get(UPLOADS, &key, |v| parse(v, "upload")).await
    }

    /// Creates an upload record (must not exist).
    ///
    /// # Errors
    /// When Moray fails.
    pub async fn create_upload(&self, rec: &UploadRecord) -> S3Result<()> {
        self.ensure().await?;
        let value = serde_json::to_value(rec).map_err(internal)?;
        self.moray
            .put_object(
                UPLOADS,
                &names::upload_key(&rec.bucket, &rec.upload_id),
                value,
                PutOptions::must_not_exist(),
            )
            .await
            .map(drop)
            .map_err(from_moray)
    }

    /// Records a part, in one transaction with a rewrite of the (unchanged) upload record
    /// conditional on `upload.etag`: a part can never be added to an upload that has been
    /// completed or aborted. `Ok(false)` when the upload is gone.
    ///
    /// # Errors
    /// When Moray fails.
    pub async fn put_part(
        &self,
        upload: &Versioned<UploadRecord>,
        part: &MetadataRecord,
        part_number: u32,
    ) -> S3Result<bool> {
        let u = &upload.rec;
        let mut value = part.to_value();
        value["uploadId"] = Value::String(u.upload_id.clone());
        value["bucket"] = Value::String(u.bucket.clone());
        value["partNumber"] = Value::from(part_number);
        let ops = vec![
            BatchOp::Put {
                bucket: UPLOADS.into(),
                key: names::upload_key(&u.bucket, &u.upload_id),
                value: serde_json::to_value(u).map_err(internal)?,
                options: PutOptions::if_match(upload.etag.clone()),
            },
            BatchOp::Put {
                bucket: UPLOADS.into(),
                key: part.key.clone(),
                value,
                options: PutOptions::any(),
            },
        ];
        applied(self.moray.batch(ops).await)
    }

    /// Every part record of an upload, in part order.
    ///
    /// # Errors
    /// When Moray fails.
    pub async fn parts(&self, bucket: &str, upload_id: &str) -> S3Result<Vec<MetadataRecord>> {
        let f = Filter::and(vec![
            Filter::eq("uploadId", upload_id),
            Filter::eq("type", "object"),
        ]);
        let options = listing(
            names::MAX_PART_NUMBER.unsigned_abs().into(),
            vec![Sort::asc("_key")],
        );
        self.find(UPLOADS, &f, bucket, options, object_record).await
    }

    /// The uploads in progress in `bucket` whose keys start with `prefix`, by key then
    /// initiation (at most `limit`).
    ///
    /// # Errors
    /// When Moray fails.
    pub async fn uploads(
        &self,
        bucket: &str,
        prefix: &str,
        limit: u64,
    ) -> S3Result<Vec<UploadRecord>> {
        self.ensure().await?;
        let parts = vec![
            Filter::eq("bucket", bucket),
            Filter::eq("type", UPLOAD_TYPE),
        ];
        let filter = named_under(parts, prefix);
        let options = listing(limit, vec![Sort::asc("name"), Sort::asc("_id")]);
        self.find(UPLOADS, &filter, bucket, options, |v| parse(v, "upload"))
            .await
    }

    /// The operations that end an upload (in one transaction, with the object's write when
    /// it completes): removing its record (if still at `upload.etag`, so an upload ends
    /// once) and every part record (their bytes go to GC).
    ///
    /// # Errors
    /// `InternalError` when the record cannot be written out.
    pub fn end_upload_ops(upload: &Versioned<UploadRecord>) -> S3Result<Vec<BatchOp>> {
        let u = &upload.rec;
        Ok(vec![
            BatchOp::Delete {
                bucket: UPLOADS.into(),
                key: names::upload_key(&u.bucket, &u.upload_id),
                options: DelOptions::if_match(upload.etag.clone()),
            },
            BatchOp::DeleteMany {
                bucket: UPLOADS.into(),
                filter: Filter::and(vec![
                    Filter::eq("uploadId", &u.upload_id),
                    Filter::eq("type", "object"),
                ])
                .to_string(),
            },
        ])
    }

    /// Removes every upload and part record of a bucket (their bytes go to GC).
    ///
    /// # Errors
    /// When Moray fails.
    pub async fn drop_uploads(&self, bucket: &str) -> S3Result<u64> {
        self.ensure().await?;
        let (shard, _) = self.moray.shard_for_hashkey(bucket);
        shard
            .delete_many(UPLOADS, &Filter::eq("bucket", bucket).to_string(), None)
            .await
            .map(|c| c.count)
            .map_err(from_moray)
    }
}
