//! The four FNV hashes as twemproxy computes them: bytes sign-extended, 64-bit variants cut to 32 bits.

const FNV_64_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_64_PRIME: u64 = 0x0000_0100_0000_01b3;
const FNV_32_OFFSET: u32 = 2_166_136_261;
const FNV_32_PRIME: u32 = 16_777_619;

/// A key byte as twemproxy sees it: a signed `char` widened to 32 bits.
fn signed(b: u8) -> u32 {
    b as i8 as u32
}

/// `fnv1_64`: twemproxy returns the low 32 bits, and those depend only on the low 32 bits of
/// state, prime and (sign-extended) byte, so 32-bit arithmetic gives the same answer.
pub fn fnv1_64(key: &[u8]) -> u32 {
    key.iter().fold(FNV_64_OFFSET as u32, |h, &b| {
        h.wrapping_mul(FNV_64_PRIME as u32) ^ signed(b)
    })
}

/// `fnv1a_64`: twemproxy keeps the state in 32 bits from the start.
pub fn fnv1a_64(key: &[u8]) -> u32 {
    key.iter().fold(FNV_64_OFFSET as u32, |h, &b| {
        (h ^ signed(b)).wrapping_mul(FNV_64_PRIME as u32)
    })
}

pub fn fnv1_32(key: &[u8]) -> u32 {
    key.iter().fold(FNV_32_OFFSET, |h, &b| {
        h.wrapping_mul(FNV_32_PRIME) ^ signed(b)
    })
}

pub fn fnv1a_32(key: &[u8]) -> u32 {
    key.iter().fold(FNV_32_OFFSET, |h, &b| {
        (h ^ signed(b)).wrapping_mul(FNV_32_PRIME)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_matches_reference_fnv() {
        // Published FNV-1/FNV-1a 32-bit test values.
        assert_eq!(fnv1_32(b"a"), 0x050c_5d7e);
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a_32(b"foobar"), 0xbf9c_f968);
        // Low halves of the published 64-bit values.
        assert_eq!(fnv1_64(b"a"), 0xaf63_bd4c_8601_b7be_u64 as u32);
    }

    #[test]
    fn high_bytes_are_sign_extended() {
        let expected = (FNV_32_OFFSET ^ 0xffff_ff80).wrapping_mul(FNV_32_PRIME);
        assert_eq!(fnv1a_32(&[0x80]), expected);
    }
}
