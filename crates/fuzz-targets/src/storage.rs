//! What a storage node reads back from its own files: the checksum attribute stored with each
//! object (a damaged disk can give back any bytes), and the CRC32C values nodes exchange in
//! headers.

use storage_api::blocks::{MAX_BLOCKS, crc32c_hex, parse_crc32c_hex};
use storage_node::digest::Checksums;

/// An object file's checksum attribute, as a node reads it before serving or scrubbing the
/// object; and the same bytes as a CRC32C header value.
pub fn checksum_attribute(data: &[u8]) {
    if let Ok(c) = Checksums::decode(data) {
        // What decodes encodes back to the same checksums.
        assert_eq!(Checksums::decode(&c.encode()).ok().as_ref(), Some(&c));
        if let Some(b) = &c.blocks {
            assert_eq!(b.size(), c.digests.size);
            assert_eq!(c.digests.crc32c, Some(b.whole()));
            assert!(b.len() <= MAX_BLOCKS, "{} blocks", b.len());
            for i in 0..b.len() {
                let (start, len) = b.extent(i);
                assert!(len >= 1 && start + len <= b.size(), "block {i} of {b:?}");
            }
        }
    }
    let s = crate::text(data);
    if let Some(v) = parse_crc32c_hex(&s) {
        assert_eq!(crc32c_hex(v), s.to_ascii_lowercase());
    }
}
