//! The digests a node reports for an object, and their wire forms: MD5 as base64 (the form of
//! `Content-MD5`, RFC 1864), SHA-256 as lowercase hex, CRC32C as 8 lowercase hex digits.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::blocks::crc32c_hex;

/// What a node knows of an object's bytes: their count, and the checksums it holds.
///
/// Copies written by this version carry a CRC32C (of the whole object; the node also keeps one
/// per block, see [`crate::blocks`]) and an MD5 only when the writer asked the node to check one.
/// Copies written by earlier versions carry MD5 and SHA-256 and no CRC32C.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digests {
    /// Size in bytes.
    pub size: u64,
    /// CRC32C of the whole object.
    pub crc32c: Option<u32>,
    /// MD5, when the node computed one.
    pub md5: Option<[u8; 16]>,
    /// SHA-256 (copies written by earlier versions).
    pub sha256: Option<[u8; 32]>,
}

impl Digests {
    /// MD5 as base64, the form of `Content-MD5` (RFC 1864).
    pub fn md5_base64(&self) -> Option<String> {
        self.md5.as_ref().map(md5_base64)
    }

    /// SHA-256 as lowercase hex.
    pub fn sha256_hex(&self) -> Option<String> {
        self.sha256.as_ref().map(|s| to_hex(s))
    }

    /// CRC32C as 8 lowercase hex digits.
    pub fn crc32c_hex(&self) -> Option<String> {
        self.crc32c.map(crc32c_hex)
    }
}

impl fmt::Debug for Digests {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Digests")
            .field("size", &self.size)
            .field("crc32c", &self.crc32c_hex())
            .field("md5", &self.md5_base64())
            .field("sha256", &self.sha256_hex())
            .finish()
    }
}

/// An MD5 as base64 (the `Content-MD5` form).
pub fn md5_base64(md5: &[u8; 16]) -> String {
    B64.encode(md5)
}

/// Parses a `Content-MD5` value: base64 (with padding) of exactly 16 bytes.
pub fn parse_md5_base64(s: &str) -> Option<[u8; 16]> {
    let bytes = B64.decode(s.trim()).ok()?;
    bytes.try_into().ok()
}

/// Lowercase hex of bytes.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// Parses 64 hex digits (either case) into 32 bytes.
pub fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nibble(s[2 * i])? << 4) | nibble(s[2 * i + 1])?;
    }
    Some(out)
}
