//! Helpers for the S3 API tests: a region whose front door serves S3, access keys made with
//! `manta-adm`, an `aws-sdk-s3` client, SigV4 presigning by hand (for URLs the SDK refuses to
//! make), deterministic data.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::abort_multipart_upload::builders::AbortMultipartUploadFluentBuilder;
use aws_sdk_s3::operation::complete_multipart_upload::builders::CompleteMultipartUploadFluentBuilder;
use aws_sdk_s3::operation::copy_object::builders::CopyObjectFluentBuilder;
use aws_sdk_s3::operation::create_multipart_upload::builders::CreateMultipartUploadFluentBuilder;
use aws_sdk_s3::operation::delete_object::builders::DeleteObjectFluentBuilder;
use aws_sdk_s3::operation::get_bucket_location::builders::GetBucketLocationFluentBuilder;
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::operation::get_object::builders::GetObjectFluentBuilder;
use aws_sdk_s3::operation::head_object::builders::HeadObjectFluentBuilder;
use aws_sdk_s3::operation::list_object_versions::builders::ListObjectVersionsFluentBuilder;
use aws_sdk_s3::operation::list_objects_v2::builders::ListObjectsV2FluentBuilder;
use aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder;
use aws_sdk_s3::operation::upload_part::builders::UploadPartFluentBuilder;
use aws_sdk_s3::operation::upload_part_copy::builders::UploadPartCopyFluentBuilder;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use testkit::s3::hex;
use testkit::{RegionOptions, TestRegion};

/// A region with the S3 listener, and an access key of its account.
pub struct S3Region {
    /// The region (its account is `region.account`).
    pub region: TestRegion,
    /// `http://127.0.0.1:<port>` of the S3 listener.
    pub endpoint: String,
    /// Access key id of `region.account`.
    pub access_key: String,
    /// Its secret.
    pub secret_key: String,
}

/// Starts a region serving S3 (extra front door and storage node arguments allowed).
pub async fn start_with(frontdoor_args: &[&str], storage_args: &[&str]) -> S3Region {
    let port = testkit::process::free_port().unwrap();
    let mut args: Vec<String> = vec!["--s3-listen".into(), format!("127.0.0.1:{port}")];
    args.extend(frontdoor_args.iter().map(|s| (*s).to_owned()));
    let region = TestRegion::start_with(RegionOptions {
        frontdoor_args: args,
        storage_args: storage_args.iter().map(|s| (*s).to_owned()).collect(),
        ..RegionOptions::default()
    })
    .await
    .unwrap();
    let (access_key, secret_key) = s3_key(&region, &region.account.login.clone());
    S3Region {
        endpoint: format!("http://127.0.0.1:{port}"),
        region,
        access_key,
        secret_key,
    }
}

/// Starts a region serving S3.
pub async fn start() -> S3Region {
    start_with(&[], &[]).await
}

/// A new access key for `login`, made by `manta-adm s3-key create`.
pub fn s3_key(region: &TestRegion, login: &str) -> (String, String) {
    let out = testkit::process::run_ok(
        region
            .manta_adm()
            .unwrap()
            .args(["s3-key", "create", login, "--json"]),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["accessKeyId"].as_str().unwrap().to_owned(),
        v["secretAccessKey"].as_str().unwrap().to_owned(),
    )
}

/// An `aws-sdk-s3` client (path style) for `endpoint` with the given key.
pub fn sdk(endpoint: &str, access_key: &str, secret_key: &str) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    let creds = Credentials::new(access_key, secret_key, None, None, "test");
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(creds)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

impl S3Region {
    /// An SDK client as the region's account.
    pub fn client(&self) -> aws_sdk_s3::Client {
        sdk(&self.endpoint, &self.access_key, &self.secret_key)
    }
}

