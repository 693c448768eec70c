//! The `Range` request header (RFC 9110 §14.2), as far as the storage node serves it: one byte
//! range per request. Several ranges are refused with 501, as the original's front door does.
//!
//! Malformed values (an unknown unit, a missing `=`, non-digits, `first > last`) are refused
//! with 400 `InvalidHeader` instead of being ignored: the storage node's callers are the front
//! door and operators, and a silently ignored range would stream a whole object to someone who
//! asked for a slice.

use std::fmt;

/// One byte range as written in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `first-last`, both inclusive.
    FromTo(u64, u64),
    /// `first-`: from `first` to the end.
    From(u64),
    /// `-n`: the last `n` bytes.
    Suffix(u64),
}

/// Why a `Range` header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// The header is not a valid byte-range specifier.
    #[error("malformed Range header {0:?}")]
    Malformed(String),
    /// More than one range was asked for.
    #[error("multiple ranges are not supported ({0:?})")]
    Multiple(String),
}

/// A satisfiable range resolved against an object's length: `start..start+len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    /// First byte.
    pub start: u64,
    /// Number of bytes (at least one).
    pub len: u64,
}

impl Resolved {
    /// The last byte (inclusive).
    pub fn last(&self) -> u64 {
        self.start + self.len - 1
    }

    /// The `Content-Range` value for an object of `total` bytes.
    pub fn content_range(&self, total: u64) -> String {
        format!("bytes {}-{}/{total}", self.start, self.last())
    }
}

impl ByteRange {
    /// Parses a `Range` header value.
    ///
    /// # Errors
    /// [`RangeError::Multiple`] for a list of ranges; [`RangeError::Malformed`] otherwise.
    pub fn parse(header: &str) -> Result<ByteRange, RangeError> {
        let malformed = || RangeError::Malformed(header.to_owned());
        let (unit, spec) = header.trim().split_once('=').ok_or_else(malformed)?;
        if !unit.trim().eq_ignore_ascii_case("bytes") {
            return Err(malformed());
        }
        if spec.contains(',') {
            // Validate each part so "bytes=0-1,x" is reported as malformed, not unsupported.
            for part in spec.split(',') {
                parse_one(part.trim()).ok_or_else(malformed)?;
            }
            return Err(RangeError::Multiple(header.to_owned()));
        }
        parse_one(spec.trim()).ok_or_else(malformed)
    }

    /// Resolves the range against an object of `total` bytes; `None` when it is unsatisfiable
    /// (it starts at or after the end, or is an empty suffix), which is answered with 416.
    pub fn resolve(&self, total: u64) -> Option<Resolved> {
        match *self {
            ByteRange::FromTo(first, last) => (first < total).then(|| Resolved {
                start: first,
                len: last.min(total - 1) - first + 1,
            }),
            ByteRange::From(first) => (first < total).then(|| Resolved {
                start: first,
                len: total - first,
            }),
            ByteRange::Suffix(n) => (n > 0 && total > 0).then(|| {
                let len = n.min(total);
                Resolved {
                    start: total - len,
                    len,
                }
            }),
        }
    }
}

fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_one(spec: &str) -> Option<ByteRange> {
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    match (a.is_empty(), b.is_empty()) {
        (true, true) => None,
        (true, false) => digits(b).map(ByteRange::Suffix),
        (false, true) => digits(a).map(ByteRange::From),
        (false, false) => {
            let (first, last) = (digits(a)?, digits(b)?);
            (first <= last).then_some(ByteRange::FromTo(first, last))
        }
    }
}

impl fmt::Display for ByteRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ByteRange::FromTo(a, b) => write!(f, "bytes={a}-{b}"),
            ByteRange::From(a) => write!(f, "bytes={a}-"),
            ByteRange::Suffix(n) => write!(f, "bytes=-{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn table() {
        let r = |s: &str| ByteRange::parse(s);
        assert_eq!(r("bytes=0-0"), Ok(ByteRange::FromTo(0, 0)));
        assert_eq!(r("bytes=5-"), Ok(ByteRange::From(5)));
        assert_eq!(r("bytes=-5"), Ok(ByteRange::Suffix(5)));
        assert_eq!(r(" Bytes = 1 - 2 "), Ok(ByteRange::FromTo(1, 2)));
        for bad in [
            "",
            "bytes",
            "bytes=",
            "bytes=-",
            "bytes=a-b",
            "bytes=5-2",
            "items=0-1",
            "bytes=1-2-3",
            "bytes=+1-2",
            "bytes=0x1-2",
            "bytes=99999999999999999999999-",
        ] {
            assert_eq!(r(bad), Err(RangeError::Malformed(bad.into())), "{bad:?}");
        }
        assert!(matches!(r("bytes=0-1,4-5"), Err(RangeError::Multiple(_))));
        assert!(matches!(r("bytes=0-1,zz"), Err(RangeError::Malformed(_))));
    }

    #[test]
    fn resolution() {
        let res = |r: ByteRange, t| r.resolve(t).map(|x| (x.start, x.len));
        assert_eq!(res(ByteRange::FromTo(0, 0), 10), Some((0, 1)));
        assert_eq!(res(ByteRange::FromTo(9, 9), 10), Some((9, 1)));
        assert_eq!(res(ByteRange::FromTo(5, 100), 10), Some((5, 5)));
        assert_eq!(res(ByteRange::FromTo(10, 12), 10), None);
        assert_eq!(res(ByteRange::From(0), 10), Some((0, 10)));
        assert_eq!(res(ByteRange::From(10), 10), None);
        assert_eq!(res(ByteRange::Suffix(3), 10), Some((7, 3)));
        assert_eq!(res(ByteRange::Suffix(30), 10), Some((0, 10)));
        assert_eq!(res(ByteRange::Suffix(0), 10), None);
        assert_eq!(res(ByteRange::Suffix(1), 0), None);
        assert_eq!(res(ByteRange::From(0), 0), None);
        assert_eq!(
            ByteRange::FromTo(2, 4)
                .resolve(10)
                .unwrap()
                .content_range(10),
            "bytes 2-4/10"
        );
    }

    fn any_range() -> impl Strategy<Value = ByteRange> {
        prop_oneof![
            (0u64..u64::MAX / 2, 0u64..u64::MAX / 2)
                .prop_map(|(a, b)| ByteRange::FromTo(a.min(b), a.max(b))),
            any::<u64>().prop_map(ByteRange::From),
            any::<u64>().prop_map(ByteRange::Suffix),
        ]
    }

    proptest! {
        #[test]
        fn render_parse_round_trip(r in any_range()) {
            prop_assert_eq!(ByteRange::parse(&r.to_string()), Ok(r));
        }

        #[test]
        fn resolved_ranges_stay_inside_the_object(r in any_range(), total in 0u64..1_000_000) {
            if let Some(x) = r.resolve(total) {
                prop_assert!(x.len >= 1);
                prop_assert!(x.last() < total);
            }
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(s in ".{0,40}", t in "bytes=[0-9 ,-]{0,20}") {
            let _ = ByteRange::parse(&s);
            if let Ok(r) = ByteRange::parse(&t) {
                let _ = r.resolve(1000);
            }
        }
    }
}
