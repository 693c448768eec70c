//! Validated paths in the hierarchical namespace: `/:login[/stor|public|jobs|reports|uploads[/...]]`.
//!
//! A [`MantaPath`] is parsed once at the edge and cannot hold an invalid path: the login follows
//! the account name rules, the second segment is one of the five top-level areas, and every
//! further segment is a non-empty name without `NUL` that is neither `.` nor `..` and fits the
//! size limits. Trailing slashes are dropped (`/jill/stor/` is `/jill/stor`); any other empty
//! segment is refused rather than silently collapsed, so two spellings never name one entry.

use std::fmt;
use std::str::FromStr;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use crate::error::{ErrorCode, HasErrorCode};

/// Longest allowed single name (one path segment), in bytes.
pub const MAX_NAME_BYTES: usize = 1024;
/// Longest allowed whole path, in bytes. Keys are indexed in Postgres B-trees, whose entries
/// must stay well under one third of a page.
pub const MAX_PATH_BYTES: usize = 2048;
/// Longest allowed login, in bytes.
pub const MAX_LOGIN_BYTES: usize = 64;

/// The top-level directories under `/:login`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Area {
    /// Private objects.
    Stor,
    /// World-readable objects.
    Public,
    /// Job records and job outputs.
    Jobs,
    /// System-written usage reports.
    Reports,
    /// Multipart upload part directories.
    Uploads,
    /// S3 buckets, read through the Manta API (`/:login/buckets/<bucket>/objects/<key>`; see
    /// [`crate::s3`]). Not listed in the account root, which shows the Manta areas.
    Buckets,
}

impl Area {
    /// All areas, in the order the account root lists them (by name).
    pub const ALL: [Area; 5] = [
        Area::Jobs,
        Area::Public,
        Area::Reports,
        Area::Stor,
        Area::Uploads,
    ];

    /// The directory name of this area.
    pub const fn as_str(self) -> &'static str {
        match self {
            Area::Stor => "stor",
            Area::Public => "public",
            Area::Jobs => "jobs",
            Area::Reports => "reports",
            Area::Uploads => "uploads",
            Area::Buckets => "buckets",
        }
    }

    /// Parses an area directory name.
    pub fn parse(s: &str) -> Option<Area> {
        Some(match s {
            "stor" => Area::Stor,
            "public" => Area::Public,
            "jobs" => Area::Jobs,
            "reports" => Area::Reports,
            "uploads" => Area::Uploads,
            "buckets" => Area::Buckets,
            _ => return None,
        })
    }
}

impl fmt::Display for Area {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The path does not start with `/`.
    #[error("path {0:?} is not absolute")]
    NotAbsolute(String),
    /// The path has no login.
    #[error("path {0:?} names no account")]
    NoLogin(String),
    /// The login breaks the account name rules.
    #[error("{0:?} is not a valid login")]
    InvalidLogin(String),
    /// The second segment is not one of the top-level areas.
    #[error("{0} does not exist")]
    UnknownArea(String),
    /// A segment is empty (`a//b`).
    #[error("path {0:?} has an empty segment")]
    EmptySegment(String),
    /// A segment is `.` or `..`.
    #[error("path {0:?} has a relative segment ('.' or '..')")]
    RelativeSegment(String),
    /// A segment contains a NUL byte.
    #[error("path contains a NUL byte")]
    Nul,
    /// A segment is longer than [`MAX_NAME_BYTES`].
    #[error("a name in the path is longer than {MAX_NAME_BYTES} bytes")]
    NameTooLong,
    /// The path is longer than [`MAX_PATH_BYTES`].
    #[error("path is longer than {MAX_PATH_BYTES} bytes")]
    PathTooLong,
    /// Percent-decoding produced bytes that are not UTF-8.
    #[error("path is not valid UTF-8 once percent-decoded")]
    NotUtf8,
}

impl HasErrorCode for PathError {
    fn code(&self) -> ErrorCode {
        match self {
            PathError::UnknownArea(_) => ErrorCode::ResourceNotFound,
            PathError::NotAbsolute(_)
            | PathError::NoLogin(_)
            | PathError::InvalidLogin(_)
            | PathError::EmptySegment(_)
            | PathError::RelativeSegment(_)
            | PathError::Nul
            | PathError::NameTooLong
            | PathError::PathTooLong
            | PathError::NotUtf8 => ErrorCode::InvalidResource,
        }
    }
}

