//! How an object is named on a storage node: `/<owner>/<objectId>` in the URL, and
//! `objects/<owner>/<objectId>` under the node's dataset root (the jobs agent, running beside
//! the node, reads input objects there directly).

use std::path::PathBuf;

use manta_types::ObjectId;

/// Objects live here, under the dataset root.
pub const OBJECTS_DIR: &str = "objects";

/// Names one object on a node: `<owner>/<objectId>`, both canonical UUIDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// The account that created the object (the original calls it the creator).
    pub owner: uuid::Uuid,
    /// The object id.
    pub id: ObjectId,
}

/// A path segment that is not a canonical UUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidObjectKey(pub String);

impl ObjectKey {
    /// Parses the two path segments of `/<owner>/<objectId>`.
    ///
    /// # Errors
    /// [`InvalidObjectKey`] unless both are canonical hyphenated UUIDs.
    pub fn parse(owner: &str, id: &str) -> Result<ObjectKey, InvalidObjectKey> {
        let owner_id: ObjectId = owner.parse().map_err(|_| {
            InvalidObjectKey(format!(
                "owner {owner:?} is not an account uuid (expected /<owner uuid>/<object id>)"
            ))
        })?;
        let id: ObjectId = id.parse().map_err(|_| {
            InvalidObjectKey(format!(
                "object id {id:?} is not a uuid (expected /<owner uuid>/<object id>)"
            ))
        })?;
        Ok(ObjectKey {
            owner: *owner_id.as_uuid(),
            id,
        })
    }

    /// `<owner>/<objectId>`, the object's path relative to an area (such as [`OBJECTS_DIR`]).
    pub fn rel_path(&self) -> PathBuf {
        PathBuf::from(self.owner.hyphenated().to_string()).join(self.id.to_string())
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "/{}/{}", self.owner.hyphenated(), self.id)
    }
}
