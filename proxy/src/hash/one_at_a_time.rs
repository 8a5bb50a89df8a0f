//! Jenkins' one-at-a-time hash, key bytes read as signed `char` like twemproxy does.

pub fn one_at_a_time(key: &[u8]) -> u32 {
    let mut v = key.iter().fold(0u32, |mut v, &b| {
        v = v.wrapping_add(b as i8 as u32);
        v = v.wrapping_add(v << 10);
        v ^ (v >> 6)
    });
    v = v.wrapping_add(v << 3);
    v ^= v >> 11;
    v.wrapping_add(v << 15)
}
