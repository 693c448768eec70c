//! Wire types: bucket configurations, records, and the options of every call.
//!
//! Every RPC is `POST /<method>` with a JSON object of named arguments; the request structs
//! here are those bodies (the client sends them, the server parses them), so both sides agree
//! by construction.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// The type of an indexed field, which decides its Postgres column type and how filter values
/// compare against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IndexType {
    /// `TEXT`; compared as strings (byte order, collation "C").
    String,
    /// `NUMERIC`; exact decimal comparison.
    Number,
    /// `BOOLEAN`.
    Boolean,
    /// `TEXT[]` with a GIN index; `(f=v)` matches when any element equals `v`.
    StringArray,
    /// `NUMERIC[]` with a GIN index.
    NumberArray,
    /// `BOOLEAN[]` with a GIN index.
    BooleanArray,
}

impl IndexType {
    /// The wire spelling (`string`, `number`, `boolean`, `[string]`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            IndexType::String => "string",
            IndexType::Number => "number",
            IndexType::Boolean => "boolean",
            IndexType::StringArray => "[string]",
            IndexType::NumberArray => "[number]",
            IndexType::BooleanArray => "[boolean]",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<IndexType> {
        Some(match s {
            "string" => IndexType::String,
            "number" => IndexType::Number,
            "boolean" => IndexType::Boolean,
            "[string]" => IndexType::StringArray,
            "[number]" => IndexType::NumberArray,
            "[boolean]" => IndexType::BooleanArray,
            _ => return None,
        })
    }

    /// True for the array types.
    pub const fn is_array(self) -> bool {
        matches!(
            self,
            IndexType::StringArray | IndexType::NumberArray | IndexType::BooleanArray
        )
    }

    /// The element type of an array type (itself for scalars).
    pub const fn scalar(self) -> IndexType {
        match self {
            IndexType::StringArray => IndexType::String,
            IndexType::NumberArray => IndexType::Number,
            IndexType::BooleanArray => IndexType::Boolean,
            other => other,
        }
    }
}

impl Serialize for IndexType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for IndexType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        IndexType::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown index type {s:?} (expected string, number, boolean, [string], [number] or [boolean])"
            ))
        })
    }
}

/// One indexed field of a bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexSpec {
    /// Column type.
    #[serde(rename = "type")]
    pub kind: IndexType,
    /// When true, no two records may have the same non-null value.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unique: bool,
}

impl IndexSpec {
    /// A non-unique index of `kind`.
    pub fn new(kind: IndexType) -> IndexSpec {
        IndexSpec {
            kind,
            unique: false,
        }
    }

    /// A unique index of `kind`.
    pub fn unique(kind: IndexType) -> IndexSpec {
        IndexSpec { kind, unique: true }
    }
}

/// Bucket options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketOptions {
    /// Schema version; `updateBucket` must raise it (when non-zero), so two operators racing
    /// an update cannot silently undo each other.
    #[serde(default)]
    pub version: u64,
}

/// What a bucket is: its indexes, its triggers and its options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketConfig {
    /// Indexed fields of the record values, by name.
    #[serde(default)]
    pub index: BTreeMap<String, IndexSpec>,
    /// Triggers run before a put, by name (none are defined yet; kept for the wire shape).
    #[serde(default)]
    pub pre: Vec<String>,
    /// Triggers run after a put or delete in the same transaction, by name
    /// (`manta_dircount`, `manta_delete_log`).
    #[serde(default)]
    pub post: Vec<String>,
    /// Options (schema version).
    #[serde(default)]
    pub options: BucketOptions,
}

impl BucketConfig {
    /// An empty configuration at `version`.
    pub fn new(version: u64) -> BucketConfig {
        BucketConfig {
            options: BucketOptions { version },
            ..BucketConfig::default()
        }
    }

    /// Adds an index (builder style).
    pub fn with_index(mut self, field: &str, spec: IndexSpec) -> BucketConfig {
        self.index.insert(field.to_owned(), spec);
        self
    }

    /// Adds a post trigger (builder style).
    pub fn with_post(mut self, trigger: &str) -> BucketConfig {
        self.post.push(trigger.to_owned());
        self
    }
}

