//! Per-block CRC32C checksums: what protects an object's bytes at rest and in flight.
//!
//! A storage node computes them while it writes an upload (CRC32C runs at several GB/s per core
//! with the CPU's CRC instructions, where MD5 manages well under one), stores them with the
//! object, and checks the blocks a read touches before it sends a byte of them. So a read that
//! meets a damaged block stops at that block's start, having sent only good bytes, and the reader
//! can continue from another copy at the same offset.
//!
//! Blocks are [`UNIT`] (1 MiB) for objects up to [`MAX_BLOCKS`] MiB; a larger object has larger
//! blocks (a power of two times [`UNIT`]) so that no object has more than [`MAX_BLOCKS`] sums:
//! the table then always fits in one extended attribute (2 KiB).
//!
//! The whole object's CRC32C ([`BlockSums::whole`]) is derived from the block sums; it is what a
//! node reports for an upload (`x-manta-computed-crc32c`), what the front door compares with the
//! CRC32C it computed of the bytes it sent, and what the metadata record keeps.

use std::fmt;

/// The smallest block, and the unit the block size is a power-of-two multiple of.
pub const UNIT: u64 = 1024 * 1024;

/// The most blocks an object has.
pub const MAX_BLOCKS: usize = 512;

/// The block size for an object of `size` bytes: [`UNIT`], doubled until at most
/// [`MAX_BLOCKS`] blocks cover the object.
pub fn block_size_for(size: u64) -> u64 {
    let mut bs = UNIT;
    while size.div_ceil(bs) > MAX_BLOCKS as u64 {
        bs *= 2;
    }
    bs
}

/// CRC32C (Castagnoli) of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    ::crc32c::crc32c(data)
}

/// CRC32C of the bytes `before` was computed over followed by `data`.
pub fn crc32c_append(before: u32, data: &[u8]) -> u32 {
    ::crc32c::crc32c_append(before, data)
}

/// A CRC32C as the 8 lowercase hex digits headers and records carry.
pub fn crc32c_hex(crc: u32) -> String {
    format!("{crc:08x}")
}

/// Parses 8 hex digits (either case) into a CRC32C.
pub fn parse_crc32c_hex(s: &str) -> Option<u32> {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

/// The checksums of one object's blocks.
#[derive(Clone, PartialEq, Eq)]
pub struct BlockSums {
    block_size: u64,
    size: u64,
    sums: Vec<u32>,
}

impl fmt::Debug for BlockSums {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockSums")
            .field("block_size", &self.block_size)
            .field("size", &self.size)
            .field("blocks", &self.sums.len())
            .field("whole", &crc32c_hex(self.whole()))
            .finish()
    }
}

/// A block whose bytes do not match their checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadBlock {
    /// The block's index.
    pub index: usize,
    /// Its first byte's offset in the object.
    pub offset: u64,
    /// The stored checksum.
    pub expected: u32,
    /// What the bytes hash to.
    pub actual: u32,
}

impl fmt::Display for BadBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "block {} (at byte {}) has CRC32C {}, stored {}",
            self.index,
            self.offset,
            crc32c_hex(self.actual),
            crc32c_hex(self.expected)
        )
    }
}

impl BlockSums {
    /// The sums of an object of `size` bytes in blocks of `block_size`, as stored.
    ///
    /// # Errors
    /// When the block size is not the one [`block_size_for`] gives for `size`, or the number
    /// of sums does not cover the object exactly.
    pub fn new(block_size: u64, size: u64, sums: Vec<u32>) -> Result<BlockSums, String> {
        if block_size != block_size_for(size) {
            return Err(format!(
                "block size {block_size} is not the one for {size} bytes ({})",
                block_size_for(size)
            ));
        }
        let want = size.div_ceil(block_size);
        if sums.len() as u64 != want {
            return Err(format!(
                "{} block sums for {size} bytes in blocks of {block_size} (expected {want})",
                sums.len()
            ));
        }
        Ok(BlockSums {
            block_size,
            size,
            sums,
        })
    }