/// The S3 error code and HTTP status of a failed SDK call.
pub fn code_of<T: std::fmt::Debug, E: ProvideErrorMetadata + std::fmt::Debug>(
    r: Result<T, SdkError<E, HttpResponse>>,
) -> (String, u16) {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => {
            let status = e.raw_response().map(|r| r.status().as_u16()).unwrap_or(0);
            (e.code().unwrap_or("<none>").to_owned(), status)
        }
    }
}

/// Every byte of a GetObject answer's body.
pub async fn body_of(out: GetObjectOutput) -> Vec<u8> {
    out.body.collect().await.unwrap().into_bytes().to_vec()
}

/// One bucket seen through an SDK client: the requests the S3 tests make over and over, with
/// the bucket (and the key, upload id, ...) already filled in. Add any further options to the
/// builder a method returns, then `.send()` it.
#[derive(Clone)]
pub struct Bucket {
    /// The client the requests go through.
    pub client: aws_sdk_s3::Client,
    /// The bucket's name.
    pub name: String,
}

impl Bucket {
    /// The bucket `name` through `client` (nothing is sent).
    pub fn new(client: &aws_sdk_s3::Client, name: &str) -> Bucket {
        Bucket {
            client: client.clone(),
            name: name.to_owned(),
        }
    }

    /// Creates the bucket `name` through `client`.
    pub async fn create(client: &aws_sdk_s3::Client, name: &str) -> Bucket {
        client.create_bucket().bucket(name).send().await.unwrap();
        Bucket::new(client, name)
    }

    /// PutObject of `body` at `key`.
    pub fn put(&self, key: &str, body: impl Into<ByteStream>) -> PutObjectFluentBuilder {
        self.client
            .put_object()
            .bucket(&self.name)
            .key(key)
            .body(body.into())
    }

    /// GetObject of `key`.
    pub fn get(&self, key: &str) -> GetObjectFluentBuilder {
        self.client.get_object().bucket(&self.name).key(key)
    }

    /// HeadObject of `key`.
    pub fn head(&self, key: &str) -> HeadObjectFluentBuilder {
        self.client.head_object().bucket(&self.name).key(key)
    }

    /// DeleteObject of `key`.
    pub fn delete(&self, key: &str) -> DeleteObjectFluentBuilder {
        self.client.delete_object().bucket(&self.name).key(key)
    }

    /// CopyObject to `key` from `source` (`<bucket>/<key>`).
    pub fn copy(&self, key: &str, source: &str) -> CopyObjectFluentBuilder {
        self.client
            .copy_object()
            .bucket(&self.name)
            .key(key)
            .copy_source(source)
    }

    /// ListObjectsV2 of the bucket.
    pub fn list(&self) -> ListObjectsV2FluentBuilder {
        self.client.list_objects_v2().bucket(&self.name)
    }

    /// ListObjectVersions of the bucket.
    pub fn versions(&self) -> ListObjectVersionsFluentBuilder {
        self.client.list_object_versions().bucket(&self.name)
    }

    /// PutBucketVersioning of the bucket to `status` (`Enabled` or `Suspended`).
    pub async fn set_versioning(&self, status: &str) {
        use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
        let conf = VersioningConfiguration::builder()
            .status(BucketVersioningStatus::from(status))
            .build();
        self.client
            .put_bucket_versioning()
            .bucket(&self.name)
            .versioning_configuration(conf)
            .send()
            .await
            .unwrap();
    }

