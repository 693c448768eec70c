//! The metadata record of one namespace entry, as stored in Moray's `manta` bucket.
//!
//! The layout follows the original's records (camelCase fields, `type` of `object` or
//! `directory`, `sharks` naming the storage nodes that hold a copy) and adds a version marker
//! `v`. Records written before the marker existed have none and read as version 1; a reader
//! refuses versions newer than it knows rather than misreading them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::ObjectId;

/// The record version this code writes.
pub const RECORD_VERSION: u32 = 1;

/// MD5 of zero bytes, base64: what an empty object reports.
pub const EMPTY_MD5: &str = "1B2M2Y8AsgTpgAmY7PhCfg==";

/// One storage node holding a copy of an object's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SharkRef {
    /// Failure domain (datacenter) of the node.
    pub datacenter: String,
    /// The node's storage id (how the front door reaches it).
    pub manta_storage_id: String,
}

/// Fields only objects have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectInfo {
    /// Size in bytes.
    pub content_length: u64,
    /// Base64 MD5 of the bytes, computed while they streamed in.
    #[serde(rename = "contentMD5")]
    pub content_md5: String,
    /// Stored `Content-Type`.
    pub content_type: String,
    /// Stored `Content-Disposition`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    /// The etag clients see: the object id.
    pub etag: String,
    /// The id the bytes are stored under on every node in `sharks`.
    pub object_id: ObjectId,
    /// Nodes holding a copy; empty for zero-byte objects, which store no bytes.
    pub sharks: Vec<SharkRef>,
    /// For links: the key of the source at the time of linking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_from: Option<String>,
    /// Hex SHA-256 of the bytes (an addition to the original's record; objects written before
    /// CRC32C block sums).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// CRC32C of the bytes, 8 hex digits (an addition to the original's record): what a read
    /// checks the bytes it serves against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc32c: Option<String>,
    /// For an object joined from the parts of a multipart upload: their sizes, in order (an
    /// addition to the original's record). Reads of one part and part listings use them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<PartSizes>,
}

/// The sizes of an object's parts, in order, kept as runs of equal sizes (`[[size, count],
/// ...]`): uploads mostly use one part size and a smaller last part, so even 10 000 parts
/// take a few bytes of the record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartSizes(Vec<(u64, u32)>);

impl PartSizes {
    /// The runs of `sizes`.
    pub fn of(sizes: impl IntoIterator<Item = u64>) -> PartSizes {
        let mut runs: Vec<(u64, u32)> = Vec::new();
        for size in sizes {
            match runs.last_mut() {
                Some((s, n)) if *s == size && *n < u32::MAX => *n += 1,
                _ => runs.push((size, 1)),
            }
        }
        PartSizes(runs)
    }

    /// How many parts.
    pub fn count(&self) -> u64 {
        self.0.iter().map(|&(_, n)| u64::from(n)).sum()
    }

    /// Each part's number (from 1), size and first byte in the object, in order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        self.0
            .iter()
            .flat_map(|&(size, n)| std::iter::repeat_n(size, n as usize))
            .scan((0u64, 0u64), |(number, offset), size| {
                *number += 1;
                let start = *offset;
                *offset = offset.saturating_add(size);
                Some((*number, size, start))
            })
    }

    /// The bytes of part `number` (from 1) in the object; `None` past the last part.
    pub fn range(&self, number: u64) -> Option<std::ops::Range<u64>> {
        let mut start = 0u64;
        let mut first = 1u64;
        for &(size, n) in &self.0 {
            let n = u64::from(n);
            if number < first + n && number >= first {
                let s = start + (number - first) * size;
                return Some(s..s + size);
            }
            start += size * n;
            first += n;
        }
        None
    }
}

/// Fields only directories have.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryInfo {
    /// For multipart-upload part directories: the upload's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<serde_json::Value>,
    /// Set (epoch ms) by a removal that is checking the directory is empty: a write that
    /// lands in it meanwhile waits to see whether the directory stays, and takes itself back
    /// if it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removing: Option<u64>,
}

/// Object or directory, with the fields of each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum EntryKind {
    /// An object: bytes on storage nodes.
    Object(ObjectInfo),
    /// A directory: only metadata.
    Directory(DirectoryInfo),
}

/// The record of one entry in the namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetadataRecord {
    /// Record version marker; see the module docs.
    #[serde(rename = "v", default = "version_one")]
    pub version: u32,
    /// Key of the parent directory (`/<owner-uuid>/stor/a`).
    pub dirname: String,
    /// Key of this entry (`/<owner-uuid>/stor/a/b`).
    pub key: String,
    /// Last name of the key.
    pub name: String,
    /// Account id that owns the namespace the entry is in.
    pub owner: String,
    /// Account id whose request created the bytes (differs from `owner` for cross-account links).
    pub creator: String,
    /// Last modification, epoch milliseconds.
    pub mtime: u64,
    /// Stored headers: `m-*` user metadata, `cache-control`, CORS, `content-disposition`, ...
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Role tags.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Object or directory.
    #[serde(flatten)]
    pub kind: EntryKind,
    /// The request that wrote this record, for tracing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The S3 version id of this object, in a bucket with versioning (none for the "null"
    /// version: an object written before versioning was enabled, or while it is suspended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
}

fn version_one() -> u32 {
    1
}

/// A stored record this code cannot read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Written by newer code.
    #[error("record version {0} is newer than this server understands ({RECORD_VERSION})")]
    TooNew(u32),
    /// Not a record at all.
    #[error("malformed metadata record: {0}")]
    Malformed(#[from] serde_json::Error),
}

