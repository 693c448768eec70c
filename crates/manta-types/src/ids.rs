//! Identifiers: object ids and entity tags.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The identity of one stored set of bytes: a random (v4) UUID, chosen by the front door when an
/// object is written. A new write of the same path gets a new id; links share the id of their
/// source. Storage nodes name the file holding the bytes after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ObjectId(uuid::Uuid);

impl ObjectId {
    /// A fresh random id.
    pub fn random() -> ObjectId {
        ObjectId(uuid::Uuid::new_v4())
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> &uuid::Uuid {
        &self.0
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// An id that is not a UUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a valid id (expected a UUID)")]
pub struct InvalidId(pub String);

impl FromStr for ObjectId {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Only the canonical hyphenated form: ids end up in file names and URLs.
        if s.len() != 36 {
            return Err(InvalidId(s.to_owned()));
        }
        uuid::Uuid::parse_str(s)
            .map(ObjectId)
            .map_err(|_| InvalidId(s.to_owned()))
    }
}

/// An entity tag as sent in `Etag`/`If-Match`. For Manta objects it is the object id; for
/// directories and Moray records it is an opaque string. Compared byte for byte, after any
/// surrounding quotes and a weak `W/` prefix are removed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Etag(String);

impl Etag {
    /// An etag from its value (quotes and `W/` are stripped).
    pub fn new(s: impl AsRef<str>) -> Etag {
        let s = s.as_ref().trim();
        let s = s.strip_prefix("W/").unwrap_or(s);
        let s = s
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .unwrap_or(s);
        Etag(s.to_owned())
    }

    /// The bare value.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Does an `If-Match`/`If-None-Match` header value (a comma list, or `*`) match this etag?
    pub fn matches_header(&self, header: &str) -> bool {
        header
            .split(',')
            .map(str::trim)
            .any(|v| v == "*" || Etag::new(v) == *self)
    }
}

impl fmt::Display for Etag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<ObjectId> for Etag {
    fn from(id: ObjectId) -> Etag {
        Etag(id.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn object_ids_round_trip() {
        let id = ObjectId::random();
        assert_eq!(id.to_string().parse::<ObjectId>().unwrap(), id);
        assert!("not-a-uuid".parse::<ObjectId>().is_err());
        assert!(
            "f501ffd13e2849a8aaa52c1555c34ce0"
                .parse::<ObjectId>()
                .is_err()
        );
    }

    #[test]
    fn etag_header_matching() {
        let e = Etag::new("abc");
        assert!(e.matches_header("\"abc\""));
        assert!(e.matches_header("x, W/\"abc\""));
        assert!(e.matches_header("*"));
        assert!(!e.matches_header("abcd"));
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_ids_never_panics(s in ".{0,64}") {
            if let Ok(id) = s.parse::<ObjectId>() {
                prop_assert_eq!(id.to_string().parse::<ObjectId>().unwrap(), id);
            }
            let _ = Etag::new(&s).matches_header(&s);
        }
    }
}
