//! ISO-8601 times of the common shape `YYYY-MM-DD[T| ]HH:MM:SS[.fraction][Z]`, read directly:
//! the one-pass JSON decoder's timestamp columns and the engine's event-time column from text
//! both read them here, and give every other shape to arrow's general parser.
//!
//! ```sql
//! -- {"bidder": 7, "date_time": "2026-12-07T21:14:35.075"} read into a TIMESTAMP column
//! CREATE STREAM q11 AS SELECT bidder, COUNT(*) FROM bid GROUP BY SESSION(date_time, INTERVAL '10' SECOND), bidder …
//! ```
//!
//! A stream's times mostly share their minute with the time before: the date, hour and minute
//! (`YYYY-MM-DD HH:MM:`) are read once and reused while the next time starts with the same
//! bytes, and only the seconds and the fraction are read (arrow's `string_to_datetime` and
//! chrono's calendar took 12–14% of the CPU of a Nexmark query reading `date_time` from JSON
//! Lines). What this reads, it reads as arrow does (tested against it); what it declines,
//! the caller reads with arrow's parser, so the results are always arrow's.

use arrow::array::{Array, AsArray, PrimitiveArray};
use arrow::datatypes::{ArrowPrimitiveType, DataType, TimeUnit};

/// Bytes of `YYYY-MM-DD HH:MM:`.
const MINUTE_PREFIX: usize = 17;

/// Reads times, remembering the minute of the last one read.
#[derive(Debug, Default, Clone)]
pub struct IsoTimes {
    /// the last minute read: its first 16 bytes (`YYYY-MM-DD HH:MM`) and its seconds since
    /// the epoch
    minute: Option<([u8; 16], i64)>,
}

impl IsoTimes {
    /// `b` as seconds since the epoch and nanoseconds within the second (UTC, as arrow reads
    /// a time without a zone); `None` for any other shape, an invalid date included.
    #[inline]
    pub fn read(&mut self, b: &[u8]) -> Option<(i64, u32)> {
        let (prefix, rest) = b.split_at_checked(MINUTE_PREFIX)?;
        let (key, colon) = prefix.split_at(16);
        let base = match &self.minute {
            Some((k, secs)) if k.as_slice() == key && colon == b":" => *secs,
            _ => {
                let secs = minute_seconds(prefix)?;
                self.minute = Some((key.try_into().ok()?, secs));
                secs
            }
        };
        let (ss, nanos) = second_nanos(rest)?;
        Some((base + ss, nanos))
    }

    /// `b` in `unit` since the epoch, as arrow's `string_to_datetime` and chrono's
    /// `timestamp_*` give it (a fraction finer than the unit truncated); `None` for any other
    /// shape, or out of the unit's range.
    #[inline]
    pub fn read_in(&mut self, b: &[u8], unit: TimeUnit) -> Option<i64> {
        let (secs, nanos) = self.read(b)?;
        in_unit(secs, nanos, unit)
    }
}

/// Every string of a text column (`Utf8`, `LargeUtf8` or views) in `unit` since the epoch, as
/// an array of `T` (an event time's `Int64`, a timestamp's own type), NULL kept; `None` when
/// the column is not text, or as soon as one string is of another shape or out of the unit's
/// range: the caller then casts the whole column with arrow's parser, so the results are
/// always arrow's.
pub fn read_text_column<T: ArrowPrimitiveType<Native = i64>>(array: &dyn Array, unit: TimeUnit) -> Option<PrimitiveArray<T>> {
    fn read<'a, T: ArrowPrimitiveType<Native = i64>>(values: impl Iterator<Item = Option<&'a str>>, unit: TimeUnit) -> Option<PrimitiveArray<T>> {
        let mut times = IsoTimes::default();
        let mut out = PrimitiveArray::<T>::builder(values.size_hint().0);
        for v in values {
            match v {
                Some(s) => out.append_value(times.read_in(s.as_bytes(), unit)?),
                None => out.append_null(),
            }
        }
        Some(out.finish())
    }
    match array.data_type() {
        DataType::Utf8 => read(array.as_string::<i32>().iter(), unit),
        DataType::LargeUtf8 => read(array.as_string::<i64>().iter(), unit),
        DataType::Utf8View => read(array.as_string_view().iter(), unit),
        _ => None,
    }
}

