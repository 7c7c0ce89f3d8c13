//! The CRC32C of any byte range of a buffer in near-constant time, so that recovery can test
//! every offset of a damaged segment for a valid record in time linear in the segment's size.
//!
//! Looking for records byte by byte after damage (see `format::valid_frames_after`) reads, at
//! each offset, a length and checks that many bytes: with values crafted so that every offset
//! holds a plausible length (values are clients' data), that is quadratic, and a 64 MiB segment
//! took days to open. Here the checksum of `data[s..e]` comes from two prefix checksums instead:
//! CRC is linear, so `crc(A || B) = shift(crc(A), |B|) ^ crc(B)` (what zlib's `crc32_combine`
//! computes), where `shift(c, n)` is the effect of `n` zero bytes on `c`, a 32x32 matrix over
//! GF(2). The matrices for 2^k zero bytes are computed once and kept as byte-indexed tables, so
//! a shift costs four lookups per set bit of `n`.

/// Prefix checksums are kept for every this many bytes (the rest is computed on demand).
const STRIDE: usize = 64;

/// CRC-32C (Castagnoli), reflected.
const POLY: u32 = 0x82F6_3B78;

/// The effect of 2^k zero bytes on a checksum, for k = 0..48, as four tables of 256 entries
/// (one per byte of the checksum).
struct ShiftTables(Vec<[[u32; 256]; 4]>);

/// A 32x32 matrix over GF(2): column i is the image of bit i.
type Matrix = [u32; 32];

fn times(matrix: &Matrix, mut vector: u32) -> u32 {
    let mut sum = 0;
    let mut i = 0;
    while vector != 0 {
        if vector & 1 != 0 {
            sum ^= matrix[i];
        }
        vector >>= 1;
        i += 1;
    }
    sum
}

fn square(matrix: &Matrix) -> Matrix {
    let mut out = [0; 32];
    for (i, column) in out.iter_mut().enumerate() {
        *column = times(matrix, matrix[i]);
    }
    out
}

impl ShiftTables {
    fn new() -> ShiftTables {
        // One zero bit, then doubled to one zero byte.
        let mut one_bit: Matrix = [0; 32];
        one_bit[0] = POLY;
        for (i, column) in one_bit.iter_mut().enumerate().skip(1) {
            *column = 1 << (i - 1);
        }
        let mut matrix = square(&square(&square(&one_bit)));
        let mut tables = Vec::with_capacity(48);
        for _ in 0..48 {
            let mut table = [[0u32; 256]; 4];
            for (byte, sub) in table.iter_mut().enumerate() {
                for (value, entry) in sub.iter_mut().enumerate() {
                    *entry = times(&matrix, (value as u32) << (8 * byte));
                }
            }
            tables.push(table);
            matrix = square(&matrix);
        }
        ShiftTables(tables)
    }

    /// `crc` followed by `zeros` zero bytes, in the raw (linear) sense that
    /// `crc(A || B) = shift(crc(A), |B|) ^ crc(B)`.
    fn shift(&self, mut crc: u32, zeros: usize) -> u32 {
        let mut k = 0;
        let mut n = zeros;
        while n != 0 {
            if n & 1 != 0 {
                let t = &self.0[k];
                crc = t[0][(crc & 0xff) as usize]
                    ^ t[1][((crc >> 8) & 0xff) as usize]
                    ^ t[2][((crc >> 16) & 0xff) as usize]
                    ^ t[3][(crc >> 24) as usize];
            }
            n >>= 1;
            k += 1;
        }
        crc
    }
}

fn tables() -> &'static ShiftTables {
    static TABLES: std::sync::OnceLock<ShiftTables> = std::sync::OnceLock::new();
    TABLES.get_or_init(ShiftTables::new)
}

/// Checksums of every range of one buffer.
pub(crate) struct CrcIndex<'a> {
    data: &'a [u8],
    /// `crc32c(data[..i * STRIDE])` for every `i`.
    prefix: Vec<u32>,
    tables: &'static ShiftTables,
}

impl<'a> CrcIndex<'a> {
    /// Indexes `data`: one pass over it.
    pub(crate) fn new(data: &'a [u8]) -> CrcIndex<'a> {
        let mut prefix = Vec::with_capacity(data.len() / STRIDE + 1);
        let mut crc = 0;
        prefix.push(crc);
        for chunk in data.chunks_exact(STRIDE) {
            crc = crc32c::crc32c_append(crc, chunk);
            prefix.push(crc);
        }
        CrcIndex {
            data,
            prefix,
            tables: tables(),
        }
    }

    /// `crc32c(data[..end])`.
    fn prefix(&self, end: usize) -> u32 {
        let stride = end / STRIDE;
        crc32c::crc32c_append(self.prefix[stride], &self.data[stride * STRIDE..end])
    }

    /// `crc32c(data[start..end])`, in time independent of the range's length (but for at most
    /// 2 x 64 bytes hashed and a few lookups per bit of it).
    pub(crate) fn range(&self, start: usize, end: usize) -> u32 {
        assert!(start <= end && end <= self.data.len(), "{start}..{end}");
        let whole = self.prefix(end);
        let head = self.prefix(start);
        whole ^ self.tables.shift(head, end - start)
    }

    /// `crc32c_append(seed, data[start..end])`: the checksum of some bytes before the range
    /// (whose checksum is `seed`) followed by it.
    pub(crate) fn append(&self, seed: u32, start: usize, end: usize) -> u32 {
        self.tables.shift(seed, end - start) ^ self.range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn ranges_and_appends_match_a_direct_checksum(
            data in proptest::collection::vec(any::<u8>(), 0..700),
            a in any::<prop::sample::Index>(),
            b in any::<prop::sample::Index>(),
            seed in any::<u32>(),
        ) {
            let index = CrcIndex::new(&data);
            let (x, y) = (a.index(data.len() + 1), b.index(data.len() + 1));
            let (start, end) = (x.min(y), x.max(y));
            prop_assert_eq!(index.range(start, end), crc32c::crc32c(&data[start..end]));
            prop_assert_eq!(
                index.append(seed, start, end),
                crc32c::crc32c_append(seed, &data[start..end])
            );
        }
    }

    #[test]
    fn long_ranges_match_too() {
        let data: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let index = CrcIndex::new(&data);
        for (start, end) in [
            (0, 300_000),
            (1, 299_999),
            (12_345, 200_001),
            (65_536, 65_536 + 131_072),
        ] {
            assert_eq!(index.range(start, end), crc32c::crc32c(&data[start..end]));
        }
    }
}
