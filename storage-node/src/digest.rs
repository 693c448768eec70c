//! Object checksums: computed while an upload streams, stored beside the bytes in an extended
//! attribute of the object file, and checked on every read, by scrub and by the front door.
//!
//! A copy written by this version carries CRC32C sums of its blocks ([`BlockSums`], 1 MiB
//! blocks for objects up to 512 MiB) and the whole object's CRC32C derived from them; an MD5
//! only when the writer asked the node to check one (`Content-MD5`: the front door computes the
//! MD5 the API reports itself, once). The attribute (`user.manta.digest`) holds a small
//! versioned JSON document:
//! `{"v":2,"size":N,"crc32c":"<8 hex>","block":<block size>,"sums":"<base64 of the big-endian
//! sums>","md5":"<base64>"?}` (at most 512 sums, about 3 KiB: within what ext4 and ZFS keep in
//! one attribute). Copies written by earlier versions carry `{"v":1,"md5","sha256","size"}`,
//! still read and verified (by SHA-256, whole).
//!
//! Being an attribute of the inode, it is written to the temp file before the file is fsynced
//! and renamed, so the bytes and their checksums appear together, atomically, and travel
//! together through renames into the tombstone and quarantine areas.

use std::fmt;
use std::fs::File;
use std::io;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use md5::{Digest as _, Md5};
use serde::{Deserialize, Serialize};
use storage_api::blocks::{BlockHasher, BlockSums, crc32c_hex, parse_crc32c_hex};
pub(crate) use storage_api::digest::{Digests, md5_base64, parse_hex32, parse_md5_base64, to_hex};

/// The extended attribute holding an object's [`Checksums`].
pub const XATTR_NAME: &str = "user.manta.digest";

/// The largest attribute read back (512 sums in base64 and the rest fit well within it).
const XATTR_MAX: usize = 4096;

/// What the node keeps with an object's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksums {
    /// Size and whole-object sums, as the node reports them.
    pub digests: Digests,
    /// The per-block CRC32C sums (absent on copies written by earlier versions).
    pub blocks: Option<BlockSums>,
}

impl Checksums {
    /// Reads the checksums stored on an open object file.
    ///
    /// # Errors
    /// `NotFound`-kind error when the file has no attribute; `InvalidData` when the attribute
    /// is not a document this build understands; other I/O errors as they come.
    pub fn read_from(file: &File) -> io::Result<Checksums> {
        let mut buf = vec![0u8; XATTR_MAX];
        let n = match rustix::fs::fgetxattr(file, XATTR_NAME, &mut buf[..]) {
            Ok(n) => n,
            Err(rustix::io::Errno::NODATA) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "object file has no checksum attribute",
                ));
            }
            Err(rustix::io::Errno::RANGE) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("checksum attribute is larger than {XATTR_MAX} bytes"),
                ));
            }
            Err(e) => return Err(e.into()),
        };
        Checksums::decode(&buf[..n])
    }

    /// Stores the checksums on an open (temp) file, replacing any previous value.
    ///
    /// # Errors
    /// I/O errors, including `Unsupported` when the filesystem has no user xattrs.
    pub fn write_to(&self, file: &File) -> io::Result<()> {
        rustix::fs::fsetxattr(
            file,
            XATTR_NAME,
            &self.encode(),
            rustix::fs::XattrFlags::empty(),
        )
        .map_err(io::Error::from)
    }

    /// The attribute's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let d = &self.digests;
        let doc = match &self.blocks {
            Some(b) => serde_json::to_vec(&V2 {
                v: 2,
                size: d.size,
                crc32c: crc32c_hex(b.whole()),
                block: b.block_size(),
                sums: B64.encode(b.encode_sums()),
                md5: d.md5_base64(),
            }),
            None => serde_json::to_vec(&V1 {
                v: 1,
                md5: d.md5_base64().unwrap_or_default(),
                sha256: d.sha256_hex().unwrap_or_default(),
                size: d.size,
            }),
        };
        doc.expect("a struct of strings and numbers always serialises")
    }

    /// Parses the attribute's bytes.
    ///
    /// # Errors
    /// `InvalidData` for anything but a well-formed version-1 or version-2 document.
    pub fn decode(bytes: &[u8]) -> io::Result<Checksums> {
        let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
        let v: Version = serde_json::from_slice(bytes)
            .map_err(|e| bad(format!("checksum attribute is not valid JSON: {e}")))?;
        match v.v {
            1 => {
                let s: V1 = serde_json::from_slice(bytes)
                    .map_err(|e| bad(format!("bad version-1 checksum attribute: {e}")))?;
                let md5 = parse_md5_base64(&s.md5)
                    .ok_or_else(|| bad(format!("bad md5 {:?} in checksum attribute", s.md5)))?;
                let sha256 = parse_hex32(&s.sha256).ok_or_else(|| {
                    bad(format!("bad sha256 {:?} in checksum attribute", s.sha256))
                })?;
                Ok(Checksums {
                    digests: Digests {
                        size: s.size,
                        crc32c: None,
                        md5: Some(md5),
                        sha256: Some(sha256),
                    },
                    blocks: None,
                })
            }
            2 => {
                let s: V2 = serde_json::from_slice(bytes)
                    .map_err(|e| bad(format!("bad version-2 checksum attribute: {e}")))?;
                let sums = B64
                    .decode(&s.sums)
                    .map_err(|e| bad(format!("block sums are not base64: {e}")))?;
                let blocks = BlockSums::decode_sums(s.block, s.size, &sums).map_err(bad)?;
                let crc32c = parse_crc32c_hex(&s.crc32c).ok_or_else(|| {
                    bad(format!("bad crc32c {:?} in checksum attribute", s.crc32c))
                })?;
                if crc32c != blocks.whole() {
                    return Err(bad(format!(
                        "crc32c {} in checksum attribute is not that of its blocks ({})",
                        s.crc32c,
                        crc32c_hex(blocks.whole())
                    )));
                }
                let md5 = match &s.md5 {
                    None => None,
                    Some(m) => Some(
                        parse_md5_base64(m)
                            .ok_or_else(|| bad(format!("bad md5 {m:?} in checksum attribute")))?,
                    ),
                };
                Ok(Checksums {
                    digests: Digests {
                        size: s.size,
                        crc32c: Some(crc32c),
                        md5,
                        sha256: None,
                    },
                    blocks: Some(blocks),
                })
            }
            other => Err(bad(format!(
                "checksum attribute version {other} is not understood (expected 1 or 2)"
            ))),
        }
    }
}