/// Seconds and nanoseconds as a count of `unit`: the fraction finer than the unit truncated
/// (the seconds are floored, the nanoseconds never negative); `None` beyond i64.
#[inline]
pub fn in_unit(secs: i64, nanos: u32, unit: TimeUnit) -> Option<i64> {
    let (per_second, nanos_per) = match unit {
        TimeUnit::Second => return Some(secs),
        TimeUnit::Millisecond => (1_000, 1_000_000),
        TimeUnit::Microsecond => (1_000_000, 1_000),
        TimeUnit::Nanosecond => (1_000_000_000, 1),
    };
    let within = i64::from(nanos / nanos_per);
    if secs < 0 && within > 0 {
        // (as chrono counts: the least instant in nanoseconds has its second just below i64)
        (secs + 1).checked_mul(per_second)?.checked_add(within - per_second)
    } else {
        secs.checked_mul(per_second)?.checked_add(within)
    }
}

/// Two ASCII digits at `i` as a number.
#[inline(always)]
fn two(b: &[u8], i: usize) -> Option<i64> {
    let (hi, lo) = (b.get(i)?.wrapping_sub(b'0'), b.get(i + 1)?.wrapping_sub(b'0'));
    // (computed only for digits: `then_some` would multiply any byte, and overflow)
    (hi < 10 && lo < 10).then(|| i64::from(hi) * 10 + i64::from(lo))
}

/// `YYYY-MM-DD[T| ]HH:MM:` (17 bytes) as seconds since the epoch; `None` for anything else,
/// an invalid date included.
fn minute_seconds(b: &[u8]) -> Option<i64> {
    if b.len() != MINUTE_PREFIX || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let y = two(b, 0)? * 100 + two(b, 2)?;
    let (m, d) = (two(b, 5)?, two(b, 8)?);
    let (hh, mm) = (two(b, 11)?, two(b, 14)?);
    let month_days = match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => return None,
    };
    if d < 1 || d > month_days || hh > 23 || mm > 59 {
        return None;
    }
    // days from the civil date (Howard Hinnant's algorithm)
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3_600 + mm * 60)
}

