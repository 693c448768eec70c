//! Where a multipart upload lives in the namespace, and what a request under `/:login/uploads`
//! asks for.
//!
//! An upload's id is a UUID whose last hex digit is the length of the prefix directory its
//! parts directory sits in (clients read it from there), so the parts of upload
//! `b2c…d3` live in `/:login/uploads/b2c/b2c…d3/<part number>`. The prefix keeps the uploads
//! area to at most 16^N entries.

use crate::path::{Area, MantaPath};

/// Hex digits of an upload id that name its prefix directory.
pub const PREFIX_LEN: usize = 3;

/// Highest part number (parts are numbered from 0).
pub const MAX_PART_NUMBER: u32 = 9_999;

/// A new upload id: a random UUID whose last hex digit is [`PREFIX_LEN`].
pub fn new_upload_id() -> String {
    let mut id = uuid::Uuid::new_v4().to_string();
    id.pop();
    id.push(char::from_digit(PREFIX_LEN as u32, 16).unwrap_or('3'));
    id
}

/// Whether `id` has the shape of an upload id (a lowercase hyphenated UUID whose last digit
/// names a prefix length from 1 to 4).
pub fn is_upload_id(id: &str) -> bool {
    let shape = id.len() == 36
        && id.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_digit() || ('a'..='f').contains(&c),
        });
    shape && matches!(id.as_bytes()[35], b'1'..=b'4')
}

/// The prefix directory's name of upload `id`.
///
/// # Panics
/// Never for an id that passed [`is_upload_id`].
pub fn prefix_of(id: &str) -> &str {
    let n = usize::from(id.as_bytes()[35] - b'0');
    &id[..n]
}

/// `/:login/uploads/<prefix>/<id>`, the parts directory of upload `id`.
pub fn parts_directory(login: &str, id: &str) -> String {
    format!("/{login}/uploads/{}/{id}", prefix_of(id))
}

/// What a request under `/:login/uploads` addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `/:login/uploads` itself (create with `POST`; list with `GET`).
    Root,
    /// `/:login/uploads/<id>[/<rest>]`: the short form, answered with a redirect to the
    /// parts directory (plus `rest`).
    Short {
        /// The upload id.
        id: String,
        /// What follows the id, if anything.
        rest: Option<String>,
    },
    /// `/:login/uploads/<prefix>/<id>`: the parts directory.
    Upload {
        /// The upload id.
        id: String,
    },
    /// `…/<id>/state`, `…/<id>/commit`, `…/<id>/abort`.
    Action {
        /// The upload id.
        id: String,
        /// Which.
        action: Action,
    },
    /// `…/<id>/<n>`: part `n`.
    Part {
        /// The upload id.
        id: String,
        /// The part number.
        number: u32,
    },
    /// Anything else: a prefix directory, or a name that is none of the above.
    Other,
}

/// What can be done to an upload as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `GET …/state`.
    State,
    /// `POST …/commit`.
    Commit,
    /// `POST …/abort`.
    Abort,
}

/// Parses a part number: decimal, no sign or leading zeros, at most [`MAX_PART_NUMBER`].
pub fn parse_part_number(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 4 || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| s.parse().ok())
        .flatten()
        .filter(|n| *n <= MAX_PART_NUMBER)
}

/// What `path` (in the uploads area) addresses; `None` outside that area.
pub fn target(path: &MantaPath) -> Option<Target> {
    if path.area() != Some(Area::Uploads) {
        return None;
    }
    let s: Vec<&str> = path.segments().iter().map(String::as_str).collect();
    let in_prefix = |p: &str, id: &str| is_upload_id(id) && prefix_of(id) == p;
    Some(match s.as_slice() {
        [] => Target::Root,
        [id] if is_upload_id(id) => Target::Short {
            id: (*id).to_owned(),
            rest: None,
        },
        [id, rest] if is_upload_id(id) => Target::Short {
            id: (*id).to_owned(),
            rest: Some((*rest).to_owned()),
        },
        [p, id] if in_prefix(p, id) => Target::Upload {
            id: (*id).to_owned(),
        },
        [p, id, last] if in_prefix(p, id) => {
            let id = (*id).to_owned();
            match *last {
                "state" => Target::Action {
                    id,
                    action: Action::State,
                },
                "commit" => Target::Action {
                    id,
                    action: Action::Commit,
                },
                "abort" => Target::Action {
                    id,
                    action: Action::Abort,
                },
                n => match parse_part_number(n) {
                    Some(number) => Target::Part { id, number },
                    None => Target::Other,
                },
            }
        }
        _ => Target::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(p: &str) -> Option<Target> {
        target(&MantaPath::parse(p).unwrap())
    }

    #[test]
    fn ids_name_their_prefix() {
        let id = new_upload_id();
        assert!(is_upload_id(&id), "{id}");
        assert_eq!(prefix_of(&id), &id[..3]);
        assert_eq!(
            parts_directory("jill", &id),
            format!("/jill/uploads/{}/{id}", &id[..3])
        );
        assert!(!is_upload_id("not-an-id"));
        assert!(!is_upload_id("b2c5d1e2-0000-4000-8000-00000000000f"));
        assert!(!is_upload_id("B2C5D1E2-0000-4000-8000-000000000003"));
    }

    #[test]
    fn paths_in_the_uploads_area_are_told_apart() {
        let id = "b2c5d1e2-0000-4000-8000-000000000003";
        assert_eq!(t("/jill/stor/x"), None);
        assert_eq!(t("/jill/uploads"), Some(Target::Root));
        assert_eq!(
            t(&format!("/jill/uploads/{id}")),
            Some(Target::Short {
                id: id.into(),
                rest: None
            })
        );
        assert_eq!(
            t(&format!("/jill/uploads/{id}/7")),
            Some(Target::Short {
                id: id.into(),
                rest: Some("7".into())
            })
        );
        assert_eq!(
            t(&format!("/jill/uploads/b2c/{id}")),
            Some(Target::Upload { id: id.into() })
        );
        assert_eq!(
            t(&format!("/jill/uploads/b2c/{id}/state")),
            Some(Target::Action {
                id: id.into(),
                action: Action::State
            })
        );
        assert_eq!(
            t(&format!("/jill/uploads/b2c/{id}/9999")),
            Some(Target::Part {
                id: id.into(),
                number: 9999
            })
        );
        for other in [
            format!("/jill/uploads/b2c/{id}/10000"),
            format!("/jill/uploads/b2c/{id}/01"),
            format!("/jill/uploads/b2c/{id}/x"),
            format!("/jill/uploads/abc/{id}"),
            "/jill/uploads/b2c".into(),
            format!("/jill/uploads/b2c/{id}/1/2"),
        ] {
            assert_eq!(t(&other), Some(Target::Other), "{other}");
        }
    }

    proptest! {
        #[test]
        fn part_numbers_round_trip(n in 0u32..=MAX_PART_NUMBER) {
            prop_assert_eq!(parse_part_number(&n.to_string()), Some(n));
        }

        #[test]
        fn part_number_parsing_never_panics(s in ".{0,8}") {
            if let Some(n) = parse_part_number(&s) {
                prop_assert_eq!(n.to_string(), s);
            }
        }
    }
}
