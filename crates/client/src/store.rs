//! [`object_store::ObjectStore`] over the Manta namespace, so Rust data tools (DataFusion,
//! Arrow, Polars, ...) can read and write the store.
//!
//! A [`MantaStore`] is rooted at a directory (`~~/stor/lake`); the store path `a/b/c.parquet`
//! is the object `<root>/a/b/c.parquet`. Manta has real directories where `object_store` has
//! prefixes, so:
//! - a put creates missing parent directories (only when the first attempt says
//!   `DirectoryDoesNotExist`, so the common case costs one request);
//! - a delete removes the parent directories it leaves empty, up to the root, so the tree looks
//!   like prefixes to `list_with_delimiter`;
//! - `list` walks the directories below the prefix, `list_with_delimiter` lists one;
//! - copy is a SnapLink (no bytes move; `CopyMode::Create` uses `If-None-Match: *`);
//! - conditional puts use the object's etag (`PutMode::Update`) or `If-None-Match: *`
//!   (`PutMode::Create`), which the front door makes atomic;
//! - multipart uploads spool their parts to a local temporary file and upload it once on
//!   `complete` (Manta objects are written whole); nothing is sent before then;
//! - versions and tags are not supported (`NotSupported`).

use std::fmt;
use std::ops::Range;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::stream::BoxStream;
use futures_util::{StreamExt as _, TryStreamExt as _};
use http::HeaderMap;
use object_store::path::Path;
use object_store::{
    Attribute, AttributeValue, Attributes, CopyMode, CopyOptions, GetOptions as OsGetOptions,
    GetRange, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMode, PutMultipartOptions, PutOptions as OsPutOptions, PutPayload, PutResult as OsPutResult,
    UploadPart,
};

use crate::client::{EntryType, GetOptions, MantaClient, PutOptions, PutResult};
use crate::error::Error;
use crate::walk::WalkOptions;

const STORE: &str = "Manta";

/// An [`ObjectStore`] rooted at a Manta directory. See the module docs for how object store
/// semantics map onto directories.
#[derive(Debug, Clone)]
pub struct MantaStore {
    client: MantaClient,
    /// The root directory, expanded and normalised (`/jill/stor/lake`).
    root: String,
    /// Where multipart uploads are spooled.
    spool: PathBuf,
    /// Listings and deletions in flight at once.
    parallel: usize,
}

impl MantaStore {
    /// A store rooted at the directory `root` (`~~` is expanded). The directory is created on
    /// the first put that needs it.
    ///
    /// # Errors
    /// [`Error::InvalidPath`] when `root` is not a path below an area (`/jill/stor/...`,
    /// `/jill/public/...`, or an area root itself).
    pub fn new(client: MantaClient, root: &str) -> Result<MantaStore, Error> {
        let p = client.path(root)?;
        if p.area().is_none() {
            return Err(Error::InvalidPath(format!(
                "{root}: a store must be rooted inside an area such as ~~/stor"
            )));
        }
        Ok(MantaStore {
            client,
            root: p.to_string(),
            spool: std::env::temp_dir(),
            parallel: 8,
        })
    }

    /// Spools multipart uploads in `dir` instead of the system temp dir.
    pub fn with_spool_dir(mut self, dir: impl Into<PathBuf>) -> MantaStore {
        self.spool = dir.into();
        self
    }

    /// Listings and deletions in flight at once (default 8).
    pub fn with_parallelism(mut self, n: usize) -> MantaStore {
        self.parallel = n.max(1);
        self
    }

    /// The root directory.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The client underneath.
    pub fn client(&self) -> &MantaClient {
        &self.client
    }

    fn full(&self, location: &Path) -> String {
        full_path(&self.root, location)
    }

    /// Creates the parent directory of `full` (and its missing parents) down from the root.
    async fn make_parent(&self, full: &str) -> Result<(), Error> {
        let parent = manta_types::path::dirname(full);
        self.client.mkdirp(parent).await
    }

    async fn put_whole(
        &self,
        location: &Path,
        parts: Vec<Bytes>,
        mode: &PutMode,
        attributes: &Attributes,
    ) -> object_store::Result<OsPutResult> {
        let full = self.full(location);
        let opts = put_options(mode, attributes)?;
        let mut r = self
            .client
            .put_parts(&full, parts.clone(), opts.clone())
            .await;
        if matches!(&r, Err(e) if e.code_str() == Some("DirectoryDoesNotExist")) {
            self.make_parent(&full)
                .await
                .map_err(|e| to_os(e, location))?;
            r = self.client.put_parts(&full, parts, opts).await;
        }
        put_result(r, mode, location)
    }
}

