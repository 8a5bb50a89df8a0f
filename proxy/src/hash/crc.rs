//! The CRC hashes: crc16 (XMODEM, never cut to 16 bits), crc32 (libmemcached's 15-bit cut), crc32a.

/// Reflected CRC-32 table (polynomial 0xEDB88320), built at compile time.
const CRC32_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
            bit += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-16/XMODEM table (polynomial 0x1021, most significant bit first).
const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 0x8000 != 0 {
                (c << 1) ^ 0x1021
            } else {
                c << 1
            };
            bit += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// Standard CRC-32 (IEEE, reflected, inverted in and out).
fn crc32_full(key: &[u8]) -> u32 {
    !key.iter().fold(u32::MAX, |crc, &b| {
        (crc >> 8) ^ CRC32_TABLE[((crc ^ u32::from(b)) & 0xff) as usize]
    })
}

/// twemproxy's `crc32`: libmemcached compatibility keeps only 15 bits of the upper half.
pub fn crc32(key: &[u8]) -> u32 {
    (crc32_full(key) >> 16) & 0x7fff
}

/// twemproxy's `crc32a`: the whole CRC-32.
pub fn crc32a(key: &[u8]) -> u32 {
    crc32_full(key)
}

/// twemproxy's `crc16`: CRC-16/XMODEM run in a 32-bit register that is never masked, so the
/// bytes shifted past bit 15 stay in the result. The low 16 bits are the true XMODEM CRC.
pub fn crc16(key: &[u8]) -> u32 {
    key.iter().fold(0u32, |crc, &b| {
        (crc << 8) ^ u32::from(CRC16_TABLE[((crc >> 8) ^ u32::from(b)) as usize & 0xff])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_check_values() {
        // The catalogue check values for "123456789".
        assert_eq!(crc32a(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc16(b"123456789") & 0xffff, 0x31C3);
        // Two bytes never reach past bit 23, so the register's upper byte is still clear.
        assert_eq!(crc16(b"12") >> 24, 0);
        assert_eq!(crc32(b"123456789"), (0xCBF4_3926 >> 16) & 0x7fff);
    }
}
