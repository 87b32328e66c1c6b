//! A timestamp's text, written by hand: `2026-12-08T01:39:48.123Z`.
//!
//! Why not chrono's `to_rfc3339_opts`: it goes through `core::fmt` and
//! allocates, about 700 instructions, and every event is formatted twice on
//! its way in (its JSON, then its row in the store): 3% of the broker's
//! instructions in the ingest profile (PERFORMANCE.md, "Session 11"). The
//! text here is the same, byte for byte, for every year from 0 to 9999;
//! outside them chrono writes it (a signed, wider year), and so does this.

use chrono::{DateTime, SecondsFormat, Utc};

/// The length of `YYYY-MM-DDTHH:MM:SS.mmmZ`.
const LEN: usize = 24;

/// Hands `use_text` the text of `at`, from the stack for years 0 to 9999
/// ([`TimestampText`]), from chrono for the rest.
pub(super) fn with_text<R>(at: DateTime<Utc>, use_text: impl FnOnce(&str) -> R) -> R {
    match TimestampText::of(at) {
        Some(text) => use_text(text.as_str()),
        None => use_text(&chrono_text(at)),
    }
}

/// The text of one timestamp, on the stack.
struct TimestampText {
    bytes: [u8; LEN],
}

impl TimestampText {
    /// The text of `at`, or `None` for a year outside 0..=9999 or a leap second.
    fn of(at: DateTime<Utc>) -> Option<TimestampText> {
        // A leap second's nanoseconds run past 1,000,000,000; chrono writes
        // its milliseconds as 1000 and up, which three digits would not hold.
        let millis = at.timestamp_subsec_millis();
        if millis > 999 {
            return None;
        }
        let seconds = at.timestamp();
        let (year, month, day) = civil_date(seconds.div_euclid(86_400));
        let year = u32::try_from(year).ok().filter(|&year| year <= 9999)?;
        let of_day = seconds.rem_euclid(86_400) as u32;
        let mut bytes = *b"0000-00-00T00:00:00.000Z";
        digits(&mut bytes[0..4], year);
        digits(&mut bytes[5..7], month);
        digits(&mut bytes[8..10], day);
        digits(&mut bytes[11..13], of_day / 3600);
        digits(&mut bytes[14..16], of_day / 60 % 60);
        digits(&mut bytes[17..19], of_day % 60);
        digits(&mut bytes[20..23], millis);
        Some(TimestampText { bytes })
    }

    /// The text.
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes).expect("ASCII digits and separators")
    }
}

/// The proleptic Gregorian (year, month, day) of a count of days since
/// 1970-01-01: Howard Hinnant's `civil_from_days`, in whole 400-year eras
/// of 146,097 days, each starting on a 1 March so that the leap day ends it.
fn civil_date(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468; // From 0000-03-01.
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Writes `value` in decimal into `out`, right-aligned, over its zeros.
fn digits(out: &mut [u8], mut value: u32) {
    for byte in out.iter_mut().rev() {
        *byte = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// RFC 3339 in UTC with milliseconds, as chrono writes it.
fn chrono_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::{chrono_text, TimestampText};
    use chrono::{DateTime, TimeDelta, TimeZone, Utc};
    use proptest::prelude::*;

    fn text(at: DateTime<Utc>) -> Option<String> {
        TimestampText::of(at).map(|text| text.as_str().to_owned())
    }

    proptest! {
        /// Every instant of years 0 to 9999, to the nanosecond: the same text as chrono's.
        #[test]
        fn the_text_is_chronos(
            seconds in -62_167_219_200i64..253_402_300_800,
            nanos in 0u32..1_000_000_000,
        ) {
            let at = Utc.timestamp_opt(seconds, nanos).unwrap();
            prop_assert_eq!(text(at), Some(chrono_text(at)));
        }
    }

    /// Every day from 1896 to 2104 at 23:59:59.999: the century years 1900
    /// and 2100 are not leap years, 2000 is.
    #[test]
    fn every_day_around_three_centuries_is_chronos() {
        let first = Utc.with_ymd_and_hms(1896, 1, 1, 23, 59, 59).unwrap();
        let last = Utc.with_ymd_and_hms(2104, 12, 31, 23, 59, 59).unwrap();
        let mut at = first + TimeDelta::milliseconds(999);
        while at <= last + TimeDelta::seconds(1) {
            assert_eq!(text(at), Some(chrono_text(at)));
            at += TimeDelta::days(1);
        }
    }

    #[test]
    fn years_outside_four_digits_and_leap_seconds_are_left_to_chrono() {
        let before_year_0 = Utc.timestamp_opt(-62_167_219_201, 0).unwrap();
        let year_10000 = Utc.timestamp_opt(253_402_300_800, 0).unwrap();
        let leap_second = Utc.timestamp_opt(1_483_228_799, 1_500_000_000).unwrap();
        for at in [before_year_0, year_10000, leap_second] {
            assert!(text(at).is_none(), "{}", chrono_text(at));
        }
        let edges = [
            Utc.timestamp_opt(-62_167_219_200, 0).unwrap(),
            Utc.timestamp_opt(253_402_300_799, 999_999_999).unwrap(),
        ];
        for at in edges {
            assert_eq!(text(at), Some(chrono_text(at)));
        }
    }
}