/// A bucket as stored: its name, configuration, and which indexes are still being filled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// Bucket name.
    pub name: String,
    /// Indexes.
    pub index: BTreeMap<String, IndexSpec>,
    /// Pre triggers.
    pub pre: Vec<String>,
    /// Post triggers.
    pub post: Vec<String>,
    /// Options.
    pub options: BucketOptions,
    /// Indexes added by `updateBucket` whose columns are not yet filled for old records;
    /// filters may not use them until `reindexObjects` reports nothing left.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reindexing: Vec<String>,
    /// Last change, ms since the epoch.
    pub mtime: u64,
}

impl Bucket {
    /// The configuration part.
    pub fn config(&self) -> BucketConfig {
        BucketConfig {
            index: self.index.clone(),
            pre: self.pre.clone(),
            post: self.post.clone(),
            options: self.options.clone(),
        }
    }
}

/// A condition on the current etag of a record, for conditional writes.
///
/// On the wire (`options.etag`): absent = [`EtagCondition::Any`], `null` =
/// [`EtagCondition::MustNotExist`], a string = [`EtagCondition::MustMatch`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum EtagCondition {
    /// No condition.
    #[default]
    Any,
    /// The record must not exist (create only).
    MustNotExist,
    /// The record must exist with exactly this etag.
    MustMatch(String),
}

impl EtagCondition {
    /// True for [`EtagCondition::Any`] (used to leave the field out on the wire).
    pub fn is_any(&self) -> bool {
        matches!(self, EtagCondition::Any)
    }

    /// The expected etag as reported in conflicts (`None` for must-not-exist).
    pub fn expected(&self) -> Option<String> {
        match self {
            EtagCondition::MustMatch(e) => Some(e.clone()),
            _ => None,
        }
    }
}

mod etag_wire {
    use super::EtagCondition;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(c: &EtagCondition, s: S) -> Result<S::Ok, S::Error> {
        match c {
            // Callers skip `Any`; if it is serialised anyway, null would change its meaning,
            // so refuse loudly.
            EtagCondition::Any => Err(serde::ser::Error::custom(
                "EtagCondition::Any must be skipped, not serialised",
            )),
            EtagCondition::MustNotExist => s.serialize_none(),
            EtagCondition::MustMatch(e) => s.serialize_some(e),
        }
    }

    /// Only called when the field is present: null means must-not-exist.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<EtagCondition, D::Error> {
        Ok(match Option::<String>::deserialize(d)? {
            None => EtagCondition::MustNotExist,
            Some(e) => EtagCondition::MustMatch(e),
        })
    }
}

/// Options of `putObject`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutOptions {
    /// Condition on the current record.
    #[serde(
        default,
        skip_serializing_if = "EtagCondition::is_any",
        with = "etag_wire"
    )]
    pub etag: EtagCondition,
}

impl PutOptions {
    /// Unconditional put.
    pub fn any() -> PutOptions {
        PutOptions::default()
    }

    /// Create only: fails with `EtagConflict` when the key exists.
    pub fn must_not_exist() -> PutOptions {
        PutOptions {
            etag: EtagCondition::MustNotExist,
        }
    }

    /// Replace only the record with this etag.
    pub fn if_match(etag: impl Into<String>) -> PutOptions {
        PutOptions {
            etag: EtagCondition::MustMatch(etag.into()),
        }
    }
}

/// Options of `delObject`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelOptions {
    /// Condition on the current record ([`EtagCondition::MustNotExist`] is refused).
    #[serde(
        default,
        skip_serializing_if = "EtagCondition::is_any",
        with = "etag_wire"
    )]
    pub etag: EtagCondition,
}

impl DelOptions {
    /// Delete only the record with this etag.
    pub fn if_match(etag: impl Into<String>) -> DelOptions {
        DelOptions {
            etag: EtagCondition::MustMatch(etag.into()),
        }
    }
}

/// What `putObject` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResult {
    /// The new etag (crc32 of the value, 8 upper-case hex digits).
    pub etag: String,
}

/// One stored record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectRecord {
    /// Bucket name.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// The JSON value as stored.
    pub value: Value,
    /// Serial id, new for every write (so `_id` order is write order).
    #[serde(rename = "_id")]
    pub id: i64,
    /// Etag (crc32 of the value).
    #[serde(rename = "_etag")]
    pub etag: String,
    /// Last write, ms since the epoch.
    #[serde(rename = "_mtime")]
    pub mtime: i64,
    /// For `findObjects` without `no_count`: how many records match the filter in total
    /// (ignoring limit and offset).
    #[serde(rename = "_count", default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

