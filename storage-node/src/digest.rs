//! Object checksums: computed while an upload streams, stored beside the bytes in an extended
//! attribute of the object file, and checked again by GET headers, scrub and the front door.
//!
//! The attribute (`user.manta.digest`) holds a small versioned JSON document
//! `{"v":1,"md5":"<base64>","sha256":"<hex>","size":N}`. Being an attribute of the inode, it is
//! written to the temp file before the file is fsynced and renamed, so the bytes and their
//! checksums appear together, atomically, and travel together through renames into the
//! tombstone and quarantine areas.

use std::fmt;
use std::fs::File;
use std::io;

use md5::{Digest as _, Md5};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
pub(crate) use storage_api::digest::{Digests, md5_base64, parse_hex32, parse_md5_base64, to_hex};

/// The extended attribute holding an object's [`Digests`].
pub const XATTR_NAME: &str = "user.manta.digest";

/// The version of the attribute's JSON layout this build writes and understands.
const XATTR_VERSION: u32 = 1;

/// Reading and writing [`Digests`] as the object file's extended attribute.
pub trait DigestsExt: Sized {
    /// The digests of the empty object.
    fn empty() -> Self;

    /// Reads the digests stored on an open object file.
    ///
    /// # Errors
    /// `NotFound`-kind error when the file has no attribute; `InvalidData` when the attribute
    /// is not a document this build understands; other I/O errors as they come.
    fn read_from(file: &File) -> io::Result<Self>;

    /// Stores the digests on an open (temp) file, replacing any previous value.
    ///
    /// # Errors
    /// I/O errors, including `Unsupported` when the filesystem has no user xattrs.
    fn write_to(&self, file: &File) -> io::Result<()>;

    /// The attribute's bytes.
    fn encode(&self) -> Vec<u8>;

    /// Parses the attribute's bytes.
    ///
    /// # Errors
    /// `InvalidData` for anything but a well-formed version-1 document.
    fn decode(bytes: &[u8]) -> io::Result<Self>;
}

impl DigestsExt for Digests {
    fn empty() -> Digests {
        Hasher::new().finish()
    }