impl MetadataRecord {
    /// A new directory's record at `key` (`/<owner-uuid>/...`), owned and made by `owner`.
    pub fn directory(key: &str, owner: &str, mtime: u64) -> MetadataRecord {
        MetadataRecord {
            version: RECORD_VERSION,
            dirname: crate::path::dirname(key).to_owned(),
            name: crate::path::basename(key).to_owned(),
            key: key.to_owned(),
            owner: owner.to_owned(),
            creator: owner.to_owned(),
            mtime,
            headers: BTreeMap::new(),
            roles: Vec::new(),
            kind: EntryKind::Directory(DirectoryInfo::default()),
            request_id: None,
            version_id: None,
        }
    }

    /// Reads a stored record, migrating older versions.
    ///
    /// # Errors
    /// [`RecordError::TooNew`] for versions above [`RECORD_VERSION`], or malformed JSON.
    pub fn from_value(value: serde_json::Value) -> Result<MetadataRecord, RecordError> {
        let version = value
            .get("v")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(1);
        if version > u64::from(RECORD_VERSION) {
            return Err(RecordError::TooNew(
                u32::try_from(version).unwrap_or(u32::MAX),
            ));
        }
        // Version 1 is the only layout so far; a future version migrates here, step by step.
        let mut rec: MetadataRecord = serde_json::from_value(value)?;
        rec.version = RECORD_VERSION;
        Ok(rec)
    }

    /// The record as a JSON value for storage.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("records always serialise")
    }

    /// The object fields, if this is an object.
    pub fn object(&self) -> Option<&ObjectInfo> {
        match &self.kind {
            EntryKind::Object(o) => Some(o),
            EntryKind::Directory(_) => None,
        }
    }

    /// True for directories.
    pub fn is_directory(&self) -> bool {
        matches!(self.kind, EntryKind::Directory(_))
    }

    /// `"object"` or `"directory"`.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            EntryKind::Object(_) => "object",
            EntryKind::Directory(_) => "directory",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object() -> MetadataRecord {
        MetadataRecord {
            version: RECORD_VERSION,
            dirname: "/u1/stor".into(),
            key: "/u1/stor/cmd.tgz".into(),
            name: "cmd.tgz".into(),
            owner: "u1".into(),
            creator: "u1".into(),
            mtime: 1_396_994_173_363,
            headers: [("m-foo".to_string(), "bar".to_string())].into(),
            roles: vec![],
            kind: EntryKind::Object(ObjectInfo {
                content_length: 17_062_152,
                content_md5: "vVRjo74mJquDRsoW2HJM/g==".into(),
                content_type: "application/octet-stream".into(),
                content_disposition: None,
                etag: "cb1036e4-0000-4000-8000-000000000000".into(),
                object_id: "cb1036e4-0000-4000-8000-000000000000".parse().unwrap(),
                sharks: vec![SharkRef {
                    datacenter: "dc1".into(),
                    manta_storage_id: "1.stor.local".into(),
                }],
                created_from: None,
                sha256: None,
                crc32c: None,
                parts: None,
            }),
            request_id: None,
            version_id: None,
        }
    }

    #[test]
    fn part_sizes_are_runs_and_answer_each_parts_bytes() {
        let p = PartSizes::of([5, 5, 5, 2]);
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            serde_json::json!([[5, 3], [2, 1]])
        );
        assert_eq!(p.count(), 4);
        assert_eq!(p.range(1), Some(0..5));
        assert_eq!(p.range(3), Some(10..15));
        assert_eq!(p.range(4), Some(15..17));
        assert_eq!(p.range(0), None);
        assert_eq!(p.range(5), None);
        let all: Vec<_> = p.iter().collect();
        assert_eq!(all, [(1, 5, 0), (2, 5, 5), (3, 5, 10), (4, 2, 15)]);
        assert_eq!(PartSizes::of([]).count(), 0);
    }

    proptest::proptest! {
        #[test]
        fn part_ranges_tile_the_object(sizes in proptest::collection::vec(0u64..20, 0..50)) {
            let p = PartSizes::of(sizes.iter().copied());
            proptest::prop_assert_eq!(p.count(), sizes.len() as u64);
            let mut at = 0;
            for (i, &size) in sizes.iter().enumerate() {
                let r = p.range(i as u64 + 1).unwrap();
                proptest::prop_assert_eq!(r.clone(), at..at + size);
                at = r.end;
            }
            proptest::prop_assert!(p.range(sizes.len() as u64 + 1).is_none());
        }
    }

    #[test]
    fn round_trips_through_json_in_the_original_layout() {
        let rec = object();
        let v = rec.to_value();
        assert_eq!(v["type"], "object");
        assert_eq!(v["contentMD5"], "vVRjo74mJquDRsoW2HJM/g==");
        assert_eq!(v["sharks"][0]["manta_storage_id"], "1.stor.local");
        assert_eq!(v["v"], 1);
        assert_eq!(MetadataRecord::from_value(v).unwrap(), rec);
    }

    #[test]
    fn reads_unversioned_records_and_refuses_newer_ones() {
        let mut v = object().to_value();
        v.as_object_mut().unwrap().remove("v");
        assert_eq!(MetadataRecord::from_value(v.clone()).unwrap(), object());
        v["v"] = 99.into();
        assert!(matches!(
            MetadataRecord::from_value(v),
            Err(RecordError::TooNew(99))
        ));
    }

    #[test]
    fn directories_have_no_object_fields() {
        let dir = MetadataRecord {
            kind: EntryKind::Directory(DirectoryInfo::default()),
            ..object()
        };
        let v = dir.to_value();
        assert_eq!(v["type"], "directory");
        assert!(v.get("contentLength").is_none());
        assert!(MetadataRecord::from_value(v).unwrap().is_directory());
    }
}