    /// Every (key, version id, latest, delete marker) of the bucket, listed a page of `page`
    /// at a time (each page's versions, then its delete markers).
    pub async fn all_versions(&self, page: i32) -> Vec<(String, String, bool, bool)> {
        let mut out = Vec::new();
        let (mut key, mut vid): (Option<String>, Option<String>) = (None, None);
        loop {
            let l = self
                .versions()
                .max_keys(page)
                .set_key_marker(key.clone())
                .set_version_id_marker(vid.clone())
                .send()
                .await
                .unwrap();
            let n = l.versions().len() + l.delete_markers().len() + l.common_prefixes().len();
            assert!(
                n <= usize::try_from(page).unwrap(),
                "{n} entries in a page of {page}"
            );
            for v in l.versions() {
                let (k, id) = (v.key().unwrap(), v.version_id().unwrap());
                out.push((k.into(), id.into(), v.is_latest().unwrap(), false));
            }
            for m in l.delete_markers() {
                let (k, id) = (m.key().unwrap(), m.version_id().unwrap());
                out.push((k.into(), id.into(), m.is_latest().unwrap(), true));
            }
            if !l.is_truncated().unwrap() {
                return out;
            }
            key = l.next_key_marker().map(str::to_owned);
            vid = l.next_version_id_marker().map(str::to_owned);
        }
    }

    /// GetBucketLocation of the bucket.
    pub fn location(&self) -> GetBucketLocationFluentBuilder {
        self.client.get_bucket_location().bucket(&self.name)
    }

    /// CreateMultipartUpload for `key`.
    pub fn start_upload(&self, key: &str) -> CreateMultipartUploadFluentBuilder {
        self.client
            .create_multipart_upload()
            .bucket(&self.name)
            .key(key)
    }

    /// Starts a multipart upload for `key` and returns its id.
    pub async fn upload_id(&self, key: &str) -> String {
        let up = self.start_upload(key).send().await.unwrap();
        up.upload_id().unwrap().to_owned()
    }

    /// UploadPart of `body` as part `n` of the upload `id` of `key`.
    pub fn part(
        &self,
        (key, id): (&str, &str),
        n: i32,
        body: impl Into<ByteStream>,
    ) -> UploadPartFluentBuilder {
        self.client
            .upload_part()
            .bucket(&self.name)
            .key(key)
            .upload_id(id)
            .part_number(n)
            .body(body.into())
    }

    /// UploadPartCopy from `source` (`<bucket>/<key>`) as part `n` of the upload `id` of `key`.
    pub fn part_copy(
        &self,
        (key, id): (&str, &str),
        n: i32,
        source: &str,
    ) -> UploadPartCopyFluentBuilder {
        self.client
            .upload_part_copy()
            .bucket(&self.name)
            .key(key)
            .upload_id(id)
            .part_number(n)
            .copy_source(source)
    }

    /// CompleteMultipartUpload of the upload `id` of `key` from `parts`.
    pub fn complete(
        &self,
        (key, id): (&str, &str),
        parts: Vec<CompletedPart>,
    ) -> CompleteMultipartUploadFluentBuilder {
        let done = CompletedMultipartUpload::builder().set_parts(Some(parts));
        let complete = self.client.complete_multipart_upload().bucket(&self.name);
        complete
            .key(key)
            .upload_id(id)
            .multipart_upload(done.build())
    }

    /// AbortMultipartUpload of the upload `id` of `key`.
    pub fn abort(&self, (key, id): (&str, &str)) -> AbortMultipartUploadFluentBuilder {
        self.client
            .abort_multipart_upload()
            .bucket(&self.name)
            .key(key)
            .upload_id(id)
    }

    /// Every byte of the object `key`.
    pub async fn bytes(&self, key: &str) -> Vec<u8> {
        body_of(self.get(key).send().await.unwrap()).await
    }
}

/// A part of a multipart upload as CompleteMultipartUpload names it.
pub fn completed(n: i32, etag: &str) -> CompletedPart {
    CompletedPart::builder().part_number(n).e_tag(etag).build()
}

/// Deterministic pseudo-random bytes.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    testkit::xorshift_bytes(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1, len)
}

/// Hex MD5.
pub fn md5_hex(b: &[u8]) -> String {
    use md5::Digest as _;
    hex(&md5::Md5::digest(b))
}

/// Polls `f` until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every object file under a storage node's `objects/` area.
pub fn object_files(dataset: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let root = dataset.join("objects");
    for owner in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(owner.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            out.push(f.path());
        }
    }
    out
}