fn full_path(root: &str, location: &Path) -> String {
    let rel = location.as_ref();
    if rel.is_empty() {
        root.to_owned()
    } else {
        format!("{root}/{rel}")
    }
}

impl fmt::Display for MantaStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MantaStore({}{})", self.client.url(), self.root)
    }
}

/// The store path of a full Manta path below `root`.
fn location_of(root: &str, full: &str) -> Path {
    let rel = full
        .strip_prefix(root)
        .map(|r| r.trim_start_matches('/'))
        .unwrap_or(full);
    Path::parse(rel).unwrap_or_else(|_| Path::from(rel))
}

/// Maps a client error onto the object store's error kinds.
fn to_os(e: Error, location: &Path) -> object_store::Error {
    let path = location.to_string();
    match (&e, e.status(), e.code_str()) {
        (_, _, Some("ResourceNotFound" | "DirectoryDoesNotExist" | "SourceObjectNotFound"))
        | (_, Some(404), _) => object_store::Error::NotFound {
            path,
            source: Box::new(e),
        },
        (_, Some(412), _) => object_store::Error::Precondition {
            path,
            source: Box::new(e),
        },
        (_, Some(304), _) => object_store::Error::NotModified {
            path,
            source: Box::new(e),
        },
        (_, Some(401), _) => object_store::Error::Unauthenticated {
            path,
            source: Box::new(e),
        },
        (_, Some(403), _) => object_store::Error::PermissionDenied {
            path,
            source: Box::new(e),
        },
        _ => object_store::Error::Generic {
            store: STORE,
            source: Box::new(e),
        },
    }
}

fn not_supported(what: &str) -> object_store::Error {
    object_store::Error::NotSupported {
        source: format!("{what} is not supported by Manta").into(),
    }
}

/// The headers a put sends for `mode` and `attributes`.
fn put_options(mode: &PutMode, attributes: &Attributes) -> object_store::Result<PutOptions> {
    let mut opts = PutOptions::default();
    match mode {
        PutMode::Overwrite => {}
        PutMode::Create => opts.headers.push(("if-none-match".into(), "*".into())),
        PutMode::Update(v) => {
            if v.version.is_some() {
                return Err(not_supported("a versioned update"));
            }
            let etag = v
                .e_tag
                .clone()
                .ok_or_else(|| object_store::Error::Generic {
                    store: STORE,
                    source: "PutMode::Update needs an e_tag".into(),
                })?;
            opts.headers.push(("if-match".into(), etag));
        }
    }
    for (k, v) in attributes {
        let name = match k {
            Attribute::ContentType => {
                opts.content_type = Some(v.to_string());
                continue;
            }
            Attribute::ContentDisposition => "content-disposition".to_owned(),
            Attribute::ContentEncoding => "content-encoding".to_owned(),
            Attribute::ContentLanguage => "content-language".to_owned(),
            Attribute::CacheControl => "cache-control".to_owned(),
            Attribute::Metadata(m) => format!("m-{m}"),
            other => return Err(not_supported(&format!("the attribute {other:?}"))),
        };
        opts.headers.push((name, v.to_string()));
    }
    Ok(opts)
}

