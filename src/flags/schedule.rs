//! The schedule actions' clock: time zones, `HH:MM` times of day, Python's ISO 8601 datetimes
//! and day names, over `jiff` and its bundled time-zone database (a Lambda image may have none).
//!
//! Powertools compares *wall-clock* times: the current time in the condition's `TIMEZONE` and a
//! start and end read without an offset and given that same zone, so two instants an hour apart
//! in a DST fold compare as their local readings do. Here every comparison is between civil
//! (local) date-times in the zone, which is the same thing.

use std::time::SystemTime;

use jiff::civil::{DateTime, Weekday};
use jiff::tz::TimeZone;

/// The zone named `name`: an IANA name, spelt as the database spells it (`Europe/Paris`), as
/// `dateutil.tz.gettz` finds it on Linux. `None` or `""`: UTC.
pub(crate) fn zone(name: Option<&str>) -> Option<TimeZone> {
    match name {
        None | Some("") => Some(TimeZone::UTC),
        Some(name) => {
            // `gettz` tries the name, then with spaces as underscores (`America/New York`).
            let exact = |name: &str| {
                let tz = TimeZone::get(name).ok()?;
                // jiff looks names up regardless of case; the file system does not.
                (tz.iana_name() == Some(name)).then_some(tz)
            };
            exact(name).or_else(|| exact(&name.replace(' ', "_")))
        }
    }
}

/// The wall-clock time `now` reads in `tz`, to the microsecond (Python's resolution).
pub(crate) fn local(now: SystemTime, tz: &TimeZone) -> Option<DateTime> {
    let ts = jiff::Timestamp::try_from(now).ok()?;
    let dt = ts.to_zoned(tz.clone()).datetime();
    let micros = dt.subsec_nanosecond() / 1_000 * 1_000;
    dt.with().subsec_nanosecond(micros).build().ok()
}

/// `HH:MM` on a 24-hour clock, exactly (Powertools' `(?:2[0-3]|[01]\d):[0-5]\d`).
pub(crate) fn time_of_day(s: &str) -> Option<(i8, i8)> {
    let b = s.as_bytes();
    if b.len() != 5 || b[2] != b':' || !b.iter().enumerate().all(|(i, c)| i == 2 || c.is_ascii_digit()) {
        return None;
    }
    let (h, m) = (
        (b[0] - b'0') * 10 + (b[1] - b'0'),
        (b[3] - b'0') * 10 + (b[4] - b'0'),
    );
    (h <= 23 && m <= 59).then_some((h as i8, m as i8))
}

/// Whether `now` is within `start` to `end` (inclusive, to the minute); an `end` before `start`
/// crosses midnight.
pub(crate) fn in_time_range(now: DateTime, start: (i8, i8), end: (i8, i8)) -> bool {
    let at = (now.hour(), now.minute());
    if end < start {
        start <= at || at <= end
    } else {
        start <= at && at <= end
    }
}

/// The day's name, as Powertools writes it (`MONDAY`).
pub(crate) fn day_name(now: DateTime) -> &'static str {
    match now.weekday() {
        Weekday::Monday => "MONDAY",
        Weekday::Tuesday => "TUESDAY",
        Weekday::Wednesday => "WEDNESDAY",
        Weekday::Thursday => "THURSDAY",
        Weekday::Friday => "FRIDAY",
        Weekday::Saturday => "SATURDAY",
        Weekday::Sunday => "SUNDAY",
    }
}

/// Why a datetime was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Not an ISO 8601 datetime Python reads.
    Invalid,
    /// It has a UTC offset (the zone comes from `TIMEZONE` only).
    Offset,
}

