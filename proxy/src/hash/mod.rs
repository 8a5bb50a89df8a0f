//! The twelve key hashes of twemproxy, bit for bit (signed-char quirks included).

mod crc;
mod fnv;
mod hsieh;
mod jenkins;
pub(crate) mod md5;
mod murmur;
mod one_at_a_time;

/// A key hash, named as in `nutcracker.yml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HashKind {
    OneAtATime,
    Md5,
    Crc16,
    Crc32,
    Crc32a,
    Fnv1_64,
    #[default]
    Fnv1a64,
    Fnv1_32,
    Fnv1a32,
    Hsieh,
    Murmur,
    Jenkins,
}

impl HashKind {
    /// Every hash with its config name, in twemproxy's order.
    pub const ALL: [(&'static str, HashKind); 12] = [
        ("one_at_a_time", HashKind::OneAtATime),
        ("md5", HashKind::Md5),
        ("crc16", HashKind::Crc16),
        ("crc32", HashKind::Crc32),
        ("crc32a", HashKind::Crc32a),
        ("fnv1_64", HashKind::Fnv1_64),
        ("fnv1a_64", HashKind::Fnv1a64),
        ("fnv1_32", HashKind::Fnv1_32),
        ("fnv1a_32", HashKind::Fnv1a32),
        ("hsieh", HashKind::Hsieh),
        ("murmur", HashKind::Murmur),
        ("jenkins", HashKind::Jenkins),
    ];

    /// The hash named `name` in a config file.
    pub fn from_name(name: &str) -> Option<HashKind> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, h)| *h)
    }

    /// The config name of this hash.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, h)| *h == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }

    /// The 32-bit hash twemproxy computes for `key`.
    pub fn hash(self, key: &[u8]) -> u32 {
        match self {
            HashKind::OneAtATime => one_at_a_time::one_at_a_time(key),
            HashKind::Md5 => md5::md5(key),
            HashKind::Crc16 => crc::crc16(key),
            HashKind::Crc32 => crc::crc32(key),
            HashKind::Crc32a => crc::crc32a(key),
            HashKind::Fnv1_64 => fnv::fnv1_64(key),
            HashKind::Fnv1a64 => fnv::fnv1a_64(key),
            HashKind::Fnv1_32 => fnv::fnv1_32(key),
            HashKind::Fnv1a32 => fnv::fnv1a_32(key),
            HashKind::Hsieh => hsieh::hsieh(key),
            HashKind::Murmur => murmur::murmur(key),
            HashKind::Jenkins => jenkins::jenkins(key),
        }
    }
}