    fn read_from(file: &File) -> io::Result<Digests> {
        let mut buf = [0u8; 512];
        let n = match rustix::fs::fgetxattr(file, XATTR_NAME, &mut buf[..]) {
            Ok(n) => n,
            Err(rustix::io::Errno::NODATA) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "object file has no checksum attribute",
                ));
            }
            Err(e) => return Err(e.into()),
        };
        Digests::decode(&buf[..n])
    }

    fn write_to(&self, file: &File) -> io::Result<()> {
        rustix::fs::fsetxattr(
            file,
            XATTR_NAME,
            &self.encode(),
            rustix::fs::XattrFlags::empty(),
        )
        .map_err(io::Error::from)
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(&Stored {
            v: XATTR_VERSION,
            md5: self.md5_base64(),
            sha256: self.sha256_hex(),
            size: self.size,
        })
        .expect("a struct of strings and numbers always serialises")
    }

    fn decode(bytes: &[u8]) -> io::Result<Digests> {
        let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
        let s: Stored = serde_json::from_slice(bytes)
            .map_err(|e| bad(format!("checksum attribute is not valid JSON: {e}")))?;
        if s.v != XATTR_VERSION {
            return Err(bad(format!(
                "checksum attribute version {} is not understood (expected {XATTR_VERSION})",
                s.v
            )));
        }
        let md5 = parse_md5_base64(&s.md5)
            .ok_or_else(|| bad(format!("bad md5 {:?} in checksum attribute", s.md5)))?;
        let sha256 = parse_hex32(&s.sha256)
            .ok_or_else(|| bad(format!("bad sha256 {:?} in checksum attribute", s.sha256)))?;
        Ok(Digests {
            md5,
            sha256,
            size: s.size,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct Stored {
    v: u32,
    md5: String,
    sha256: String,
    size: u64,
}

/// Running MD5 + SHA-256 + byte count over a stream of chunks.
#[derive(Clone)]
pub struct Hasher {
    md5: Md5,
    sha256: Sha256,
    size: u64,
}

impl Default for Hasher {
    fn default() -> Self {
        Hasher::new()
    }
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hasher").field("size", &self.size).finish()
    }
}

impl Hasher {
    /// A hasher that has seen nothing.
    pub fn new() -> Hasher {
        Hasher {
            md5: Md5::new(),
            sha256: Sha256::new(),
            size: 0,
        }
    }

    /// Feeds the next chunk. CPU-bound: call it off the async runtime for large chunks.
    pub fn update(&mut self, chunk: &[u8]) {
        self.md5.update(chunk);
        self.sha256.update(chunk);
        self.size += chunk.len() as u64;
    }

    /// Bytes seen so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The digests of everything fed.
    pub fn finish(self) -> Digests {
        Digests {
            md5: self.md5.finalize().into(),
            sha256: self.sha256.finalize().into(),
            size: self.size,
        }
    }
}

/// Uploads larger than this hash their MD5 on a helper thread (see [`StreamHasher`]).
const MD5_HELPER_THRESHOLD: u64 = 4 * 1024 * 1024;

/// MD5 + SHA-256 for an upload, using two cores for large objects: MD5 cannot be parallelised
/// within one stream and is the slowest step of an upload (slower than SHA-256 with the CPU's
/// SHA extensions, and than the disk), so past [`MD5_HELPER_THRESHOLD`] bytes the MD5 state
/// moves to a helper thread fed with (cheaply cloned) chunks while the caller does SHA-256 and
/// the write. Small objects never pay for a thread.
pub struct StreamHasher {
    sha256: Sha256,
    md5: Md5Lane,
    size: u64,
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
            .field("size", &self.size)
            .finish()
    }
}

impl Default for StreamHasher {
    fn default() -> Self {
        StreamHasher::new()
    }
}

impl StreamHasher {
    /// A hasher that has seen nothing.
    pub fn new() -> StreamHasher {
        StreamHasher {
            sha256: Sha256::new(),
            md5: Md5Lane::Inline(Md5::new()),
            size: 0,
        }
    }

    /// Feeds the next chunk (blocking: call it on a blocking thread).
    pub fn update(&mut self, chunk: &bytes::Bytes) {
        self.size += chunk.len() as u64;
        let promote = match &mut self.md5 {
            Md5Lane::Inline(h) => {
                h.update(chunk);
                self.size > MD5_HELPER_THRESHOLD
            }
            Md5Lane::Helper { tx, .. } => {
                // The helper only stops when the sender is dropped, so this cannot fail while
                // `self` lives.
                let _ = tx.send(chunk.clone());
                false
            }
        };
        self.sha256.update(chunk);
        if promote {
            let Md5Lane::Inline(h) = &self.md5 else {
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
                self.md5 = Md5Lane::Helper { tx, handle };
            }
        }
    }

    /// The digests of everything fed.
    ///
    /// # Errors
    /// When the helper thread panicked.
    pub fn finish(self) -> io::Result<Digests> {
        let md5 = match self.md5 {
            Md5Lane::Inline(h) => h,
            Md5Lane::Helper { tx, handle } => {
                drop(tx);
                handle
                    .join()
                    .map_err(|_| io::Error::other("MD5 helper thread panicked"))?
            }
        };
        Ok(Digests {
            md5: md5.finalize().into(),
            sha256: self.sha256.finalize().into(),
            size: self.size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_digests() {
        let d = Digests::empty();
        assert_eq!(d.md5_base64(), "1B2M2Y8AsgTpgAmY7PhCfg==");
        assert_eq!(
            d.sha256_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut h = Hasher::new();
        h.update(b"hello ");
        h.update(b"world");
        let d = h.finish();
        assert_eq!(d.size, 11);
        assert_eq!(d.md5_base64(), "XrY7u+Ae7tCTyyK7j1rNww==");
        assert_eq!(
            d.sha256_hex(),
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
    }

    #[test]
    fn stream_hasher_agrees_with_the_simple_one() {
        for len in [
            0usize,
            1,
            4 * 1024 * 1024,
            4 * 1024 * 1024 + 1,
            9 * 1024 * 1024 + 7,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let mut simple = Hasher::new();
            let mut stream = StreamHasher::new();
            for c in data.chunks(300_000) {
                simple.update(c);
                stream.update(&bytes::Bytes::copy_from_slice(c));
            }
            assert_eq!(stream.finish().unwrap(), simple.finish(), "{len}");
        }
    }

    #[test]
    fn bad_attributes_are_refused() {
        assert!(Digests::decode(b"").is_err());
        assert!(Digests::decode(b"{}").is_err());
        let mut v: serde_json::Value = serde_json::from_slice(&Digests::empty().encode()).unwrap();
        v["v"] = 2.into();
        assert!(Digests::decode(&serde_json::to_vec(&v).unwrap()).is_err());
        assert!(parse_md5_base64("AAAA").is_none(), "3 bytes is not an MD5");
        assert!(parse_md5_base64("not base64!").is_none());
        assert!(parse_hex32(&"g".repeat(64)).is_none());
    }

    proptest! {
        #[test]
        fn attribute_round_trips(md5 in any::<[u8; 16]>(), sha in any::<[u8; 32]>(), size in any::<u64>()) {
            let d = Digests { md5, sha256: sha, size };
            prop_assert_eq!(Digests::decode(&d.encode()).unwrap(), d);
            prop_assert_eq!(parse_md5_base64(&d.md5_base64()), Some(md5));
            prop_assert_eq!(parse_hex32(&d.sha256_hex()), Some(sha));
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), s in ".{0,80}") {
            let _ = Digests::decode(&bytes);
            let _ = parse_md5_base64(&s);
            let _ = parse_hex32(&s);
        }
    }
}