/// A `SCHEDULE_BETWEEN_DATETIME_RANGE` bound: what Python 3.11's `datetime.fromisoformat`
/// reads, without an offset (Powertools validates `s.replace("Z", "+00:00")`, so a `Z` is an
/// offset too). The forms: a date `YYYY-MM-DD`, `YYYYMMDD`, `YYYY-Www[-D]` or `YYYYWww[D]`,
/// then optionally any one ASCII character and a time `HH[:MM[:SS[.f…]]]` (or without colons;
/// `,` for `.`; digits of the fraction past the sixth are dropped).
pub(crate) fn datetime(s: &str) -> Result<DateTime, Refused> {
    let b = s.as_bytes();
    // Python counts characters; every valid string is ASCII before its separator.
    if s.chars().count() < 7 {
        return Err(Refused::Invalid);
    }
    let sep = separator(b);
    let (year, month, day) = date(b, sep).ok_or(Refused::Invalid)?;
    let (mut hour, mut minute, mut second, mut micros) = (0, 0, 0, 0);
    if b.len() > sep {
        let t = &b[sep + 1..];
        if t.iter().any(|c| matches!(c, b'Z' | b'+' | b'-')) {
            // An offset (well formed or not, Powertools refuses it either way).
            return Err(
                if s.contains('Z')
                    || time(t.split(|c| matches!(c, b'Z' | b'+' | b'-')).next().unwrap_or(&[])).is_some()
                {
                    Refused::Offset
                } else {
                    Refused::Invalid
                },
            );
        }
        (hour, minute, second, micros) = time(t).ok_or(Refused::Invalid)?;
    }
    if !(1..=9999).contains(&year) {
        return Err(Refused::Invalid);
    }
    DateTime::new(year, month, day, hour, minute, second, micros * 1_000).map_err(|_| Refused::Invalid)
}

/// Where the date ends (CPython's `_find_isoformat_datetime_separator`).
fn separator(b: &[u8]) -> usize {
    let at = |i: usize| b.get(i).copied().unwrap_or(0);
    if b.len() == 7 {
        return 7;
    }
    if at(4) == b'-' {
        if at(5) == b'W' {
            if b.len() > 8 && at(8) == b'-' {
                if b.len() == 9 {
                    return usize::MAX;
                }
                if b.len() > 10 && at(10).is_ascii_digit() {
                    return 8;
                }
                return 10;
            }
            return 8;
        }
        return 10;
    }
    if at(4) == b'W' {
        let mut idx = 7;
        while idx < b.len() && b[idx].is_ascii_digit() {
            idx += 1;
        }
        if idx < 9 {
            return idx;
        }
        return if idx % 2 == 0 { 7 } else { 8 };
    }
    8
}

/// `n` ASCII digits at `b[at..]`.
fn digits(b: &[u8], at: usize, n: usize) -> Option<i32> {
    let part = b.get(at..at + n)?;
    part.iter().try_fold(0i32, |acc, c| {
        c.is_ascii_digit().then(|| acc * 10 + i32::from(c - b'0'))
    })
}

/// The date before `sep` (CPython's `parse_isoformat_date`, which reads what its form needs).
fn date(b: &[u8], sep: usize) -> Option<(i16, i8, i8)> {
    if sep == usize::MAX || sep > b.len() {
        return None;
    }
    let year = digits(b, 0, 4)?;
    let dashed = b.get(4) == Some(&b'-');
    let mut p = 4 + usize::from(dashed);
    if b.get(p) == Some(&b'W') {
        let week = digits(b, p + 1, 2)?;
        p += 3;
        let weekday = if p < sep {
            if dashed {
                if b.get(p) != Some(&b'-') {
                    return None;
                }
                p += 1;
            }
            digits(b, p, 1)?
        } else {
            1
        };
        let weekday = Weekday::from_monday_one_offset(i8::try_from(weekday).ok()?).ok()?;
        let d = jiff::civil::ISOWeekDate::new(i16::try_from(year).ok()?, i8::try_from(week).ok()?, weekday)
            .ok()?
            .date();
        return Some((d.year(), d.month(), d.day()));
    }
    let month = digits(b, p, 2)?;
    p += 2;
    if dashed {
        if b.get(p) != Some(&b'-') {
            return None;
        }
        p += 1;
    }
    let day = digits(b, p, 2)?;
    Some((
        i16::try_from(year).ok()?,
        i8::try_from(month).ok()?,
        i8::try_from(day).ok()?,
    ))
}

