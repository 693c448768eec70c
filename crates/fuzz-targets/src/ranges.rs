//! `Range` headers: the Manta API's and the storage nodes' parser (one range), and S3's
//! (`s3s`'s parser, then the span the front door reads and its `Content-Range`), for objects
//! of a few lengths.

use s3s::dto::Range;
use storage_api::range::{ByteRange, RangeError};

const LENGTHS: [u64; 6] = [0, 1, 2, 10, 4096, u64::MAX];

/// A `Range` header value, as a Manta API read, a storage node and an S3 read take it.
pub fn range_header(data: &[u8]) {
    let s = crate::text(data);
    match ByteRange::parse(&s) {
        Ok(r) => {
            assert_eq!(ByteRange::parse(&r.to_string()), Ok(r), "{s:?}");
            for total in LENGTHS {
                if let Some(x) = r.resolve(total) {
                    assert!(x.len >= 1 && x.start < total && x.len <= total - x.start);
                    assert_eq!(x.last(), x.start + (x.len - 1));
                    assert_eq!(
                        x.content_range(total),
                        format!("bytes {}-{}/{total}", x.start, x.last())
                    );
                }
            }
        }
        Err(RangeError::Multiple(_)) => assert!(s.contains(',')),
        Err(RangeError::Malformed(_)) => {}
    }
    if let Ok(r) = Range::parse(&s) {
        assert_eq!(Range::parse(&r.to_header_string()).ok(), Some(r), "{s:?}");
        for total in LENGTHS {
            s3_read(&r, total);
        }
        // UploadPartCopy takes `bytes=first-last` and copies first..last + 1.
        if let Range::Int {
            first,
            last: Some(last),
        } = r
        {
            assert!(first <= last && last < u64::MAX);
        }
    }
}

/// What an S3 `GetObject`/`HeadObject` makes of a range on an object of `total` bytes.
fn s3_read(r: &Range, total: u64) {
    match frontdoor::s3::objects::read_span(r, total) {
        Ok(Some(span)) => {
            assert!(
                span.start < span.end && span.end <= total,
                "{r:?} on {total}: {span:?}"
            );
            let (len, content_range) = frontdoor::s3::objects::span_of(total, Some(&span));
            assert_eq!(len, span.end - span.start);
            assert_eq!(
                content_range.as_deref(),
                Some(&*format!("bytes {}-{}/{total}", span.start, span.end - 1))
            );
        }
        Ok(None) => {}
        Err(e) => assert_eq!(*e.code(), s3s::S3ErrorCode::InvalidRange),
    }
}
