//! Validated value types of the contract: names, run dates, timestamps, statuses.
//!
//! Each parses strictly (the contract's exact shapes) and prints back the same text,
//! so keys built from them are stable.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, TimeZone, Timelike, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::EventError;

/// Longest source, category or stage name the contract allows.
pub const MAX_NAME_CHARS: usize = 64;

/// A source, category or stage name: `[A-Za-z0-9_.-]{1,64}`, so never a `#`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

impl Name {
    /// Validates `value` as the contract field `field` (named in the error).
    pub fn parse(field: &'static str, value: &str) -> Result<Self, EventError> {
        let invalid = |reason| EventError::InvalidName {
            field,
            value: value.to_owned(),
            reason,
        };
        if value.is_empty() {
            return Err(invalid("empty"));
        }
        if value.len() > MAX_NAME_CHARS {
            return Err(invalid("longer than 64 characters"));
        }
        if value.contains('#') {
            return Err(invalid("contains '#', the key separator"));
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            return Err(invalid("contains a character outside [A-Za-z0-9_.-]"));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Name::parse("name", &s).map_err(serde::de::Error::custom)
    }
}

/// The run date of a job: a real calendar date, written `YYYYMMDD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunDate(NaiveDate);

impl RunDate {
    pub fn parse(value: &str) -> Result<Self, EventError> {
        let invalid = || EventError::InvalidRunDate {
            value: value.to_owned(),
        };
        let b = value.as_bytes();
        if b.len() != 8 || !b.iter().all(u8::is_ascii_digit) {
            return Err(invalid());
        }
        let year = digits(&b[0..4]) as i32;
        let month = digits(&b[4..6]);
        let day = digits(&b[6..8]);
        NaiveDate::from_ymd_opt(year, month, day)
            .map(Self)
            .ok_or_else(invalid)
    }

    pub fn from_date(date: NaiveDate) -> Self {
        Self(date)
    }

    pub fn date(self) -> NaiveDate {
        self.0
    }
}

impl fmt::Display for RunDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Digit by digit, not through `write!`'s padding: every job id and event key prints one.
        let mut text = *b"00000000";
        let year = u32::try_from(self.0.year()).ok().filter(|y| *y <= 9999);
        let Some(year) = year else {
            return write!(
                f,
                "{:04}{:02}{:02}",
                self.0.year(),
                self.0.month(),
                self.0.day()
            );
        };
        put_digits(&mut text[0..4], year);
        put_digits(&mut text[4..6], self.0.month());
        put_digits(&mut text[6..8], self.0.day());
        f.write_str(ascii(&text))
    }
}

impl FromStr for RunDate {
    type Err = EventError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for RunDate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RunDate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RunDate::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A UTC instant at whole-second precision, written `YYYY-MM-DDTHH:MM:SSZ`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    /// Parses exactly `YYYY-MM-DDTHH:MM:SSZ` (no offset other than `Z`, no fraction).
    pub fn parse(field: &'static str, value: &str) -> Result<Self, EventError> {
        let invalid = || EventError::InvalidTimestamp {
            field,
            value: value.to_owned(),
        };
        let b = value.as_bytes();
        let shape_ok = b.len() == 20
            && b.iter().enumerate().all(|(i, c)| match i {
                4 | 7 => *c == b'-',
                10 => *c == b'T',
                13 | 16 => *c == b':',
                19 => *c == b'Z',
                _ => c.is_ascii_digit(),
            });
        if !shape_ok {
            return Err(invalid());
        }
        let date =
            NaiveDate::from_ymd_opt(digits(&b[0..4]) as i32, digits(&b[5..7]), digits(&b[8..10]))
                .ok_or_else(invalid)?;
        let time =
            NaiveTime::from_hms_opt(digits(&b[11..13]), digits(&b[14..16]), digits(&b[17..19]))
                .ok_or_else(invalid)?;
        Ok(Self(Utc.from_utc_datetime(&date.and_time(time))))
    }

    /// Truncates sub-second precision (the contract stores whole seconds).
    pub fn from_datetime(at: DateTime<Utc>) -> Self {
        Self::from_epoch_seconds(at.timestamp()).unwrap_or(Self(at))
    }