/// Sort direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortOrder {
    /// Ascending.
    #[default]
    #[serde(rename = "ASC", alias = "asc")]
    Asc,
    /// Descending.
    #[serde(rename = "DESC", alias = "desc")]
    Desc,
}

/// One sort key of `findObjects`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sort {
    /// An indexed field, or `_id`, `_key`, `_mtime`, `_etag`.
    pub attribute: String,
    /// Direction.
    #[serde(default)]
    pub order: SortOrder,
}

impl Sort {
    /// Ascending by `attribute`.
    pub fn asc(attribute: impl Into<String>) -> Sort {
        Sort {
            attribute: attribute.into(),
            order: SortOrder::Asc,
        }
    }

    /// Descending by `attribute`.
    pub fn desc(attribute: impl Into<String>) -> Sort {
        Sort {
            attribute: attribute.into(),
            order: SortOrder::Desc,
        }
    }
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Sort>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(Sort),
        Many(Vec<Sort>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(v)) => v,
    })
}

/// Options of `findObjects`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindOptions {
    /// At most this many records (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Skip this many matching records first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Sort keys, most significant first; none means no particular order.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "one_or_many"
    )]
    pub sort: Vec<Sort>,
    /// Skip computing `_count` (saves a window aggregate over all matches).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_count: bool,
}

/// The default `findObjects` limit.
pub const DEFAULT_FIND_LIMIT: u64 = 1000;

/// One operation of a `batch`, all run in one transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "operation", rename_all = "camelCase")]
pub enum BatchOp {
    /// Like `putObject`.
    Put {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// Value.
        value: Value,
        /// Options.
        #[serde(default)]
        options: PutOptions,
    },
    /// Like `delObject`.
    Delete {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// Options.
        #[serde(default)]
        options: DelOptions,
    },
    /// Like `updateObjects`.
    Update {
        /// Bucket.
        bucket: String,
        /// Index fields to set.
        fields: serde_json::Map<String, Value>,
        /// Which records.
        filter: String,
    },
    /// Like `deleteMany`.
    DeleteMany {
        /// Bucket.
        bucket: String,
        /// Which records.
        filter: String,
    },
}

/// The result of one batch operation, in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchOpResult {
    /// Bucket.
    pub bucket: String,
    /// Key (put and delete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// New etag (put and update).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Records affected (update and deleteMany).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

/// What `batch` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResult {
    /// One entry per operation, in order.
    pub results: Vec<BatchOpResult>,
}

/// What `updateObjects` and `deleteMany` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountResult {
    /// Records affected.
    pub count: u64,
    /// The etag given to every updated record (`updateObjects` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

/// What `reindexObjects` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReindexResult {
    /// Records rewritten by this call; call again until it is 0.
    pub processed: u64,
    /// Records still to do after this call.
    pub remaining: u64,
}

/// What `version` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// The RPC API version (bumped on incompatible changes).
    pub version: u32,
    /// The server build.
    pub server: String,
}

/// The RPC API version of this build.
pub const API_VERSION: u32 = 2;

/// Request bodies, one per method, shared by client and server.
pub mod req {
    use super::*;