/// Checks a login against the account name rules: a letter, then at least one of letters,
/// digits, `_ - . @ %`, at most [`MAX_LOGIN_BYTES`] bytes.
pub fn validate_login(login: &str) -> Result<(), PathError> {
    let bytes = login.as_bytes();
    let ok = bytes.len() >= 2
        && bytes.len() <= MAX_LOGIN_BYTES
        && bytes[0].is_ascii_alphabetic()
        && bytes[1..]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'@' | b'%'));
    if ok {
        Ok(())
    } else {
        Err(PathError::InvalidLogin(login.to_owned()))
    }
}

/// Checks one name (a path segment below an area).
pub fn validate_name(name: &str, whole: &str) -> Result<(), PathError> {
    if name.is_empty() {
        return Err(PathError::EmptySegment(whole.to_owned()));
    }
    if name == "." || name == ".." {
        return Err(PathError::RelativeSegment(whole.to_owned()));
    }
    if name.contains('\0') {
        return Err(PathError::Nul);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(PathError::NameTooLong);
    }
    Ok(())
}

/// A validated absolute path in the namespace.
///
/// Invariants: `login` passes [`validate_login`]; `segments` is empty unless `area` is set;
/// every segment passes [`validate_name`]; the rendered path is at most [`MAX_PATH_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MantaPath {
    login: String,
    area: Option<Area>,
    segments: Vec<String>,
}

impl MantaPath {
    /// Parses an already percent-decoded path.
    ///
    /// # Errors
    /// A [`PathError`] naming the first rule the path breaks.
    pub fn parse(path: &str) -> Result<MantaPath, PathError> {
        if path.len() > MAX_PATH_BYTES {
            return Err(PathError::PathTooLong);
        }
        let rest = path
            .strip_prefix('/')
            .ok_or_else(|| PathError::NotAbsolute(path.to_owned()))?;
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() {
            return Err(PathError::NoLogin(path.to_owned()));
        }
        let mut parts = rest.split('/');
        let login = parts.next().unwrap_or_default();
        if login.is_empty() {
            return Err(PathError::EmptySegment(path.to_owned()));
        }
        validate_login(login)?;
        let area = match parts.next() {
            None => None,
            Some("") => return Err(PathError::EmptySegment(path.to_owned())),
            Some(a) => Some(
                Area::parse(a).ok_or_else(|| PathError::UnknownArea(format!("/{login}/{a}")))?,
            ),
        };
        let mut segments = Vec::new();
        for seg in parts {
            validate_name(seg, path)?;
            segments.push(seg.to_owned());
        }
        Ok(MantaPath {
            login: login.to_owned(),
            area,
            segments,
        })
    }

    /// Percent-decodes a raw request path, then parses it.
    ///
    /// # Errors
    /// [`PathError::NotUtf8`] when the decoded bytes are not UTF-8, else as [`MantaPath::parse`].
    pub fn from_url_path(raw: &str) -> Result<MantaPath, PathError> {
        MantaPath::parse(&decode_url_path(raw)?)
    }

    /// The account root `/:login`.
    ///
    /// # Errors
    /// [`PathError::InvalidLogin`] when `login` breaks the rules.
    pub fn account_root(login: &str) -> Result<MantaPath, PathError> {
        validate_login(login)?;
        Ok(MantaPath {
            login: login.to_owned(),
            area: None,
            segments: Vec::new(),
        })
    }

    /// The top-level directory `/:login/<area>`.
    ///
    /// # Errors
    /// [`PathError::InvalidLogin`] when `login` breaks the rules.
    pub fn area_root(login: &str, area: Area) -> Result<MantaPath, PathError> {
        validate_login(login)?;
        Ok(MantaPath {
            login: login.to_owned(),
            area: Some(area),
            segments: Vec::new(),
        })
    }

    /// The account's login.
    pub fn login(&self) -> &str {
        &self.login
    }

    /// The top-level area, `None` for the account root.
    pub fn area(&self) -> Option<Area> {
        self.area
    }

    /// The names below the area.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// True for `/:login`.
    pub fn is_account_root(&self) -> bool {
        self.area.is_none()
    }

    /// True for `/:login/<area>` itself.
    pub fn is_area_root(&self) -> bool {
        self.area.is_some() && self.segments.is_empty()
    }

    /// The last name of the path (the login for the account root).
    pub fn name(&self) -> &str {
        match (self.segments.last(), self.area) {
            (Some(s), _) => s,
            (None, Some(a)) => a.as_str(),
            (None, None) => &self.login,
        }
    }

    /// The parent directory; `None` for the account root.
    pub fn parent(&self) -> Option<MantaPath> {
        let mut p = self.clone();
        if p.segments.pop().is_some() {
            return Some(p);
        }
        if p.area.take().is_some() {
            return Some(p);
        }
        None
    }

