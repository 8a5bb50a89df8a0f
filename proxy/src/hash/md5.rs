//! MD5 digests read as four little-endian words: the `md5` key hash and the ketama points.

use ::md5::{Digest, Md5};

/// The digest of `data` as four little-endian 32-bit words, in digest order.
pub fn words(data: &[u8]) -> [u32; 4] {
    let d: [u8; 16] = Md5::digest(data).into();
    std::array::from_fn(|i| {
        u32::from_le_bytes([d[4 * i], d[4 * i + 1], d[4 * i + 2], d[4 * i + 3]])
    })
}

/// twemproxy's `md5` key hash: the first digest word.
pub fn md5(key: &[u8]) -> u32 {
    words(key)[0]
}
