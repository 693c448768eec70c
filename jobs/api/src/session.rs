//! `mlogin` sessions as the front door asks an agent for one: what the session is
//! ([`SessionSpec`]), carried in a header of an upgraded `POST /sessions`.

use base64::Engine as _;
use manta_types::{ErrorCode, MantaError, MantaPath};
use serde::{Deserialize, Serialize};

use crate::spec::{DISK_GB, MEMORY_MB};

/// The header carrying a [`SessionSpec`] (URL-safe base64 of its JSON).
pub const SPEC_HEADER: &str = "x-manta-session";

/// The protocol name of the upgraded connection.
pub const PROTOCOL: &str = "manta-mlogin";

/// What a session is: who, on which object, in what environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SessionSpec {
    /// The session's id (names its container's job in the agent's records and logs).
    pub id: String,
    /// The user: login and account id.
    pub login: String,
    pub owner: String,
    /// A token acting for the user (issued by the front door for this session).
    pub token: String,
    /// The object's path, its creator and object id (the copy's file on this node).
    pub object: String,
    pub creator: String,
    pub object_id: String,
    /// The phase settings: memory (MB), disk (GB), image, assets, init.
    pub memory: u64,
    pub disk: u64,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub assets: Vec<String>,
    #[serde(default)]
    pub init: Option<String>,
    /// The terminal's size.
    pub rows: u16,
    pub cols: u16,
}

impl SessionSpec {
    /// The spec as the header value.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    /// The spec from the header value, checked.
    ///
    /// # Errors
    /// A value that is not a spec, or settings outside what phases allow.
    pub fn decode(v: &str) -> Result<SessionSpec, MantaError> {
        let bad = |m: String| MantaError::new(ErrorCode::InvalidArgument, m);
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(v)
            .map_err(|e| bad(format!("{SPEC_HEADER}: {e}")))?;
        let s: SessionSpec =
            serde_json::from_slice(&json).map_err(|e| bad(format!("{SPEC_HEADER}: {e}")))?;
        let ids = [&s.id, &s.owner, &s.creator, &s.object_id];
        if ids.iter().any(|i| uuid::Uuid::parse_str(i).is_err()) {
            return Err(bad(
                "session, owner, creator and object ids must be UUIDs".into()
            ));
        }
        MantaPath::parse(&s.object).map_err(|e| bad(e.to_string()))?;
        for a in &s.assets {
            MantaPath::parse(a).map_err(|e| bad(format!("asset {a}: {e}")))?;
        }
        if !MEMORY_MB.contains(&s.memory) || !DISK_GB.contains(&s.disk) {
            return Err(bad(format!(
                "memory must be one of {MEMORY_MB:?} (MB) and disk one of {DISK_GB:?} (GB)"
            )));
        }
        Ok(s)
    }
}

/// The answer that switches a connection to [`PROTOCOL`] (the agent's to the front door, and
/// the front door's to the client).
pub fn switching_protocols() -> axum::response::Response {
    let mut r = axum::response::Response::new(axum::body::Body::empty());
    *r.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        http::header::UPGRADE,
        http::HeaderValue::from_static(PROTOCOL),
    );
    h.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("upgrade"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SessionSpec {
        let id = "6f1c2d0e-0000-4000-8000-000000000001".to_owned();
        SessionSpec {
            id: id.clone(),
            login: "jill".into(),
            owner: id.clone(),
            token: "t".into(),
            object: "/jill/stor/a.txt".into(),
            creator: id.clone(),
            object_id: id,
            memory: 1024,
            disk: 8,
            image: None,
            assets: Vec::new(),
            init: None,
            rows: 24,
            cols: 80,
        }
    }

    #[test]
    fn a_spec_reads_back_and_bad_ones_are_refused() {
        let s = spec();
        assert_eq!(SessionSpec::decode(&s.encode()).unwrap(), s);
        for bad in [
            SessionSpec {
                memory: 3,
                ..spec()
            },
            SessionSpec {
                object: "nope".into(),
                ..spec()
            },
            SessionSpec {
                creator: "x".into(),
                ..spec()
            },
            SessionSpec {
                assets: vec!["../x".into()],
                ..spec()
            },
        ] {
            let e = SessionSpec::decode(&bad.encode()).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidArgument);
        }
        assert!(SessionSpec::decode("%%%").is_err());
    }
}