    pub fn from_epoch_seconds(secs: i64) -> Option<Self> {
        Utc.timestamp_opt(secs, 0).single().map(Self)
    }

    pub fn datetime(self) -> DateTime<Utc> {
        self.0
    }

    pub fn epoch_seconds(self) -> i64 {
        self.0.timestamp()
    }

    /// Whole seconds from `earlier` to `self` (negative if `earlier` is later).
    pub fn seconds_since(self, earlier: Timestamp) -> i64 {
        self.epoch_seconds() - earlier.epoch_seconds()
    }

    pub fn plus_seconds(self, secs: i64) -> Self {
        Self::from_epoch_seconds(self.epoch_seconds().saturating_add(secs)).unwrap_or(self)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Digit by digit rather than through `format`, which interprets its pattern on every call:
        // every event key and revision prints timestamps, so this is on the fold's hot path.
        let (date, time) = (self.0.date_naive(), self.0.time());
        let Some(year) = u32::try_from(date.year()).ok().filter(|y| *y <= 9999) else {
            return write!(f, "{}", self.0.format("%Y-%m-%dT%H:%M:%SZ"));
        };
        let mut text = *b"0000-00-00T00:00:00Z";
        put_digits(&mut text[0..4], year);
        put_digits(&mut text[5..7], date.month());
        put_digits(&mut text[8..10], date.day());
        put_digits(&mut text[11..13], time.hour());
        put_digits(&mut text[14..16], time.minute());
        put_digits(&mut text[17..19], time.second());
        f.write_str(ascii(&text))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse("timestamp", &s).map_err(serde::de::Error::custom)
    }
}