#[derive(Deserialize)]
struct Version {
    v: u32,
}

#[derive(Serialize, Deserialize)]
struct V1 {
    v: u32,
    md5: String,
    sha256: String,
    size: u64,
}

#[derive(Serialize, Deserialize)]
struct V2 {
    v: u32,
    size: u64,
    crc32c: String,
    block: u64,
    sums: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    md5: Option<String>,
}

/// Uploads larger than this hash their MD5 (when one is asked for) on a helper thread.
const MD5_HELPER_THRESHOLD: u64 = 4 * 1024 * 1024;

/// The checksums of an upload: CRC32C block sums always, and MD5 when the writer asked the node
/// to check one. MD5 is the slow one (it cannot be parallelised within a stream, and runs well
/// under 1 GB/s), so past [`MD5_HELPER_THRESHOLD`] bytes its state moves to a helper thread fed
/// with (cheaply cloned) chunks while the caller does the block sums and the write. Small
/// objects never pay for a thread.
pub struct StreamHasher {
    blocks: BlockHasher,
    md5: Option<Md5Lane>,
}

enum Md5Lane {
    Inline(Md5),
    Helper {
        tx: std::sync::mpsc::SyncSender<bytes::Bytes>,
        handle: std::thread::JoinHandle<Md5>,
    },
}

impl fmt::Debug for StreamHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamHasher")
            .field("size", &self.blocks.size())
            .field("md5", &self.md5.is_some())
            .finish()
    }
}

impl StreamHasher {
    /// A hasher that has seen nothing; `md5` says whether to compute an MD5 too.
    pub fn new(md5: bool) -> StreamHasher {
        StreamHasher {
            blocks: BlockHasher::new(),
            md5: md5.then(|| Md5Lane::Inline(Md5::new())),
        }
    }

    /// Bytes seen so far.
    pub fn size(&self) -> u64 {
        self.blocks.size()
    }

    /// Feeds the next chunk (blocking: call it on a blocking thread).
    pub fn update(&mut self, chunk: &bytes::Bytes) {
        self.blocks.update(chunk);
        let size = self.blocks.size();
        let promote = match &mut self.md5 {
            None => false,
            Some(Md5Lane::Inline(h)) => {
                h.update(chunk);
                size > MD5_HELPER_THRESHOLD
            }
            Some(Md5Lane::Helper { tx, .. }) => {
                // The helper only stops when the sender is dropped, so this cannot fail while
                // `self` lives.
                let _ = tx.send(chunk.clone());
                false
            }
        };
        if promote {
            let Some(Md5Lane::Inline(h)) = &self.md5 else {
                unreachable!("promotion starts from the inline lane")
            };
            let mut state = h.clone();
            // Two chunks in flight: enough to overlap, small enough for many uploads at once.
            let (tx, rx) = std::sync::mpsc::sync_channel::<bytes::Bytes>(2);
            let spawned = std::thread::Builder::new()
                .name("upload-md5".into())
                .spawn(move || {
                    for c in rx {
                        state.update(&c);
                    }
                    state
                });
            // Without a thread, keep hashing inline.
            if let Ok(handle) = spawned {
                self.md5 = Some(Md5Lane::Helper { tx, handle });
            }
        }
    }

