//! The `Date` header (RFC 9110 6.6.1, IMF-fixdate) and the access log's time, each formatted
//! once a second per thread: a request costs a clock read and a copy.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

/// `Sun, 06 Nov 1994 08:49:37 GMT`
const LEN: usize = 29;

/// `02/Dec/2026:18:55:01 +0000`
const LOG_LEN: usize = 26;

thread_local! {
    static CACHE: Cell<(u64, [u8; LEN])> = const { Cell::new((u64::MAX, [0; LEN])) };
    static LOG_CACHE: Cell<(u64, [u8; LOG_LEN])> = const { Cell::new((u64::MAX, [0; LOG_LEN])) };
}

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Appends the time now as nginx's `$time_local` writes it, in UTC: `02/Dec/2026:18:55:01
/// +0000`.
pub fn put_log_time(out: &mut Vec<u8>) {
    let secs = now_secs();
    let text = LOG_CACHE.with(|c| {
        let (at, text) = c.get();
        if at == secs {
            return text;
        }
        let text = log_time(secs);
        c.set((secs, text));
        text
    });
    out.extend_from_slice(&text);
}

/// `secs` since the epoch as `02/Dec/2026:18:55:01 +0000`.
fn log_time(secs: u64) -> [u8; LOG_LEN] {
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    let mut t = *b"00/Mon/0000:00:00:00 +0000";
    two(&mut t[0..2], day);
    t[3..6].copy_from_slice(MONTHS[month as usize - 1]);
    let y = year as u32;
    two(&mut t[7..9], y / 100);
    two(&mut t[9..11], y % 100);
    two(&mut t[12..14], (rem / 3600) as u32);
    two(&mut t[15..17], (rem / 60 % 60) as u32);
    two(&mut t[18..20], (rem % 60) as u32);
    t
}

/// Appends `Date: <now>\r\n`.
pub fn put_date(out: &mut Vec<u8>) {
    let secs = now_secs();
    let text = CACHE.with(|c| {
        let (at, text) = c.get();
        if at == secs {
            return text;
        }
        let text = imf_fixdate(secs);
        c.set((secs, text));
        text
    });
    out.extend_from_slice(b"Date: ");
    out.extend_from_slice(&text);
    out.extend_from_slice(b"\r\n");
}

/// `secs` since the epoch as an IMF-fixdate.
fn imf_fixdate(secs: u64) -> [u8; LEN] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    let mut t = [b' '; LEN];
    t[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    t[3] = b',';
    two(&mut t[5..7], day);
    t[8..11].copy_from_slice(MONTHS[month as usize - 1]);
    let y = year as u32;
    two(&mut t[12..14], y / 100);
    two(&mut t[14..16], y % 100);
    two(&mut t[17..19], (rem / 3600) as u32);
    t[19] = b':';
    two(&mut t[20..22], (rem / 60 % 60) as u32);
    t[22] = b':';
    two(&mut t[23..25], (rem % 60) as u32);
    t[26..29].copy_from_slice(b"GMT");
    t
}

fn two(out: &mut [u8], n: u32) {
    out[0] = b'0' + (n / 10 % 10) as u8;
    out[1] = b'0' + (n % 10) as u8;
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(&imf_fixdate(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&imf_fixdate(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(&imf_fixdate(951_782_400), b"Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(
            &imf_fixdate(1_798_761_599),
            b"Thu, 31 Dec 2026 23:59:59 GMT"
        );
    }

    #[test]
    fn log_times_as_nginx_writes_them() {
        assert_eq!(&log_time(784_111_777), b"06/Nov/1994:08:49:37 +0000");
        assert_eq!(&log_time(1_798_761_599), b"31/Dec/2026:23:59:59 +0000");
    }

    #[test]
    fn the_header_line_is_whole() {
        let mut out = Vec::new();
        put_date(&mut out);
        assert!(
            out.starts_with(b"Date: ") && out.ends_with(b" GMT\r\n"),
            "{out:?}"
        );
        assert_eq!(out.len(), 6 + LEN + 2);
    }
}
