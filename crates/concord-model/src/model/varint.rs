//! LEB128 varints and zigzag, the integer encodings of the canonical and clock formats.

/// Appends `v` as unsigned LEB128.
#[inline]
pub fn put_u64(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends `v` as unsigned LEB128 (128-bit).
#[inline]
pub fn put_u128(out: &mut Vec<u8>, mut v: u128) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[inline]
pub fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
pub fn unzigzag64(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[inline]
pub fn zigzag128(v: i128) -> u128 {
    ((v << 1) ^ (v >> 127)) as u128
}

#[inline]
pub fn unzigzag128(v: u128) -> i128 {
    ((v >> 1) as i128) ^ -((v & 1) as i128)
}

/// Why a varint could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarintError {
    /// The input ended inside the varint.
    Truncated,
    /// More bits than the target type holds, or a non-minimal encoding (trailing zero byte).
    Overlong,
}

/// Reads an unsigned LEB128 of at most `max_bits` bits, rejecting non-minimal encodings so that
/// every value has exactly one encoding (needed for a canonical format).
#[inline]
pub fn get_u128(input: &[u8], pos: &mut usize, max_bits: u32) -> Result<u128, VarintError> {
    let mut result: u128 = 0;
    let mut shift: u32 = 0;
    loop {
        let Some(&byte) = input.get(*pos) else {
            return Err(VarintError::Truncated);
        };
        *pos += 1;
        let low = (byte & 0x7f) as u128;
        if shift >= max_bits || (max_bits - shift < 7 && (low >> (max_bits - shift)) != 0) {
            return Err(VarintError::Overlong);
        }
        let part = low << shift;
        result |= part;
        if byte & 0x80 == 0 {
            if byte == 0 && shift > 0 {
                return Err(VarintError::Overlong);
            }
            return Ok(result);
        }
        shift += 7;
    }
}

#[inline]
pub fn get_u64(input: &[u8], pos: &mut usize) -> Result<u64, VarintError> {
    get_u128(input, pos, 64).map(|v| v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_edges() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut b = Vec::new();
            put_u64(&mut b, v);
            let mut p = 0;
            assert_eq!(get_u64(&b, &mut p), Ok(v));
            assert_eq!(p, b.len());
        }
        for v in [i128::MIN, -1, 0, 1, i128::MAX] {
            let mut b = Vec::new();
            put_u128(&mut b, zigzag128(v));
            let mut p = 0;
            assert_eq!(unzigzag128(get_u128(&b, &mut p, 128).unwrap()), v);
        }
        for v in [i64::MIN, -1, 0, 1, i64::MAX] {
            assert_eq!(unzigzag64(zigzag64(v)), v);
        }
    }

    #[test]
    fn rejects_overlong_and_truncated() {
        let mut p = 0;
        assert_eq!(get_u64(&[0x80, 0x00], &mut p), Err(VarintError::Overlong));
        let mut p = 0;
        assert_eq!(get_u64(&[0x80], &mut p), Err(VarintError::Truncated));
        let mut p = 0;
        let too_big = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert_eq!(get_u64(&too_big, &mut p), Err(VarintError::Overlong));
        let mut p = 0;
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(get_u64(&max, &mut p), Ok(u64::MAX));
    }
}
