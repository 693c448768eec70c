//! Where objects written through the S3 API are, for the services that read them outside that
//! API (the jobs supervisor and agents take them as inputs by their Manta path).
//!
//! An S3 object is named in the Manta namespace `/:login/buckets/<bucket>/objects/<key>`
//! ([`BucketObjectPath`]). Its record is a [`MetadataRecord`](crate::MetadataRecord) in the
//! Moray bucket [`OBJECTS_BUCKET`] under [`object_key`]`(bucket, key)` (the ring hashes it by
//! the bucket name); `owner` is the uuid of the account owning the bucket, and the bytes are
//! `<dataset>/objects/<creator>/<objectId>` on every node in `sharks`, as for Manta objects.

/// The Moray bucket of S3 object records.
pub const OBJECTS_BUCKET: &str = "manta_s3_objects";

/// The Moray bucket of the older versions and delete markers of S3 objects in buckets with
/// versioning (keyed `<bucket>/<version order>`; the current version stays in
/// [`OBJECTS_BUCKET`]).
pub const VERSIONS_BUCKET: &str = "manta_s3_versions";

/// Every Moray bucket whose records name object copies on storage nodes: what garbage
/// collection must find no record in before it reclaims a copy, and what repair keeps whole.
pub const OBJECT_RECORD_BUCKETS: [&str; 3] = ["manta", OBJECTS_BUCKET, VERSIONS_BUCKET];

/// The Moray key of the record of `key` in S3 bucket `bucket`.
pub fn object_key(bucket: &str, key: &str) -> String {
    format!("{bucket}/{key}")
}

/// `/:login/buckets/<bucket>/objects/<key>`, split. The key is everything after `objects/`,
/// `/` included, taken as is (no percent-decoding: these are names, not URLs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketObjectPath {
    /// The account's login.
    pub login: String,
    /// The S3 bucket.
    pub bucket: String,
    /// The object key.
    pub key: String,
}

impl BucketObjectPath {
    /// Splits a path; `None` when it does not name an object in a bucket.
    pub fn parse(path: &str) -> Option<BucketObjectPath> {
        let rest = path.strip_prefix('/')?;
        let mut it = rest.splitn(5, '/');
        let login = it.next().filter(|s| !s.is_empty())?;
        if it.next()? != "buckets" {
            return None;
        }
        let bucket = it.next().filter(|s| !s.is_empty())?;
        if it.next()? != "objects" {
            return None;
        }
        let key = it.next().filter(|s| !s.is_empty())?;
        Some(BucketObjectPath {
            login: login.to_owned(),
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        })
    }

    /// The Moray key of the object's record.
    pub fn record_key(&self) -> String {
        object_key(&self.bucket, &self.key)
    }
}

impl std::fmt::Display for BucketObjectPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "/{}/buckets/{}/objects/{}",
            self.login, self.bucket, self.key
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_object_paths() {
        let p = BucketObjectPath::parse("/jill/buckets/logs/objects/2024/01/a b.txt").unwrap();
        assert_eq!(p.login, "jill");
        assert_eq!(p.bucket, "logs");
        assert_eq!(p.key, "2024/01/a b.txt");
        assert_eq!(p.record_key(), "logs/2024/01/a b.txt");
        for bad in [
            "/jill/stor/logs",
            "/jill/buckets/logs",
            "/jill/buckets/logs/objects",
            "/jill/buckets/logs/objects/",
            "/jill/buckets//objects/k",
            "jill/buckets/b/objects/k",
            "",
        ] {
            assert_eq!(BucketObjectPath::parse(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn round_trips(login in "[a-z][a-z0-9_]{0,10}", bucket in "[a-z0-9][a-z0-9.-]{1,20}[a-z0-9]", key in "\\PC{1,40}") {
            let p = BucketObjectPath { login, bucket, key };
            prop_assert_eq!(BucketObjectPath::parse(&p.to_string()), Some(p));
        }

        #[test]
        fn never_panics(s in any::<String>()) {
            let _ = BucketObjectPath::parse(&s);
        }
    }
}
