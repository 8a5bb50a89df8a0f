//! Compress: values are stored in memcached compressed (LZ4) and read back as the client wrote
//! them. A flag bit marks a compressed value, so values written without this plugin, or too
//! small or too random to gain, are read exactly as they are.
//!
//! ```yaml
//! config: { min_size: 256, flag: 1073741824 }   # defaults: 256 bytes, flag bit 2^30
//! ```
//!
//! `append` and `prepend` (and `ms` in those modes) are refused: they would add raw bytes to a
//! compressed value.

use walnut_sdk::{Filter, McVerdict, StoreMode, Value};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compress {
    /// Values shorter than this are stored as they are.
    #[serde(default = "min_size")]
    min_size: usize,
    /// The flag bit that marks a compressed value; clients must not use it themselves.
    #[serde(default = "flag")]
    flag: u32,
    /// The largest value a compressed one may claim to hold (a bound on what reading it costs).
    #[serde(default = "max_size")]
    max_size: usize,
}

fn min_size() -> usize {
    256
}

fn flag() -> u32 {
    1 << 30
}

fn max_size() -> usize {
    64 << 20
}

impl Filter for Compress {
    fn init(&mut self) -> Result<(), String> {
        if self.flag.count_ones() != 1 {
            return Err(format!("flag {} is not a single bit", self.flag));
        }
        Ok(())
    }

    fn on_store(&mut self, value: &mut Value) -> McVerdict {
        if matches!(value.mode(), Some(StoreMode::Append | StoreMode::Prepend)) {
            return McVerdict::reject(format!(
                "{} that appends or prepends is refused: values are stored compressed",
                value.command()
            ));
        }
        if value.flags() & self.flag != 0 {
            return McVerdict::reject(format!(
                "flag bit {} is reserved for compressed values",
                self.flag
            ));
        }
        if value.data().len() < self.min_size {
            return McVerdict::Continue;
        }
        let packed = lz4_flex::compress_prepend_size(value.data());
        if packed.len() < value.data().len() {
            let flags = value.flags() | self.flag;
            value.set_data(packed);
            value.set_flags(flags);
        }
        McVerdict::Continue
    }

    fn on_value(&mut self, value: &mut Value) {
        if value.flags() & self.flag == 0 {
            return;
        }
        let data = value.data();
        let claimed = data.get(..4).map_or(usize::MAX, |n| {
            u32::from_le_bytes([n[0], n[1], n[2], n[3]]) as usize
        });
        assert!(
            claimed <= self.max_size,
            "a compressed value claims {claimed} bytes, more than max_size"
        );
        let plain = lz4_flex::decompress_size_prepended(data)
            .unwrap_or_else(|e| panic!("a value marked compressed does not decompress: {e}"));
        let flags = value.flags() & !self.flag;
        value.set_data(plain);
        value.set_flags(flags);
    }
}

walnut_sdk::export!(Compress);

#[cfg(test)]
mod tests {
    use super::*;
    use walnut_sdk::Command;

    fn plugin() -> Compress {
        serde_json::from_str("{}").unwrap()
    }

    #[test]
    fn compressible_values_round_trip_marked() {
        let mut p = plugin();
        let text = "walnut ".repeat(1000);
        let mut v = Value::new(Command::Set, "k", 7, text.clone());
        assert_eq!(p.on_store(&mut v), McVerdict::Continue);
        assert!(v.data().len() < text.len() / 10, "stored smaller");
        assert_eq!(v.flags(), 7 | 1 << 30);
        let mut read = Value::new(Command::Get, "k", v.flags(), v.data().to_vec());
        p.on_value(&mut read);
        assert_eq!((read.flags(), read.data()), (7, text.as_bytes()));
    }

    #[test]
    fn small_random_and_foreign_values_pass_as_they_are() {
        let mut p = plugin();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let random: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for data in [b"short".to_vec(), random] {
            let mut v = Value::new(Command::Set, "k", 0, data.clone());
            assert_eq!(p.on_store(&mut v), McVerdict::Continue);
            assert!(!v.is_changed());
        }
        // A value written without the plugin reads as it is.
        let mut read = Value::new(Command::Get, "k", 3, b"plain".to_vec());
        p.on_value(&mut read);
        assert!(!read.is_changed());
    }

    #[test]
    fn append_and_the_reserved_bit_are_refused() {
        let mut p = plugin();
        let mut v = Value::new(Command::Append, "k", 0, b"more".to_vec());
        assert!(matches!(p.on_store(&mut v), McVerdict::Reject(_)));
        let mut v = Value::new(Command::MetaSet, "k", 0, b"more".to_vec()).with_meta_flags("MP");
        assert!(matches!(p.on_store(&mut v), McVerdict::Reject(_)));
        let mut v = Value::new(Command::Set, "k", 1 << 30, b"x".to_vec());
        assert!(matches!(p.on_store(&mut v), McVerdict::Reject(_)));
        let bad: Result<Compress, _> = serde_json::from_str(r#"{"flag": 3}"#);
        assert!(bad.unwrap().init().is_err());
    }
}