    /// The child `name` of this path.
    ///
    /// # Errors
    /// When `name` is not a valid name, or this is the account root and `name` not an area,
    /// or the result is too long.
    pub fn join(&self, name: &str) -> Result<MantaPath, PathError> {
        let mut p = self.clone();
        if p.area.is_none() {
            p.area = Some(
                Area::parse(name)
                    .ok_or_else(|| PathError::UnknownArea(format!("/{}/{name}", self.login)))?,
            );
            return Ok(p);
        }
        validate_name(name, name)?;
        p.segments.push(name.to_owned());
        if p.to_string().len() > MAX_PATH_BYTES {
            return Err(PathError::PathTooLong);
        }
        Ok(p)
    }

    /// True when `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &MantaPath) -> bool {
        self.login == other.login
            && (other.area.is_none()
                || (self.area == other.area && self.segments.starts_with(&other.segments)))
    }

    /// The metadata key: the same path with the login replaced by the owner's account id, so
    /// renaming an account never rewrites its keys.
    pub fn storage_key(&self, owner: &str) -> String {
        let mut s = String::with_capacity(64);
        s.push('/');
        s.push_str(owner);
        if let Some(a) = self.area {
            s.push('/');
            s.push_str(a.as_str());
        }
        for seg in &self.segments {
            s.push('/');
            s.push_str(seg);
        }
        s
    }

    /// The path percent-encoded for use in a URL.
    pub fn to_url_path(&self) -> String {
        let mut s = String::with_capacity(64);
        s.push('/');
        s.extend(utf8_percent_encode(&self.login, SEGMENT));
        if let Some(a) = self.area {
            s.push('/');
            s.push_str(a.as_str());
        }
        for seg in &self.segments {
            s.push('/');
            s.extend(utf8_percent_encode(seg, SEGMENT));
        }
        s
    }
}

/// Characters escaped inside one URL path segment: everything but RFC 3986 unreserved.
pub const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes a path (a Manta path, an S3 key) for a URL: everything but RFC 3986
/// unreserved characters and `/` (a space becomes `%20`, `+` becomes `%2B`).
pub fn encode_url_path(path: &str) -> String {
    const PATH: &AsciiSet = &SEGMENT.remove(b'/');
    utf8_percent_encode(path, PATH).to_string()
}

/// Percent-decodes a raw URL path into UTF-8.
///
/// # Errors
/// [`PathError::NotUtf8`] when the decoded bytes are not UTF-8.
pub fn decode_url_path(raw: &str) -> Result<String, PathError> {
    percent_decode_str(raw)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| PathError::NotUtf8)
}

impl fmt::Display for MantaPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", self.login)?;
        if let Some(a) = self.area {
            write!(f, "/{a}")?;
        }
        for seg in &self.segments {
            write!(f, "/{seg}")?;
        }
        Ok(())
    }
}

impl FromStr for MantaPath {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MantaPath::parse(s)
    }
}

impl serde::Serialize for MantaPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MantaPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        MantaPath::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Expands the client-side shorthand `~~` (at the start of a path) to `/<login>`.
///
/// `~~/stor/a` becomes `/jill/stor/a`; `~~` alone becomes `/jill`. Anything else is returned
/// unchanged.
pub fn expand_tilde(input: &str, login: &str) -> String {
    match input.strip_prefix("~~") {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => format!("/{login}{rest}"),
        _ => input.to_owned(),
    }
}

/// The parent part of a `/`-separated key (`/a/b/c` -> `/a/b`; `/a` -> `/`).
pub fn dirname(key: &str) -> &str {
    match key.trim_end_matches('/').rfind('/') {
        Some(0) | None => "/",
        Some(i) => &key[..i],
    }
}