/// Status of a stage event. Stages use RUNNING/DONE/FAILED; the `job` stage RUNNING/SUCCEEDED/FAILED.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Running,
    Done,
    Succeeded,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "RUNNING",
            Status::Done => "DONE",
            Status::Succeeded => "SUCCEEDED",
            Status::Failed => "FAILED",
        }
    }

    /// Parses a status and checks it is allowed for `stage`.
    pub fn parse_for_stage(value: &str, stage: &str) -> Result<Self, EventError> {
        let job_level = stage == crate::JOB_STAGE;
        let status = match value {
            "RUNNING" => Some(Status::Running),
            "FAILED" => Some(Status::Failed),
            "DONE" if !job_level => Some(Status::Done),
            "SUCCEEDED" if job_level => Some(Status::Succeeded),
            _ => None,
        };
        status.ok_or_else(|| EventError::InvalidStatus {
            value: value.to_owned(),
            stage: stage.to_owned(),
            allowed: if job_level {
                "RUNNING, SUCCEEDED, FAILED"
            } else {
                "RUNNING, DONE, FAILED"
            },
        })
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, Status::Running)
    }

    pub fn is_success(self) -> bool {
        matches!(self, Status::Done | Status::Succeeded)
    }

    /// Precedence at equal timestamps: a terminal status beats RUNNING, FAILED beats DONE.
    pub fn precedence(self) -> u8 {
        match self {
            Status::Running => 0,
            Status::Done | Status::Succeeded => 1,
            Status::Failed => 2,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialOrd for Status {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Orders by precedence; DONE and SUCCEEDED (never in one stage together) by name.
impl Ord for Status {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.precedence(), self.as_str()).cmp(&(other.precedence(), other.as_str()))
    }
}

/// Writes `n` as decimal digits filling `out`, zero-padded (the caller sizes `out` to fit `n`).
fn put_digits(out: &mut [u8], mut n: u32) {
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Text made by [`put_digits`] into an ASCII template.
fn ascii(text: &[u8]) -> &str {
    std::str::from_utf8(text).expect("digits and ASCII punctuation")
}

/// Value of ASCII digits already checked by the caller.
fn digits(b: &[u8]) -> u32 {
    b.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0'))
}

/// Keeps at most `max_chars` characters (not bytes), never splitting a UTF-8 character.
pub fn truncate_chars(text: &str, max_chars: usize) -> &str {
    match text.char_indices().nth(max_chars) {
        Some((byte_index, _)) => &text[..byte_index],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_charset() {
        assert!(Name::parse("source", "sales_eu-2.v1").is_ok());
        assert!(Name::parse("source", &"a".repeat(64)).is_ok());
        for bad in ["", "a#b", "a b", "é", "a/b", &"a".repeat(65)] {
            let err = Name::parse("source", bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    EventError::InvalidName {
                        field: "source",
                        ..
                    }
                ),
                "{bad:?}"
            );
        }
        let err = Name::parse("source", "sales#eu").unwrap_err();
        assert!(err.to_string().contains("'#'"), "{err}");
    }

    #[test]
    fn run_dates_are_real_calendar_dates() {
        assert_eq!(RunDate::parse("20240229").unwrap().to_string(), "20240229");
        assert_eq!(RunDate::parse("20000229").unwrap().to_string(), "20000229");
        assert_eq!(RunDate::parse("00010101").unwrap().to_string(), "00010101");
        let far = NaiveDate::from_ymd_opt(12345, 6, 7).unwrap();
        assert_eq!(RunDate::from_date(far).to_string(), "123450607");
        for bad in [
            "20230229",
            "19000229",
            "20261301",
            "20260431",
            "2026061",
            "2026-06-01",
            "２０２６０６０１",
            "+2026061",
        ] {
            assert!(RunDate::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn timestamps_are_exactly_whole_second_utc() {
        let ts = Timestamp::parse("timestamp", "2026-06-25T11:30:56Z").unwrap();
        assert_eq!(ts.to_string(), "2026-06-25T11:30:56Z");
        assert_eq!(
            Timestamp::parse("timestamp", "2024-02-29T23:59:59Z")
                .unwrap()
                .to_string(),
            "2024-02-29T23:59:59Z"
        );
        let far = Timestamp::from_epoch_seconds(400_000_000_000).unwrap();
        assert_eq!(
            far.to_string(),
            far.0.format("%Y-%m-%dT%H:%M:%SZ").to_string()
        );
        assert_eq!(
            Timestamp::from_epoch_seconds(0).unwrap().to_string(),
            "1970-01-01T00:00:00Z"
        );
        for bad in [
            "2026-06-25T11:30:56",
            "2026-06-25T11:30:56.123Z",
            "2026-06-25T11:30:56+00:00",
            "2026-06-25 11:30:56Z",
            "2023-02-29T00:00:00Z",
            "2026-06-25T24:00:00Z",
            "2026-06-25T11:60:00Z",
            "2026-6-25T11:30:56Z",
            "2026-06-25t11:30:56z",
        ] {
            let err = Timestamp::parse("timestamp", bad).unwrap_err();
            assert!(
                matches!(err, EventError::InvalidTimestamp { .. }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn status_depends_on_stage() {
        assert_eq!(
            Status::parse_for_stage("DONE", "extract").unwrap(),
            Status::Done
        );
        assert_eq!(
            Status::parse_for_stage("SUCCEEDED", "job").unwrap(),
            Status::Succeeded
        );
        assert!(Status::parse_for_stage("SUCCEEDED", "extract").is_err());
        assert!(Status::parse_for_stage("DONE", "job").is_err());
        assert!(Status::parse_for_stage("running", "extract").is_err());
    }

    #[test]
    fn ties_prefer_terminal_then_failed() {
        assert!(Status::Failed > Status::Done);
        assert!(Status::Done > Status::Running);
        assert!(Status::Succeeded > Status::Running);
        assert!(Status::Failed > Status::Succeeded);
    }

    #[test]
    fn truncation_counts_characters_not_bytes() {
        let ascii = "x".repeat(501);
        assert_eq!(truncate_chars(&ascii, 500).chars().count(), 500);
        assert_eq!(truncate_chars(&ascii[..500], 500).len(), 500);
        let multi = "é".repeat(501); // 2 bytes each
        let cut = truncate_chars(&multi, 500);
        assert_eq!(cut.chars().count(), 500);
        assert_eq!(cut.len(), 1000);
        let emoji = "🦀".repeat(1001);
        assert_eq!(truncate_chars(&emoji, 1000).chars().count(), 1000);
        assert_eq!(truncate_chars("", 500), "");
    }
}