    /// The block size.
    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    /// The object's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The sums, block by block.
    pub fn sums(&self) -> &[u32] {
        &self.sums
    }

    /// The number of blocks.
    pub fn len(&self) -> usize {
        self.sums.len()
    }

    /// Whether the object is empty (it has no blocks).
    pub fn is_empty(&self) -> bool {
        self.sums.is_empty()
    }

    /// The block holding byte `offset`.
    pub fn block_of(&self, offset: u64) -> usize {
        (offset / self.block_size) as usize
    }

    /// Block `index` as (first byte, length).
    pub fn extent(&self, index: usize) -> (u64, u64) {
        let start = index as u64 * self.block_size;
        (start, self.block_size.min(self.size.saturating_sub(start)))
    }

    /// Checks the bytes of block `index`.
    ///
    /// # Errors
    /// [`BadBlock`] when they differ from the stored sum (or the length is wrong).
    pub fn check(&self, index: usize, data: &[u8]) -> Result<(), BadBlock> {
        self.verify(index, crc32c(data), data.len() as u64)
    }

    /// Checks that block `index`, whose `len` bytes were hashed (as they were read) to
    /// `actual`, is what was stored.
    ///
    /// # Errors
    /// [`BadBlock`] when the sum differs from the stored one (or the length is wrong).
    pub fn verify(&self, index: usize, actual: u32, len: u64) -> Result<(), BadBlock> {
        let (offset, want_len) = self.extent(index);
        let expected = self.sums.get(index).copied().unwrap_or(!actual);
        if actual == expected && len == want_len {
            Ok(())
        } else {
            Err(BadBlock {
                index,
                offset,
                expected,
                actual,
            })
        }
    }

    /// The whole object's CRC32C (for an object of one block, that block's sum: no combining).
    pub fn whole(&self) -> u32 {
        let Some((&first, rest)) = self.sums.split_first() else {
            return 0;
        };
        let mut acc = first;
        for (i, &s) in rest.iter().enumerate() {
            let (_, len) = self.extent(i + 1);
            acc = ::crc32c::crc32c_combine(acc, s, len as usize);
        }
        acc
    }

    /// The sums as big-endian bytes, 4 per block.
    pub fn encode_sums(&self) -> Vec<u8> {
        self.sums.iter().flat_map(|s| s.to_be_bytes()).collect()
    }

    /// Reads sums written by [`BlockSums::encode_sums`].
    ///
    /// # Errors
    /// As [`BlockSums::new`], and when the bytes are not whole sums.
    pub fn decode_sums(block_size: u64, size: u64, bytes: &[u8]) -> Result<BlockSums, String> {
        if !bytes.len().is_multiple_of(4) {
            return Err(format!("{} bytes are not whole block sums", bytes.len()));
        }
        let sums = bytes
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        BlockSums::new(block_size, size, sums)
    }
}

/// Computes [`BlockSums`] over a stream of chunks of any sizes, in constant memory (at most
/// [`MAX_BLOCKS`] sums are kept: when an object outgrows them, neighbours are merged and the
/// block size doubles).
#[derive(Debug, Clone)]
pub struct BlockHasher {
    block_size: u64,
    sums: Vec<u32>,
    cur: u32,
    cur_len: u64,
    size: u64,
}

impl Default for BlockHasher {
    fn default() -> Self {
        BlockHasher::new()
    }
}

impl BlockHasher {
    /// A hasher that has seen nothing.
    pub fn new() -> BlockHasher {
        BlockHasher {
            block_size: UNIT,
            sums: Vec::new(),
            cur: 0,
            cur_len: 0,
            size: 0,
        }
    }