    /// `createBucket` / `updateBucket`.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct PutBucket {
        /// Bucket name.
        pub name: String,
        /// Configuration.
        pub config: BucketConfig,
        /// `updateBucket` only: make new indexes usable at once, without `reindexObjects`
        /// (only safe when the bucket holds no records that have the field).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        pub no_reindex: bool,
    }

    /// `getBucket` / `delBucket`.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct Name {
        /// Bucket name.
        pub name: String,
    }

    /// `putObject`.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct PutObject {
        /// Bucket.
        pub bucket: String,
        /// Key.
        pub key: String,
        /// Value (any JSON object).
        pub value: Value,
        /// Options.
        #[serde(default)]
        pub options: PutOptions,
        /// The ring's vnode for this key, stored in `_vnode` (set by the sharded client).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub vnode: Option<u64>,
    }

    /// `getObject`.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct GetObject {
        /// Bucket.
        pub bucket: String,
        /// Key.
        pub key: String,
    }

    /// `delObject`.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct DelObject {
        /// Bucket.
        pub bucket: String,
        /// Key.
        pub key: String,
        /// Options.
        #[serde(default)]
        pub options: DelOptions,
    }

    /// `findObjects`.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct FindObjects {
        /// Bucket.
        pub bucket: String,
        /// LDAP-style filter.
        pub filter: String,
        /// Options.
        #[serde(default)]
        pub options: FindOptions,
    }

    /// `updateObjects`.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct UpdateObjects {
        /// Bucket.
        pub bucket: String,
        /// Indexed fields to set.
        pub fields: serde_json::Map<String, Value>,
        /// Which records.
        pub filter: String,
    }

    /// `deleteMany`.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct DeleteMany {
        /// Bucket.
        pub bucket: String,
        /// Which records.
        pub filter: String,
        /// At most this many.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub limit: Option<u64>,
    }

    /// `batch`.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct Batch {
        /// Operations, run in order in one transaction.
        pub requests: Vec<BatchOp>,
        /// Vnodes for the put operations, by index in `requests` (set by the sharded client).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        pub vnodes: BTreeMap<usize, u64>,
    }

    /// `reindexObjects`.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct Reindex {
        /// Bucket.
        pub bucket: String,
        /// Rows per call.
        pub count: u64,
    }

    /// `sql`.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct Sql {
        /// The statement, with `$1`.. placeholders.
        pub statement: String,
        /// Placeholder values (sent to Postgres as text).
        #[serde(default)]
        pub values: Vec<Value>,
    }

    /// `vnodeFence`, `vnodeUnfence`, `vnodePurge`.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct Vnode {
        /// The vnode.
        pub vnode: u32,
        /// For a fence: the shard it is moving to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub target: Option<String>,
    }

    /// `ping`.
    #[derive(Debug, Clone, Default, Serialize, Deserialize)]
    pub struct Ping {
        /// Also check the database (a round trip to the primary).
        #[serde(default)]
        pub deep: bool,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn etag_condition_wire_forms() {
        let any = serde_json::to_value(PutOptions::any()).unwrap();
        assert_eq!(any, json!({}));
        let none = serde_json::to_value(PutOptions::must_not_exist()).unwrap();
        assert_eq!(none, json!({"etag": null}));
        let m = serde_json::to_value(PutOptions::if_match("AB")).unwrap();
        assert_eq!(m, json!({"etag": "AB"}));
        for v in [any, none, m] {
            let back: PutOptions = serde_json::from_value(v.clone()).unwrap();
            assert_eq!(serde_json::to_value(back).unwrap(), v);
        }
    }

    #[test]
    fn sort_accepts_one_or_many() {
        let one: FindOptions =
            serde_json::from_value(json!({"sort": {"attribute": "a", "order": "DESC"}})).unwrap();
        assert_eq!(one.sort, vec![Sort::desc("a")]);
        let many: FindOptions =
            serde_json::from_value(json!({"sort": [{"attribute": "a"}, {"attribute": "b"}]}))
                .unwrap();
        assert_eq!(many.sort, vec![Sort::asc("a"), Sort::asc("b")]);
    }

    #[test]
    fn batch_op_wire_form() {
        let op = BatchOp::Put {
            bucket: "b".into(),
            key: "k".into(),
            value: json!({"a": 1}),
            options: PutOptions::must_not_exist(),
        };
        let v = serde_json::to_value(&op).unwrap();
        assert_eq!(
            v,
            json!({"operation": "put", "bucket": "b", "key": "k", "value": {"a": 1}, "options": {"etag": null}})
        );
        let dm: BatchOp = serde_json::from_value(
            json!({"operation": "deleteMany", "bucket": "b", "filter": "(a=1)"}),
        )
        .unwrap();
        assert!(matches!(dm, BatchOp::DeleteMany { .. }));
    }

    #[test]
    fn index_types_parse() {
        for t in [
            IndexType::String,
            IndexType::Number,
            IndexType::Boolean,
            IndexType::StringArray,
            IndexType::NumberArray,
            IndexType::BooleanArray,
        ] {
            assert_eq!(IndexType::parse(t.as_str()), Some(t));
        }
        assert!(serde_json::from_value::<IndexSpec>(json!({"type": "blob"})).is_err());
    }
}