/// `HH[:MM[:SS[.f…]]]` or `HH[MM[SS[.f…]]]` (CPython's `parse_hh_mm_ss_ff`, no offset left).
fn time(t: &[u8]) -> Option<(i8, i8, i8, i32)> {
    let mut vals = [0i32; 3];
    let mut p = 0;
    let mut colons = true;
    let mut fraction = false;
    for (i, val) in vals.iter_mut().enumerate() {
        *val = digits(t, p, 2)?;
        p += 2;
        let c = t.get(p).copied();
        p += 1;
        if i == 0 {
            colons = c == Some(b':');
        }
        if p >= t.len() {
            // The string ends here (`c` is its end), or one character after (a stray one).
            if c.is_some() {
                return None;
            }
            return Some((vals[0] as i8, vals[1] as i8, vals[2] as i8, 0));
        }
        match c {
            Some(b':') if colons => continue,
            Some(b'.' | b',') => {
                fraction = true;
                break;
            }
            _ if !colons => p -= 1,
            _ => return None,
        }
    }
    let _ = fraction;
    let rest = &t[p..];
    let n = rest.len().min(6);
    if n == 0 {
        return None;
    }
    let mut micros = digits(rest, 0, n)?;
    micros *= 10i32.pow(6 - n as u32);
    if !rest[n..].iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some((vals[0] as i8, vals[1] as i8, vals[2] as i8, micros))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_are_iana_names_spelt_exactly_and_none_is_utc() {
        assert!(zone(Some("Europe/Copenhagen")).is_some());
        assert!(zone(Some("europe/copenhagen")).is_none());
        assert!(zone(Some("Mars/Olympus")).is_none());
        assert_eq!(zone(None), Some(TimeZone::UTC));
        assert!(zone(Some("UTC")).is_some());
        assert!(zone(Some("America/New York")).is_some(), "as gettz reads it");
    }

    #[test]
    fn times_of_day_are_exactly_hh_mm() {
        assert_eq!(time_of_day("09:05"), Some((9, 5)));
        assert_eq!(time_of_day("23:59"), Some((23, 59)));
        for bad in ["24:00", "9:05", "09:5", "09:60", "0905", "09:05:00", " 9:05"] {
            assert_eq!(time_of_day(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_time_range_is_inclusive_to_the_minute_and_may_cross_midnight() {
        let at = |h, m| jiff::civil::date(2024, 1, 1).at(h, m, 30, 0);
        assert!(in_time_range(at(9, 0), (9, 0), (17, 0)));
        assert!(in_time_range(at(17, 0), (9, 0), (17, 0)));
        assert!(!in_time_range(at(17, 1), (9, 0), (17, 0)));
        assert!(in_time_range(at(23, 45), (23, 30), (23, 0)), "crosses midnight");
        assert!(!in_time_range(at(23, 15), (23, 30), (23, 0)));
        assert!(in_time_range(at(3, 0), (20, 0), (4, 0)));
    }

    #[test]
    fn datetimes_are_read_as_python_3_11_reads_them() {
        let dt = |y, mo, d, h, mi, s, us| jiff::civil::date(y, mo, d).at(h, mi, s, us * 1_000);
        for (s, want) in [
            ("2022-10-05", dt(2022, 10, 5, 0, 0, 0, 0)),
            ("20221005", dt(2022, 10, 5, 0, 0, 0, 0)),
            ("2022-10-05T12", dt(2022, 10, 5, 12, 0, 0, 0)),
            ("2022-10-05T12:30", dt(2022, 10, 5, 12, 30, 0, 0)),
            ("2022-10-05 12:30:45.5", dt(2022, 10, 5, 12, 30, 45, 500_000)),
            ("2022-10-05x123045,1234567", dt(2022, 10, 5, 12, 30, 45, 123_456)),
            ("20221005T1230", dt(2022, 10, 5, 12, 30, 0, 0)),
            ("2022-W40", dt(2022, 10, 3, 0, 0, 0, 0)),
            ("2022-W40-3T08:00", dt(2022, 10, 5, 8, 0, 0, 0)),
            ("2022W403", dt(2022, 10, 5, 0, 0, 0, 0)),
        ] {
            assert_eq!(datetime(s), Ok(want), "{s}");
        }
        for bad in [
            "2022-13-01",
            "2022-02-30",
            "2022-10",
            "0000-01-01",
            "2022-10-05T25:00",
            "2022-10-05T12:",
            "2022/10/05",
            "nonsense",
        ] {
            assert_eq!(datetime(bad), Err(Refused::Invalid), "{bad}");
        }
        for offset in [
            "2022-10-05T12:00Z",
            "2022-10-05T12:00+02:00",
            "2022-10-05T12:00:00-05:00",
        ] {
            assert_eq!(datetime(offset), Err(Refused::Offset), "{offset}");
        }
    }

    #[test]
    fn the_wall_clock_is_the_zone_s_to_the_microsecond() {
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(1_700_000_000_123_456_789);
        let paris = zone(Some("Europe/Paris")).unwrap();
        let local = local(now, &paris).unwrap();
        assert_eq!(local, jiff::civil::date(2023, 11, 14).at(23, 13, 20, 123_456_000));
        assert_eq!(day_name(local), "TUESDAY");
    }
}