fn put_result(
    r: Result<PutResult, Error>,
    mode: &PutMode,
    location: &Path,
) -> object_store::Result<OsPutResult> {
    match r {
        Ok(r) => Ok(OsPutResult {
            e_tag: r.etag,
            version: None,
            extensions: Default::default(),
        }),
        Err(e) if e.status() == Some(412) && matches!(mode, PutMode::Create) => {
            Err(object_store::Error::AlreadyExists {
                path: location.to_string(),
                source: Box::new(e),
            })
        }
        Err(e) => Err(to_os(e, location)),
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn http_date(t: DateTime<Utc>) -> String {
    httpdate::fmt_http_date(t.into())
}

fn last_modified(h: &HeaderMap) -> DateTime<Utc> {
    header(h, "last-modified")
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .map(DateTime::<Utc>::from)
        .unwrap_or_else(|| DateTime::<Utc>::from(UNIX_EPOCH))
}

fn mtime(iso: &str) -> DateTime<Utc> {
    manta_types::time::parse_iso8601_ms(iso)
        .and_then(|ms| DateTime::<Utc>::from_timestamp_millis(i64::try_from(ms).ok()?))
        .unwrap_or_else(|| DateTime::<Utc>::from(UNIX_EPOCH))
}

fn attributes_of(h: &HeaderMap) -> Attributes {
    let mut a = Attributes::new();
    let fixed = [
        ("content-type", Attribute::ContentType),
        ("content-disposition", Attribute::ContentDisposition),
        ("content-encoding", Attribute::ContentEncoding),
        ("content-language", Attribute::ContentLanguage),
        ("cache-control", Attribute::CacheControl),
    ];
    for (name, attr) in fixed {
        if let Some(v) = header(h, name) {
            a.insert(attr, AttributeValue::from(v.to_owned()));
        }
    }
    for (k, v) in h {
        if let (Some(m), Ok(v)) = (k.as_str().strip_prefix("m-"), v.to_str()) {
            a.insert(
                Attribute::Metadata(m.to_owned().into()),
                AttributeValue::from(v.to_owned()),
            );
        }
    }
    a
}

/// `bytes a-b/total` of a 206 answer.
fn content_range(h: &HeaderMap) -> Option<(Range<u64>, u64)> {
    let v = header(h, "content-range")?.strip_prefix("bytes ")?;
    let (range, total) = v.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let (a, b): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    Some((a..b + 1, total.trim().parse().ok()?))
}

fn range_header(r: &GetRange) -> object_store::Result<String> {
    match r {
        GetRange::Bounded(r) if r.start >= r.end => Err(object_store::Error::Generic {
            store: STORE,
            source: format!("the range {}..{} is empty", r.start, r.end).into(),
        }),
        GetRange::Bounded(r) => Ok(format!("bytes={}-{}", r.start, r.end - 1)),
        GetRange::Offset(o) => Ok(format!("bytes={o}-")),
        GetRange::Suffix(n) => Ok(format!("bytes=-{n}")),
    }
}

#[async_trait]
impl ObjectStore for MantaStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: OsPutOptions,
    ) -> object_store::Result<OsPutResult> {
        if !opts.tags.is_empty() {
            return Err(not_supported("tagging"));
        }
        let parts: Vec<Bytes> = payload.into_iter().collect();
        self.put_whole(location, parts, &opts.mode, &opts.attributes)
            .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        if !opts.tags.is_empty() {
            return Err(not_supported("tagging"));
        }
        // Fail early on attributes we cannot store.
        put_options(&PutMode::Overwrite, &opts.attributes)?;
        let spool = self.spool.clone();
        let file = manta_util::blocking(move || {
            tempfile::Builder::new()
                .prefix(".manta-upload-")
                .tempfile_in(spool)
        })
        .await
        .map_err(|e| object_store::Error::Generic {
            store: STORE,
            source: Box::new(e),
        })?;
        Ok(Box::new(SpooledUpload {
            store: self.clone(),
            location: location.clone(),
            attributes: opts.attributes,
            file: Some(Arc::new(file)),
            len: 0,
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: OsGetOptions,
    ) -> object_store::Result<GetResult> {
        if options.version.is_some() {
            return Err(not_supported("reading a version"));
        }
        let full = self.full(location);
        let mut headers: Vec<(String, String)> = Vec::new();
        if let Some(v) = &options.if_match {
            headers.push(("if-match".into(), v.clone()));
        }
        if let Some(v) = &options.if_none_match {
            headers.push(("if-none-match".into(), v.clone()));
        }
        if let Some(t) = options.if_modified_since {
            headers.push(("if-modified-since".into(), http_date(t)));
        }
        if let Some(t) = options.if_unmodified_since {
            headers.push(("if-unmodified-since".into(), http_date(t)));
        }
        if let Some(r) = &options.range {
            headers.push(("range".into(), range_header(r)?));
        }
        let (h, status, body) = if options.head {
            let info = self
                .client
                .info_with(&full, &headers)
                .await
                .map_err(|e| to_os(e, location))?;
            (info.headers, 200, None)
        } else {
            let resp = self
                .client
                .get(
                    &full,
                    GetOptions {
                        range: None,
                        headers,
                    },
                )
                .await
                .map_err(|e| to_os(e, location))?;
            (resp.headers().clone(), resp.status().as_u16(), Some(resp))
        };
        if status == 304 {
            return Err(object_store::Error::NotModified {
                path: location.to_string(),
                source: "the object was not modified".into(),
            });
        }
        if header(&h, "content-type").is_some_and(|c| c.contains("type=directory")) {
            return Err(object_store::Error::NotFound {
                path: location.to_string(),
                source: format!("{full} is a directory").into(),
            });
        }
        let length: u64 = header(&h, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let (range, size) = match content_range(&h) {
            Some((r, total)) if status == 206 => (r, total),
            _ => (0..length, length),
        };
        let meta = ObjectMeta {
            location: location.clone(),
            last_modified: last_modified(&h),
            size,
            e_tag: header(&h, "etag").map(str::to_owned),
            version: None,
        };
        let payload = match body {
            Some(resp) => {
                let loc = location.clone();
                resp.bytes_stream()
                    .map_err(move |e| {
                        to_os(
                            Error::Http {
                                path: loc.to_string(),
                                source: e,
                            },
                            &loc,
                        )
                    })
                    .boxed()
            }
            None => futures_util::stream::empty().boxed(),
        };
        Ok(GetResult {
            payload: GetResultPayload::Stream(payload),
            meta,
            range,
            attributes: attributes_of(&h),
            extensions: Default::default(),
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let store = self.clone();
        locations
            .map(move |loc| {
                let store = store.clone();
                async move {
                    let loc = loc?;
                    let full = store.full(&loc);
                    match store.client.rm(&full).await {
                        Ok(()) => {}
                        // Deleting what is not there succeeds, as in the other stores.
                        Err(e) if e.is_not_found() => return Ok(loc),
                        Err(e) => return Err(to_os(e, &loc)),
                    }
                    // Remove the directories this left empty, so they stop showing as prefixes.
                    let mut dir = manta_types::path::dirname(&full).to_owned();
                    while dir.len() > store.root.len() && dir.starts_with(&store.root) {
                        if store.client.rm(&dir).await.is_err() {
                            break;
                        }
                        dir = manta_types::path::dirname(&dir).to_owned();
                    }
                    Ok(loc)
                }
            })
            .buffered(self.parallel)
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let dir = prefix.map_or_else(|| self.root.clone(), |p| self.full(p));
        let root = self.root.clone();
        self.client
            .walk(
                &dir,
                WalkOptions {
                    parallel: self.parallel,
                    max_depth: None,
                },
            )
            .filter_map(move |r| {
                let out = match r {
                    Ok(w) if w.entry.kind == EntryType::Object => {
                        let full = w.path();
                        Some(Ok(ObjectMeta {
                            location: location_of(&root, &full),
                            last_modified: mtime(&w.entry.mtime),
                            size: w.entry.size.unwrap_or(0),
                            e_tag: w.entry.etag,
                            version: None,
                        }))
                    }
                    Ok(_) => None,
                    // A prefix that is not a directory (or one that vanished mid-walk) holds
                    // nothing.
                    Err(e) if e.is_not_found() || e.code_str() == Some("NotADirectory") => None,
                    Err(e) => Some(Err(object_store::Error::Generic {
                        store: STORE,
                        source: Box::new(e),
                    })),
                };
                std::future::ready(out)
            })
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let dir = prefix.map_or_else(|| self.root.clone(), |p| self.full(p));
        let entries = match self.client.ls_all(&dir).await {
            Ok(e) => e,
            Err(e) if e.is_not_found() || e.code_str() == Some("NotADirectory") => Vec::new(),
            Err(e) => {
                return Err(object_store::Error::Generic {
                    store: STORE,
                    source: Box::new(e),
                });
            }
        };
        let mut objects = Vec::new();
        let mut common_prefixes = Vec::new();
        for e in entries {
            let location = location_of(&self.root, &format!("{dir}/{}", e.name));
            match e.kind {
                EntryType::Directory => common_prefixes.push(location),
                EntryType::Object => objects.push(ObjectMeta {
                    location,
                    last_modified: mtime(&e.mtime),
                    size: e.size.unwrap_or(0),
                    e_tag: e.etag,
                    version: None,
                }),
            }
        }
        Ok(ListResult {
            common_prefixes,
            objects,
            extensions: Default::default(),
        })
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        let src = self.full(from);
        let dst = self.full(to);
        let headers: Vec<(String, String)> = match options.mode {
            CopyMode::Overwrite => Vec::new(),
            CopyMode::Create => vec![("if-none-match".into(), "*".into())],
        };
        let mut r = self.client.ln_with(&src, &dst, &headers).await;
        if matches!(&r, Err(e) if e.code_str() == Some("DirectoryDoesNotExist")) {
            self.make_parent(&dst).await.map_err(|e| to_os(e, to))?;
            r = self.client.ln_with(&src, &dst, &headers).await;
        }
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(412) && options.mode == CopyMode::Create => {
                Err(object_store::Error::AlreadyExists {
                    path: to.to_string(),
                    source: Box::new(e),
                })
            }
            Err(e) if e.code_str() == Some("SourceObjectNotFound") => Err(to_os(e, from)),
            Err(e) => Err(to_os(e, to)),
        }
    }
}

/// A multipart upload spooled to a local temporary file: parts are written at their offsets
/// (in the order `put_part` was called, whatever order they finish in) and the file is
/// uploaded as one object on `complete`.
#[derive(Debug)]
struct SpooledUpload {
    store: MantaStore,
    location: Path,
    attributes: Attributes,
    /// `None` once completed or aborted. Removed from disk when the last handle drops.
    file: Option<Arc<tempfile::NamedTempFile>>,
    /// Bytes handed to `put_part` so far: the offset of the next part.
    len: u64,
}

#[async_trait]
impl MultipartUpload for SpooledUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let offset = self.len;
        self.len += data.content_length() as u64;
        let file = self.file.clone();
        Box::pin(async move {
            let file = file.ok_or_else(|| object_store::Error::Generic {
                store: STORE,
                source: "the upload is already completed or aborted".into(),
            })?;
            manta_util::blocking(move || {
                let mut at = offset;
                for chunk in data.iter() {
                    file.as_file().write_all_at(chunk, at)?;
                    at += chunk.len() as u64;
                }
                Ok(())
            })
            .await
            .map_err(|e| object_store::Error::Generic {
                store: STORE,
                source: Box::new(e),
            })
        })
    }

    async fn complete(&mut self) -> object_store::Result<OsPutResult> {
        let file = self
            .file
            .take()
            .ok_or_else(|| object_store::Error::Generic {
                store: STORE,
                source: "the upload is already completed or aborted".into(),
            })?;
        let full = self.store.full(&self.location);
        let opts = put_options(&PutMode::Overwrite, &self.attributes)?;
        let spooled = file.path().to_owned();
        let client = &self.store.client;
        let mut r = client.put_file(&full, &spooled, opts.clone()).await;
        if matches!(&r, Err(e) if e.code_str() == Some("DirectoryDoesNotExist")) {
            self.store
                .make_parent(&full)
                .await
                .map_err(|e| to_os(e, &self.location))?;
            r = client.put_file(&full, &spooled, opts).await;
        }
        drop(file);
        put_result(r, &PutMode::Overwrite, &self.location)
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.file = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_round_trip_through_full_paths() {
        for rel in [
            "a",
            "a/b/c.parquet",
            "foo bar/x y",
            "%Q.parquet",
            "🇦🇺/$x@@~.txt",
        ] {
            let loc = Path::parse(rel).unwrap();
            let full = full_path("/jill/stor/lake", &loc);
            assert_eq!(full, format!("/jill/stor/lake/{rel}"));
            assert_eq!(location_of("/jill/stor/lake", &full), loc);
        }
        assert_eq!(
            full_path("/jill/stor/lake", &Path::default()),
            "/jill/stor/lake"
        );
    }

    #[test]
    fn ranges_become_headers() {
        assert_eq!(range_header(&GetRange::Bounded(2..5)).unwrap(), "bytes=2-4");
        assert_eq!(range_header(&GetRange::Offset(7)).unwrap(), "bytes=7-");
        assert_eq!(range_header(&GetRange::Suffix(3)).unwrap(), "bytes=-3");
        assert!(range_header(&GetRange::Bounded(5..5)).is_err());
        let mut h = HeaderMap::new();
        h.insert("content-range", "bytes 2-4/10".parse().unwrap());
        assert_eq!(content_range(&h), Some((2..5, 10)));
    }

    proptest::proptest! {
        #[test]
        fn content_range_round_trips(a in 0u64..1 << 40, len in 1u64..1 << 30, extra in 0u64..1000) {
            let b = a + len - 1;
            let mut h = HeaderMap::new();
            h.insert("content-range", format!("bytes {a}-{b}/{}", b + 1 + extra).parse().unwrap());
            proptest::prop_assert_eq!(content_range(&h), Some((a..b + 1, b + 1 + extra)));
            let header = range_header(&GetRange::Bounded(a..b + 1)).unwrap();
            proptest::prop_assert_eq!(header, format!("bytes={a}-{b}"));
        }

        #[test]
        fn content_range_never_panics(v in "[ -~]{0,40}") {
            let mut h = HeaderMap::new();
            if let Ok(v) = v.parse() {
                h.insert("content-range", v);
            }
            let _ = content_range(&h);
        }

        #[test]
        fn locations_round_trip(parts in proptest::collection::vec("[a-zA-Z0-9 _=.-]{1,12}", 1..5)) {
            let rel = parts.join("/");
            if let Ok(loc) = Path::parse(&rel) {
                let full = full_path("/jill/stor/lake", &loc);
                proptest::prop_assert_eq!(location_of("/jill/stor/lake", &full), loc);
            }
        }
    }
}
