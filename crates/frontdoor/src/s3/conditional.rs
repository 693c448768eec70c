//! Conditional requests as S3 evaluates them (RFC 9110 order), at one-second precision.
//!
//! - Reads (`GET`, `HEAD`): a failed `If-Match` or `If-Unmodified-Since` is 412
//!   `PreconditionFailed`; a matching `If-None-Match` or an `If-Modified-Since` the object is
//!   not newer than is 304 `NotModified`. `If-Unmodified-Since` is ignored when `If-Match`
//!   is given, `If-Modified-Since` when `If-None-Match` is.
//! - Copy sources (`x-amz-copy-source-if-*`): the same tests, every failure a 412.
//! - Writes (`PUT`, `CompleteMultipartUpload`): `If-None-Match: *` means "only if absent",
//!   `If-Match: <etag>` "only if present with that ETag"; a missing object fails `If-Match`
//!   with 404 `NoSuchKey`. The caller makes the write itself conditional on the Moray etag
//!   of the state checked here ([`WriteCondition`]), so the check and the write are atomic.
//!   When that Moray condition fails (the object changed between the check and the write),
//!   `If-None-Match: *` answers 412 (another write created it first) and `If-Match`
//!   409 `ConditionalRequestConflict` (the client retries and learns the new state).
//! - Deletes (`DeleteObject`, each key of `DeleteObjects`): `If-Match`,
//!   `x-amz-if-match-last-modified-time` and `x-amz-if-match-size`, alone or together, each
//!   a 412 when it fails and a 404 `NoSuchKey` when there is no object; the delete is
//!   conditional on the Moray etag checked, a race answering 409 as for writes.

use s3s::S3ErrorCode;
use s3s::dto::{ETagCondition, Timestamp};

use super::error::{S3Result, conditional_conflict, no_such_key, precondition_failed, s3err};

/// The state a condition is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Current<'a> {
    /// The object's ETag (without quotes).
    pub etag: &'a str,
    /// Last modification, epoch ms.
    pub mtime_ms: u64,
}

/// What a read should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Serve it.
    Proceed,
    /// Answer 304.
    NotModified,
}

/// The `If-*` headers of a request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Conditions<'a> {
    /// `If-Match`.
    pub if_match: Option<&'a ETagCondition>,
    /// `If-None-Match`.
    pub if_none_match: Option<&'a ETagCondition>,
    /// `If-Modified-Since`.
    pub if_modified_since: Option<&'a Timestamp>,
    /// `If-Unmodified-Since`.
    pub if_unmodified_since: Option<&'a Timestamp>,
}