    /// Feeds the next bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.cur_len == 0 && self.sums.len() == MAX_BLOCKS {
                self.double();
            }
            let take = ((self.block_size - self.cur_len) as usize).min(data.len());
            self.cur = crc32c_append(self.cur, &data[..take]);
            self.cur_len += take as u64;
            self.size += take as u64;
            data = &data[take..];
            if self.cur_len == self.block_size {
                self.sums.push(self.cur);
                self.cur = 0;
                self.cur_len = 0;
            }
        }
    }

    /// Merges neighbouring (full) blocks: the block size doubles.
    fn double(&mut self) {
        let bs = self.block_size as usize;
        self.sums = self
            .sums
            .chunks(2)
            .map(|p| match p {
                [a, b] => ::crc32c::crc32c_combine(*a, *b, bs),
                [a] => *a,
                _ => unreachable!("chunks(2) gives one or two"),
            })
            .collect();
        self.block_size *= 2;
    }

    /// Bytes seen so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The sums of everything fed.
    pub fn finish(mut self) -> BlockSums {
        if self.cur_len > 0 {
            self.sums.push(self.cur);
        }
        debug_assert_eq!(self.block_size, block_size_for(self.size));
        BlockSums {
            block_size: self.block_size,
            size: self.size,
            sums: self.sums,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_values() {
        // The check value of CRC-32C (RFC 3720, appendix B.4).
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c_hex(0xe306_9283), "e3069283");
        assert_eq!(parse_crc32c_hex("E3069283"), Some(0xe306_9283));
        assert_eq!(parse_crc32c_hex("e306928"), None);
        assert_eq!(parse_crc32c_hex("+3069283"), None);
        let empty = BlockHasher::new().finish();
        assert!(empty.is_empty());
        assert_eq!(empty.whole(), 0);
    }

    #[test]
    fn block_sizes_keep_the_table_small() {
        assert_eq!(block_size_for(0), UNIT);
        assert_eq!(block_size_for(512 * UNIT), UNIT);
        assert_eq!(block_size_for(512 * UNIT + 1), 2 * UNIT);
        assert_eq!(block_size_for(1 << 40), 2048 * UNIT);
    }

    #[test]
    fn big_objects_fold_to_the_block_size_for_their_size() {
        // 600 MiB in odd chunks: the hasher doubles once, at 512 MiB.
        let mut h = BlockHasher::new();
        let chunk = vec![7u8; 3 * 1024 * 1024 + 5];
        let mut left = 600 * UNIT;
        let mut whole = 0u32;
        while left > 0 {
            let n = (chunk.len() as u64).min(left) as usize;
            h.update(&chunk[..n]);
            whole = crc32c_append(whole, &chunk[..n]);
            left -= n as u64;
        }
        let s = h.finish();
        assert_eq!(s.block_size(), 2 * UNIT);
        assert_eq!(s.len(), 300);
        assert_eq!(s.whole(), whole);
    }

    proptest! {
        #[test]
        fn sums_match_their_blocks(len in 0usize..3_500_000, cut in 1usize..700_000, flip in any::<usize>()) {
            let data: Vec<u8> = (0..len).map(|i| (i * 131 % 251) as u8).collect();
            let mut h = BlockHasher::new();
            for c in data.chunks(cut) {
                h.update(c);
            }
            let s = h.finish();
            prop_assert_eq!(s.size(), len as u64);
            prop_assert_eq!(s.whole(), crc32c(&data));
            for i in 0..s.len() {
                let (off, n) = s.extent(i);
                prop_assert!(s.check(i, &data[off as usize..(off + n) as usize]).is_ok());
            }
            let back = BlockSums::decode_sums(s.block_size(), s.size(), &s.encode_sums()).unwrap();
            prop_assert_eq!(&back, &s);
            if len > 0 {
                let mut bad = data.clone();
                let at = flip % len;
                bad[at] ^= 0x40;
                let i = s.block_of(at as u64);
                let (off, n) = s.extent(i);
                let e = s.check(i, &bad[off as usize..(off + n) as usize]).unwrap_err();
                prop_assert_eq!(e.index, i);
                prop_assert_eq!(e.offset, off);
            }
        }

        #[test]
        fn decoding_arbitrary_tables_never_panics(bs in any::<u64>(), size in any::<u64>(), bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = BlockSums::decode_sums(bs, size, &bytes);
        }
    }
}