    /// The checksums of everything fed.
    ///
    /// # Errors
    /// When the helper thread panicked.
    pub fn finish(self) -> io::Result<Checksums> {
        let md5 = match self.md5 {
            None => None,
            Some(Md5Lane::Inline(h)) => Some(h),
            Some(Md5Lane::Helper { tx, handle }) => {
                drop(tx);
                Some(
                    handle
                        .join()
                        .map_err(|_| io::Error::other("MD5 helper thread panicked"))?,
                )
            }
        };
        let blocks = self.blocks.finish();
        Ok(Checksums {
            digests: Digests {
                size: blocks.size(),
                crc32c: Some(blocks.whole()),
                md5: md5.map(|h| h.finalize().into()),
                sha256: None,
            },
            blocks: Some(blocks),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hash(data: &[u8], cut: usize, md5: bool) -> Checksums {
        let mut h = StreamHasher::new(md5);
        for c in data.chunks(cut.max(1)) {
            h.update(&bytes::Bytes::copy_from_slice(c));
        }
        h.finish().unwrap()
    }

    #[test]
    fn known_digests() {
        let d = hash(b"", 1, false);
        assert_eq!(d.digests.size, 0);
        assert_eq!(d.digests.crc32c, Some(0));
        assert_eq!(d.digests.md5, None);
        let d = hash(b"hello world", 6, true).digests;
        assert_eq!(d.size, 11);
        assert_eq!(d.md5_base64().as_deref(), Some("XrY7u+Ae7tCTyyK7j1rNww=="));
        assert_eq!(d.crc32c, Some(storage_api::blocks::crc32c(b"hello world")));
    }

    #[test]
    fn the_md5_helper_agrees_with_inline_hashing() {
        for len in [
            0usize,
            1,
            4 * 1024 * 1024,
            4 * 1024 * 1024 + 1,
            9 * 1024 * 1024 + 7,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let d = hash(&data, 300_000, true);
            let want: [u8; 16] = Md5::digest(&data).into();
            assert_eq!(d.digests.md5, Some(want), "{len}");
            assert_eq!(d, Checksums::decode(&d.encode()).unwrap(), "{len}");
        }
    }

    #[test]
    fn earlier_attributes_are_read() {
        let v1 = br#"{"v":1,"md5":"XrY7u+Ae7tCTyyK7j1rNww==","sha256":"b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9","size":11}"#;
        let c = Checksums::decode(v1).unwrap();
        assert_eq!(c.blocks, None);
        assert_eq!(c.digests.crc32c, None);
        assert_eq!(
            c.digests.sha256_hex().as_deref(),
            Some("b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9")
        );
        assert_eq!(Checksums::decode(&c.encode()).unwrap(), c);
    }

    #[test]
    fn bad_attributes_are_refused() {
        assert!(Checksums::decode(b"").is_err());
        assert!(Checksums::decode(b"{}").is_err());
        let good = hash(&[5u8; 3_000_000], 65536, false);
        let mut v: serde_json::Value = serde_json::from_slice(&good.encode()).unwrap();
        v["v"] = 3.into();
        assert!(Checksums::decode(&serde_json::to_vec(&v).unwrap()).is_err());
        let mut v: serde_json::Value = serde_json::from_slice(&good.encode()).unwrap();
        v["crc32c"] = "00000000".into();
        assert!(
            Checksums::decode(&serde_json::to_vec(&v).unwrap()).is_err(),
            "a whole-object sum that is not that of the blocks"
        );
        let mut v: serde_json::Value = serde_json::from_slice(&good.encode()).unwrap();
        v["size"] = 5_000_000.into();
        assert!(
            Checksums::decode(&serde_json::to_vec(&v).unwrap()).is_err(),
            "too few sums for the size"
        );
        assert!(parse_md5_base64("AAAA").is_none(), "3 bytes is not an MD5");
        assert!(parse_md5_base64("not base64!").is_none());
        assert!(parse_hex32(&"g".repeat(64)).is_none());
    }

    #[test]
    fn the_largest_table_fits_the_attribute_limit() {
        let size = 1u64 << 40;
        let bs = storage_api::blocks::block_size_for(size);
        let blocks = BlockSums::new(bs, size, vec![u32::MAX; 512]).unwrap();
        let c = Checksums {
            digests: Digests {
                size,
                crc32c: Some(blocks.whole()),
                md5: Some([0xff; 16]),
                sha256: None,
            },
            blocks: Some(blocks),
        };
        let bytes = c.encode();
        assert!(bytes.len() < 3200, "{} bytes", bytes.len());
        assert_eq!(Checksums::decode(&bytes).unwrap(), c);
    }

    proptest! {
        #[test]
        fn attribute_round_trips(len in 0usize..2_500_000, cut in 1usize..400_000, md5 in any::<bool>()) {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 253) as u8).collect();
            let c = hash(&data, cut, md5);
            prop_assert_eq!(Checksums::decode(&c.encode()).unwrap(), c);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), s in ".{0,80}") {
            let _ = Checksums::decode(&bytes);
            let _ = Checksums::decode(format!(r#"{{"v":2,"size":5,"crc32c":"{s}","block":1048576,"sums":"{s}"}}"#).as_bytes());
            let _ = parse_md5_base64(&s);
            let _ = parse_hex32(&s);
        }
    }
}