/// Seconds since the epoch of a timestamp.
pub fn epoch_secs(t: &Timestamp) -> Option<u64> {
    let mut buf = Vec::new();
    t.format(s3s::dto::TimestampFormat::HttpDate, &mut buf)
        .ok()?;
    let s = String::from_utf8(buf).ok()?;
    let st = httpdate::parse_http_date(&s).ok()?;
    st.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

/// A timestamp from epoch milliseconds.
pub fn timestamp(ms: u64) -> Timestamp {
    Timestamp::from(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
}

fn matches(cond: &ETagCondition, etag: &str) -> bool {
    match cond {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => e.value() == etag,
    }
}

/// The tests shared by reads and copy sources: `Err(true)` for "412", `Err(false)` for "304".
fn evaluate(c: &Current<'_>, cond: &Conditions<'_>) -> Result<(), bool> {
    let secs = c.mtime_ms / 1000;
    if let Some(m) = cond.if_match {
        if !matches(m, c.etag) {
            return Err(true);
        }
    } else if let Some(t) = cond.if_unmodified_since.and_then(epoch_secs)
        && secs > t
    {
        return Err(true);
    }
    if let Some(m) = cond.if_none_match {
        if matches(m, c.etag) {
            return Err(false);
        }
    } else if let Some(t) = cond.if_modified_since.and_then(epoch_secs)
        && secs <= t
    {
        return Err(false);
    }
    Ok(())
}

/// Checks a read's conditions.
///
/// # Errors
/// `PreconditionFailed` (412).
pub fn check_read(c: &Current<'_>, cond: &Conditions<'_>) -> S3Result<ReadOutcome> {
    match evaluate(c, cond) {
        Ok(()) => Ok(ReadOutcome::Proceed),
        Err(false) => Ok(ReadOutcome::NotModified),
        Err(true) => Err(precondition_failed()),
    }
}

/// Checks `x-amz-copy-source-if-*`.
///
/// # Errors
/// `PreconditionFailed` (412) for any failed test.
pub fn check_copy_source(c: &Current<'_>, cond: &Conditions<'_>) -> S3Result<()> {
    evaluate(c, cond).map_err(|_| precondition_failed())
}

/// How a write must be conditioned on the state that was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteCondition {
    /// No condition.
    Any,
    /// Only if still absent.
    Absent,
    /// Only if the record is still the one read at this Moray etag.
    Unchanged(String),
}

impl WriteCondition {
    /// The Moray condition.
    pub fn moray(&self) -> moray::EtagCondition {
        match self {
            WriteCondition::Any => moray::EtagCondition::Any,
            WriteCondition::Absent => moray::EtagCondition::MustNotExist,
            WriteCondition::Unchanged(e) => moray::EtagCondition::MustMatch(e.clone()),
        }
    }
}

impl WriteCondition {
    /// The answer when the write's Moray condition failed: the object changed after the
    /// check. `If-None-Match: *` now fails outright (it exists); for `If-Match` the client
    /// retries (the new object may or may not match).
    pub fn lost(&self) -> s3s::S3Error {
        match self {
            WriteCondition::Absent => precondition_failed(),
            WriteCondition::Any | WriteCondition::Unchanged(_) => conditional_conflict(),
        }
    }
}

/// The conditions of a delete (`DeleteObject` headers, or one key's fields in
/// `DeleteObjects`).
#[derive(Debug, Clone, Default)]
pub struct DeleteConditions {
    /// `If-Match` (`*` matches any object), or a key's `ETag`.
    pub if_match: Option<ETagCondition>,
    /// `x-amz-if-match-last-modified-time`, or a key's `LastModifiedTime`: compared to the
    /// second.
    pub last_modified: Option<Timestamp>,
    /// `x-amz-if-match-size`, or a key's `Size`.
    pub size: Option<i64>,
}

impl DeleteConditions {
    /// Whether any condition is given.
    pub fn any(&self) -> bool {
        self.if_match.is_some() || self.last_modified.is_some() || self.size.is_some()
    }
}

/// Checks a delete's conditions against the current object (`None` when absent) of size
/// `size`.
///
/// # Errors
/// `NoSuchKey` when a condition is given and there is no object; `PreconditionFailed` when
/// one does not hold.
pub fn check_delete(
    current: Option<(&Current<'_>, u64)>,
    cond: &DeleteConditions,
    key: &str,
) -> S3Result<()> {
    if !cond.any() {
        return Ok(());
    }
    let Some((c, size)) = current else {
        return Err(no_such_key(key));
    };
    let etag_ok = cond.if_match.as_ref().is_none_or(|m| matches(m, c.etag));
    let time_ok = cond
        .last_modified
        .as_ref()
        .is_none_or(|t| epoch_secs(t) == Some(c.mtime_ms / 1000));
    let size_ok = cond
        .size
        .is_none_or(|s| u64::try_from(s).is_ok_and(|s| s == size));
    if etag_ok && time_ok && size_ok {
        Ok(())
    } else {
        Err(precondition_failed())
    }
}

/// Checks a write's `If-Match`/`If-None-Match` against the current object (`None` when
/// absent; with its Moray etag) and says how to condition the write.
///
/// # Errors
/// `PreconditionFailed` (412), `NoSuchKey` for `If-Match` on a missing object, `NotImplemented`
/// for `If-None-Match` with an ETag (S3 accepts only `*` on writes).
pub fn check_write(
    current: Option<(&Current<'_>, &str)>,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    key: &str,
) -> S3Result<WriteCondition> {
    let mut cond = WriteCondition::Any;
    if let Some(n) = if_none_match {
        if !n.is_any() {
            return Err(s3err(
                S3ErrorCode::NotImplemented,
                "A header you provided implies functionality that is not implemented: If-None-Match accepts only *",
            ));
        }
        if current.is_some() {
            return Err(precondition_failed());
        }
        cond = WriteCondition::Absent;
    }
    if let Some(m) = if_match {
        match current {
            None => return Err(no_such_key(key)),
            Some((c, moray_etag)) => {
                if !matches(m, c.etag) {
                    return Err(precondition_failed());
                }
                cond = WriteCondition::Unchanged(moray_etag.to_owned());
            }
        }
    }
    Ok(cond)
}

#[cfg(test)]
mod tests {
    use super::*;
    use s3s::dto::ETag;

    const MTIME: u64 = 1_700_000_000_500;

    fn cur() -> Current<'static> {
        Current {
            etag: "abc",
            mtime_ms: MTIME,
        }
    }

    fn tag(s: &str) -> ETagCondition {
        ETagCondition::ETag(ETag::Strong(s.into()))
    }

    fn secs(s: u64) -> Timestamp {
        timestamp(s * 1000)
    }

    #[test]
    fn timestamps_round_to_seconds() {
        assert_eq!(epoch_secs(&timestamp(MTIME)), Some(MTIME / 1000));
    }

    /// What a check answered, for comparing with a table: the value, or the error's code.
    fn outcome<T>(r: S3Result<T>) -> Result<T, String> {
        r.map_err(|e| e.code().as_str().to_owned())
    }

    #[test]
    fn reads() {
        let c = cur();
        let t = MTIME / 1000;
        let m = tag("abc");
        let other = tag("zzz");
        let any = ETagCondition::Any;
        let same = secs(t);
        let before = secs(t - 1);
        let failed = || Err("PreconditionFailed".to_owned());
        // (If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since), what is answered.
        for ((if_match, if_none_match, if_modified_since, if_unmodified_since), want) in [
            ((None, None, None, None), Ok(ReadOutcome::Proceed)),
            ((Some(&m), None, None, None), Ok(ReadOutcome::Proceed)),
            ((Some(&other), None, None, None), failed()),
            ((None, Some(&any), None, None), Ok(ReadOutcome::NotModified)),
            (
                (None, None, Some(&same), None),
                Ok(ReadOutcome::NotModified),
            ),
            ((None, None, Some(&before), None), Ok(ReadOutcome::Proceed)),
            ((None, None, None, Some(&before)), failed()),
            // If-Match true wins over a failing If-Unmodified-Since; If-None-Match false over
            // a "not modified" If-Modified-Since.
            (
                (Some(&m), None, None, Some(&before)),
                Ok(ReadOutcome::Proceed),
            ),
            (
                (None, Some(&other), Some(&same), None),
                Ok(ReadOutcome::Proceed),
            ),
        ] {
            let cond = Conditions {
                if_match,
                if_none_match,
                if_modified_since,
                if_unmodified_since,
            };
            assert_eq!(outcome(check_read(&c, &cond)), want, "{cond:?}");
        }
    }

    #[test]
    fn copy_sources_fail_with_412_only() {
        let c = cur();
        let any = ETagCondition::Any;
        let e = check_copy_source(
            &c,
            &Conditions {
                if_none_match: Some(&any),
                ..Conditions::default()
            },
        )
        .unwrap_err();
        assert_eq!(e.code().as_str(), "PreconditionFailed");
    }

    #[test]
    fn deletes() {
        let c = cur();
        let t = MTIME / 1000;
        let m = tag("abc");
        let other = tag("nope");
        let any = ETagCondition::Any;
        let (same, later) = (secs(t), secs(t + 1));
        let present = Some((&c, 42));
        let ok = || Ok(());
        let failed = || Err("PreconditionFailed".to_owned());
        // (object, If-Match, last-modified time, size), what is answered.
        for ((current, if_match, last_modified, size), want) in [
            ((present, None, None, None), ok()),
            ((None, None, None, None), ok()),
            ((present, Some(&m), None, None), ok()),
            ((present, Some(&any), None, None), ok()),
            ((present, Some(&other), None, None), failed()),
            ((present, None, Some(&same), None), ok()),
            ((present, None, Some(&later), None), failed()),
            ((present, None, None, Some(42)), ok()),
            ((present, None, None, Some(41)), failed()),
            ((present, None, None, Some(-1)), failed()),
            ((present, Some(&m), Some(&same), Some(42)), ok()),
            ((present, Some(&m), Some(&same), Some(7)), failed()),
            ((None, Some(&m), None, None), Err("NoSuchKey".to_owned())),
            ((None, None, None, Some(42)), Err("NoSuchKey".to_owned())),
        ] {
            let cond = DeleteConditions {
                if_match: if_match.cloned(),
                last_modified: last_modified.cloned(),
                size,
            };
            assert_eq!(
                outcome(check_delete(current, &cond, "k")),
                want,
                "{current:?} {cond:?}"
            );
        }
    }

    #[test]
    fn a_lost_race_is_a_conflict_unless_the_object_had_to_be_absent() {
        assert_eq!(
            WriteCondition::Absent.lost().code().as_str(),
            "PreconditionFailed"
        );
        let e = WriteCondition::Unchanged("E1".into()).lost();
        assert_eq!(e.code().as_str(), "ConditionalRequestConflict");
        assert_eq!(e.status_code(), Some(http::StatusCode::CONFLICT));
    }

    #[test]
    fn writes() {
        let c = cur();
        let any = ETagCondition::Any;
        let m = tag("abc");
        let other = tag("nope");
        let present = Some((&c, "E1"));
        let failed = || Err("PreconditionFailed".to_owned());
        for (current, if_match, if_none_match, want) in [
            (None, None, Some(&any), Ok(WriteCondition::Absent)),
            (present, None, Some(&any), failed()),
            (
                present,
                Some(&m),
                None,
                Ok(WriteCondition::Unchanged("E1".into())),
            ),
            (present, Some(&other), None, failed()),
            (None, Some(&m), None, Err("NoSuchKey".to_owned())),
            (present, None, None, Ok(WriteCondition::Any)),
        ] {
            assert_eq!(
                outcome(check_write(current, if_match, if_none_match, "k")),
                want,
                "{current:?} {if_match:?} {if_none_match:?}"
            );
        }
    }
}