/// The last part of a `/`-separated key.
pub fn basename(key: &str) -> &str {
    let key = key.trim_end_matches('/');
    key.rsplit('/').next().unwrap_or(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_namespace() {
        let p = MantaPath::parse("/jill/stor/a/b.txt").unwrap();
        assert_eq!(p.login(), "jill");
        assert_eq!(p.area(), Some(Area::Stor));
        assert_eq!(p.segments(), ["a", "b.txt"]);
        assert_eq!(p.name(), "b.txt");
        assert_eq!(p.to_string(), "/jill/stor/a/b.txt");
        assert_eq!(p.parent().unwrap().to_string(), "/jill/stor/a");
        assert_eq!(p.storage_key("uuid-1"), "/uuid-1/stor/a/b.txt");

        let root = MantaPath::parse("/jill").unwrap();
        assert!(root.is_account_root());
        assert!(root.parent().is_none());
        let top = MantaPath::parse("/jill/public/").unwrap();
        assert!(top.is_area_root());
        assert_eq!(top.to_string(), "/jill/public");
        assert_eq!(top.parent().unwrap(), root);
    }

    #[test]
    fn refuses_bad_paths_with_clear_errors() {
        let cases: &[(&str, ErrorCode)] = &[
            ("jill/stor", ErrorCode::InvalidResource),
            ("/", ErrorCode::InvalidResource),
            ("//stor", ErrorCode::InvalidResource),
            ("/j/stor", ErrorCode::InvalidResource), // login too short
            ("/1jill/stor", ErrorCode::InvalidResource),
            ("/jill/nope", ErrorCode::ResourceNotFound),
            ("/jill//stor", ErrorCode::InvalidResource),
            ("/jill/stor//a", ErrorCode::InvalidResource),
            ("/jill/stor/../bob", ErrorCode::InvalidResource),
            ("/jill/stor/./a", ErrorCode::InvalidResource),
            ("/jill/stor/a\0b", ErrorCode::InvalidResource),
        ];
        for (input, code) in cases {
            let err = MantaPath::parse(input).expect_err(input);
            assert_eq!(err.code(), *code, "{input}: {err}");
        }
        let long_name = format!("/jill/stor/{}", "x".repeat(MAX_NAME_BYTES + 1));
        assert_eq!(MantaPath::parse(&long_name), Err(PathError::NameTooLong));
        let long_path = format!("/jill/stor/{}", "abcdefgh/".repeat(300));
        assert_eq!(MantaPath::parse(&long_path), Err(PathError::PathTooLong));
    }

    #[test]
    fn url_paths_decode_and_encode() {
        let p = MantaPath::from_url_path("/jill/stor/a%20b/%C3%A9t%C3%A9%2Fx").unwrap();
        // An encoded slash is a separator once decoded, as the original treats it.
        assert_eq!(p.segments(), ["a b", "été", "x"]);
        assert_eq!(
            MantaPath::from_url_path("/jill/stor/%FF"),
            Err(PathError::NotUtf8)
        );
        let q = MantaPath::parse("/jill/stor/a b+c&d").unwrap();
        assert_eq!(q.to_url_path(), "/jill/stor/a%20b%2Bc%26d");
        assert_eq!(MantaPath::from_url_path(&q.to_url_path()).unwrap(), q);
    }

    #[test]
    fn tilde_expansion() {
        for (given, want) in [
            ("~~/stor/x", "/jill/stor/x"),
            ("~~", "/jill"),
            ("~~x", "~~x"),
            ("/bob/stor", "/bob/stor"),
        ] {
            assert_eq!(expand_tilde(given, "jill"), want, "{given}");
        }
    }

    #[test]
    fn dirname_and_basename() {
        for (path, dir, base) in [("/u/stor/a/b", "/u/stor/a", "b"), ("/u", "/", "u")] {
            assert_eq!((dirname(path), basename(path)), (dir, base), "{path}");
        }
        assert_eq!(basename("/u/stor/"), "stor");
    }

    #[test]
    fn join_and_starts_with() {
        let root = MantaPath::account_root("jill").unwrap();
        let stor = root.join("stor").unwrap();
        let a = stor.join("a").unwrap();
        assert!(a.starts_with(&stor) && a.starts_with(&root) && !stor.starts_with(&a));
        assert!(root.join("nope").is_err());
        assert!(stor.join("..").is_err());
        assert!(stor.join("").is_err());
    }

    fn name_strategy() -> impl Strategy<Value = String> {
        "[^/\u{0}]{1,40}".prop_filter("not relative", |s| s != "." && s != "..")
    }

    proptest! {
        #[test]
        fn parse_render_round_trip(
            login in "[a-zA-Z][a-zA-Z0-9_.@%-]{1,20}",
            area in prop::sample::select(Area::ALL.to_vec()),
            names in prop::collection::vec(name_strategy(), 0..6),
        ) {
            let mut s = format!("/{login}/{area}");
            for n in &names { s.push('/'); s.push_str(n); }
            let p = MantaPath::parse(&s).unwrap();
            prop_assert_eq!(p.to_string(), s.clone());
            prop_assert_eq!(MantaPath::parse(&p.to_string()).unwrap(), p.clone());
            prop_assert_eq!(MantaPath::from_url_path(&p.to_url_path()).unwrap(), p);
        }

        #[test]
        fn never_panics_on_arbitrary_input(s in ".{0,300}") {
            if let Ok(p) = MantaPath::parse(&s) {
                // Whatever parses renders back to something that parses to the same path.
                prop_assert_eq!(MantaPath::parse(&p.to_string()).unwrap(), p);
            }
            let _ = MantaPath::from_url_path(&s);
            let _ = expand_tilde(&s, "jill");
            let _ = dirname(&s);
            let _ = basename(&s);
        }
    }
}