/// What follows the minute, `SS[.f…][Z]` (1–9 digits of fraction), as seconds and
/// nanoseconds; `None` for anything else.
#[inline]
fn second_nanos(b: &[u8]) -> Option<(i64, u32)> {
    let ss = two(b, 0)?;
    if ss > 59 {
        return None;
    }
    let mut rest = &b[2..];
    let mut nanos = 0u32;
    if let Some((b'.', digits)) = rest.split_first() {
        let n = digits.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 || n > 9 {
            return None;
        }
        nanos = digits[..n].iter().fold(0u32, |acc, c| acc * 10 + u32::from(c - b'0')) * 10u32.pow(9 - n as u32);
        rest = &digits[n..];
    }
    if !(rest.is_empty() || rest == b"Z") {
        return None;
    }
    Some((ss, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Arrow's reading of `s` in `unit` (as the JSON decoders read a timestamp field).
    fn arrow(s: &str, unit: TimeUnit) -> Option<i64> {
        let t = arrow::compute::kernels::cast_utils::string_to_datetime(&chrono::Utc, s).ok()?;
        match unit {
            TimeUnit::Second => Some(t.timestamp()),
            TimeUnit::Millisecond => Some(t.timestamp_millis()),
            TimeUnit::Microsecond => Some(t.timestamp_micros()),
            TimeUnit::Nanosecond => t.timestamp_nanos_opt(),
        }
    }

    /// Random times across leap years, centuries, dates before 1970, invalid dates, fractions
    /// of every length and the separators and zone read; each one alone and in runs sharing
    /// a minute (read from the memory) gives arrow's answer in every unit, or is declined.
    #[test]
    fn reads_as_arrow_does_or_declines() {
        let mut strings = vec![
            "2026-12-07T21:14:35.075".to_string(),
            "2026-11-27 03:37:57".into(),
            "1969-12-31T23:59:59.999Z".into(),
            "1900-02-28T12:00:00.5".into(),
            "2000-02-29T00:00:00.123456789".into(),
            "0001-01-01T00:00:00".into(),
            "0000-01-01T00:00:00".into(),
            "9999-12-31T23:59:59.999".into(),
            "2262-04-11T23:47:16.854775807".into(),
            "2262-04-11T23:47:16.854775808".into(),
            "1677-09-21T00:12:43.145224192".into(),
            "1677-09-21T00:12:43.145224191".into(),
        ];
        let mut seed = 11u64;
        for _ in 0..30_000 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let r = seed >> 16;
            let sep = ['T', ' ', 't', '_'][(r % 4) as usize];
            let frac = ["", ".1", ".12", ".123", ".1234", ".000001", ".123456789", ".1234567891", "."][((r >> 3) % 9) as usize];
            let zone = ["", "", "Z", "z", "+01:00", " "][((r >> 7) % 6) as usize];
            strings.push(format!(
                "{:04}-{:02}-{:02}{sep}{:02}:{:02}:{:02}{frac}{zone}",
                r % 10_000,
                (r >> 12) % 14,
                (r >> 16) % 33,
                (r >> 21) % 25,
                (r >> 26) % 61,
                (r >> 32) % 61
            ));
        }
        let units = [TimeUnit::Second, TimeUnit::Millisecond, TimeUnit::Microsecond, TimeUnit::Nanosecond];
        let mut read = 0;
        for s in &strings {
            let fast = IsoTimes::default().read(s.as_bytes());
            read += usize::from(fast.is_some());
            for unit in units {
                if let Some(v) = fast.and_then(|(secs, nanos)| in_unit(secs, nanos, unit)) {
                    assert_eq!(Some(v), arrow(s, unit), "{s} in {unit:?}");
                } else if fast.is_some() {
                    assert_eq!(None, arrow(s, unit), "{s} in {unit:?}: out of range, for arrow too");
                }
            }
        }
        assert!(read > 3_000, "the common shape is read: {read} of {}", strings.len());
        // in runs sharing a minute, one reader for them all: the memory gives the same answers
        let mut times = IsoTimes::default();
        for s in strings.iter().filter(|s| s.len() >= MINUTE_PREFIX && s.is_char_boundary(MINUTE_PREFIX)) {
            for tail in ["00", "59.999", "07.5Z", "07.123456789", "01", "60", "5", "07.", "07+01:00", "07.1234567890", "", "07Z "] {
                let t = format!("{}{tail}", &s[..MINUTE_PREFIX]);
                let fast = times.read(t.as_bytes());
                assert_eq!(fast, IsoTimes::default().read(t.as_bytes()), "{t} after {s}");
                if let Some((secs, nanos)) = fast {
                    assert_eq!(in_unit(secs, nanos, TimeUnit::Microsecond), arrow(&t, TimeUnit::Microsecond), "{t}");
                }
            }
        }
        // anything but a digit where one belongs, in every place of a time: declined
        // (by arrow too), with no overflow on the way
        let time = b"2026-12-07T21:14:35.075";
        for at in [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 22] {
            for c in [b'x', b'-', b' ', b'/', b':', 0xff, b'J', b'~', 0] {
                let mut t = time.to_vec();
                t[at] = c;
                let fast = IsoTimes::default().read(&t);
                assert_eq!(fast, None, "{}", String::from_utf8_lossy(&t));
            }
        }
        assert_eq!(IsoTimes::default().read(b"yyyy-mm-dd hh:mm:ss"), None);
        // a minute that differs from the one remembered only in its colon is read afresh
        let mut times = IsoTimes::default();
        assert!(times.read(b"2026-12-07T21:14:35").is_some());
        assert_eq!(times.read(b"2026-12-07T21:14-35"), None);
    }
}
