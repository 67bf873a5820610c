//! Immutable stage events and their keys, as stored in the `pipeline-logs` table.

use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};

use crate::error::EventError;
use crate::values::{truncate_chars, Name, RunDate, Status, Timestamp};

/// The reserved stage of the orchestrator's job-level record (InitJob / DevSucceeded / DevFailed).
pub const JOB_STAGE: &str = "job";
/// Longest `error_summary` kept, in characters.
pub const MAX_ERROR_SUMMARY_CHARS: usize = 500;
/// Longest `error_details` kept, in characters.
pub const MAX_ERROR_DETAILS_CHARS: usize = 1000;

/// `job_id` = `{source}#{run_date}`: groups all stages of one run.
pub fn job_id(source: &Name, run_date: RunDate) -> String {
    let mut id = String::new();
    write_job_id(&mut id, source, run_date);
    id
}

/// Appends the [`job_id`] to `out`, so that a caller looking up the job of every event can reuse
/// one buffer.
pub fn write_job_id(out: &mut String, source: &Name, run_date: RunDate) {
    write!(out, "{source}#{run_date}").expect("writing to a String cannot fail");
}

/// Splits a `job_id` back into its source and run date.
pub fn parse_job_id(value: &str) -> Result<(Name, RunDate), EventError> {
    let malformed = |reason| EventError::MalformedKey {
        field: "job_id",
        value: value.to_owned(),
        reason,
    };
    let (source, date) = value
        .split_once('#')
        .ok_or_else(|| malformed("expected {source}#{run_date}"))?;
    Ok((Name::parse("source", source)?, RunDate::parse(date)?))
}

/// One stage of one job, possibly within a category: the unit that has a status.
///
/// The contract keys the rollup's `stages` map by stage name. Events may also carry a category,
/// and two categories of one source may run the same stage on one run date; they are different
/// lanes, written `{category}#{stage}` (a `#` never occurs inside a name, so this is unambiguous).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lane {
    pub category: Option<Name>,
    pub stage: Name,
}

impl Lane {
    pub fn parse(value: &str) -> Result<Self, EventError> {
        match value.split_once('#') {
            Some((category, stage)) => Ok(Self {
                category: Some(Name::parse("category", category)?),
                stage: Name::parse("stage", stage)?,
            }),
            None => Ok(Self {
                category: None,
                stage: Name::parse("stage", value)?,
            }),
        }
    }

    pub fn is_job_level(&self) -> bool {
        self.stage.as_str() == JOB_STAGE
    }

    /// The event-log partition key of this lane on one run.
    pub fn event_pk(&self, source: &Name, run_date: RunDate) -> String {
        match &self.category {
            Some(category) => format!("{source}#{category}#{}#{run_date}", self.stage),
            None => format!("{source}#{}#{run_date}", self.stage),
        }
    }
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.category {
            Some(category) => write!(f, "{category}#{}", self.stage),
            None => f.write_str(self.stage.as_str()),
        }
    }
}

/// `sk` = `{timestamp}#{status}`.
pub fn event_sk(timestamp: Timestamp, status: Status) -> String {
    format!("{timestamp}#{status}")
}

/// The identity of an event within its lane, parsed from (or printed as) its `sk`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventKey {
    pub at: Timestamp,
    pub status: Status,
}

impl EventKey {
    pub fn parse_sk(value: &str, stage: &str) -> Result<Self, EventError> {
        let (at, status) = value
            .split_once('#')
            .ok_or_else(|| EventError::MalformedKey {
                field: "sk",
                value: value.to_owned(),
                reason: "expected {timestamp}#{status}",
            })?;
        Ok(Self {
            at: Timestamp::parse("sk", at)?,
            status: Status::parse_for_stage(status, stage)?,
        })
    }

    pub fn sk(self) -> String {
        event_sk(self.at, self.status)
    }
}

/// A stage event item exactly as stored: the 12 contract attributes and the optional extras.
///
/// Absent optional values are written as DynamoDB NULL (full-schema writes); the extras are
/// omitted when absent. Unknown attributes are ignored on read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventItem {
    pub pk: String,
    pub sk: String,
    pub job_id: String,
    pub source: String,
    #[serde(default)]
    pub category: Option<String>,
    pub stage: String,
    pub run_date: String,
    pub status: String,
    pub timestamp: String,
    #[serde(default)]
    pub file_fingerprint: Option<String>,
    #[serde(default)]
    pub error_summary: Option<String>,
    #[serde(default)]
    pub error_details: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
}

impl EventItem {
    pub fn borrowed(&self) -> EventItemRef<'_> {
        EventItemRef {
            pk: &self.pk,
            sk: &self.sk,
            job_id: &self.job_id,
            source: &self.source,
            category: self.category.as_deref(),
            stage: &self.stage,
            run_date: &self.run_date,
            status: &self.status,
            timestamp: &self.timestamp,
            file_fingerprint: self.file_fingerprint.as_deref(),
            error_summary: self.error_summary.as_deref(),
            error_details: self.error_details.as_deref(),
            execution_id: self.execution_id.as_deref(),
            attempt: self.attempt,
            ttl: self.ttl,
        }
    }
}

/// An [`EventItem`] borrowed from wherever it was read (absent optionals as `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventItemRef<'a> {
    pub pk: &'a str,
    pub sk: &'a str,
    pub job_id: &'a str,
    pub source: &'a str,
    pub category: Option<&'a str>,
    pub stage: &'a str,
    pub run_date: &'a str,
    pub status: &'a str,
    pub timestamp: &'a str,
    pub file_fingerprint: Option<&'a str>,
    pub error_summary: Option<&'a str>,
    pub error_details: Option<&'a str>,
    pub execution_id: Option<&'a str>,
    pub attempt: Option<u32>,
    pub ttl: Option<i64>,
}

/// A validated, immutable stage event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageEvent {
    source: Name,
    lane: Lane,
    run_date: RunDate,
    key: EventKey,
    file_fingerprint: Option<String>,
    error_summary: Option<String>,
    error_details: Option<String>,
    execution_id: Option<String>,
    attempt: Option<u32>,
    ttl: Option<i64>,
}

impl StageEvent {
    /// A new event; fails if `status` is not allowed for `stage`.
    pub fn new(
        source: Name,
        category: Option<Name>,
        stage: Name,
        run_date: RunDate,
        status: Status,
        at: Timestamp,
    ) -> Result<Self, EventError> {
        Status::parse_for_stage(status.as_str(), stage.as_str())?;
        Ok(Self {
            source,
            lane: Lane { category, stage },
            run_date,
            key: EventKey { at, status },
            file_fingerprint: None,
            error_summary: None,
            error_details: None,
            execution_id: None,
            attempt: None,
            ttl: None,
        })
    }

    /// Sets the error text, truncated to the contract's limits (by characters).
    pub fn with_error(mut self, summary: &str, details: Option<&str>) -> Self {
        self.error_summary = Some(truncate_chars(summary, MAX_ERROR_SUMMARY_CHARS).to_owned());
        self.error_details = details.map(|d| truncate_chars(d, MAX_ERROR_DETAILS_CHARS).to_owned());
        self
    }

    pub fn with_file_fingerprint(mut self, fingerprint: impl Into<String>) -> Self {
        self.file_fingerprint = Some(fingerprint.into());
        self
    }

    pub fn with_execution_id(mut self, execution_id: impl Into<String>) -> Self {
        self.execution_id = Some(execution_id.into());
        self
    }

    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.attempt = Some(attempt);
        self
    }

    pub fn with_ttl(mut self, epoch_seconds: i64) -> Self {
        self.ttl = Some(epoch_seconds);
        self
    }

    /// Validates a stored item: every field's shape, and that `pk`, `sk` and `job_id` agree with
    /// the fields they are built from. Over-long error texts are truncated, not rejected, so a
    /// writer that forgot to truncate does not lose its failure event.
    pub fn from_item(item: EventItem) -> Result<Self, EventError> {
        Self::from_item_ref(item.borrowed())
    }

    /// [`StageEvent::from_item`] on an item borrowed from where it was read, so that only what the
    /// event keeps is copied (the stream processor's decoder reads items straight from JSON).
    pub fn from_item_ref(item: EventItemRef<'_>) -> Result<Self, EventError> {
        let source = Name::parse("source", item.source)?;
        let category = item
            .category
            .map(|c| Name::parse("category", c))
            .transpose()?;
        let stage = Name::parse("stage", item.stage)?;
        let run_date = RunDate::parse(item.run_date)?;
        let status = Status::parse_for_stage(item.status, stage.as_str())?;
        let at = Timestamp::parse("timestamp", item.timestamp)?;
        let event = Self::new(source, category, stage, run_date, status, at)?;

        // Parsed fields print back exactly as read, so the keys are checked against the item's
        // own text, without building them (this runs for every event of every batch).
        let pk_parts = [
            Some(item.source),
            item.category,
            Some(item.stage),
            Some(item.run_date),
        ];
        check_key("pk", item.pk, pk_parts.into_iter().flatten(), || event.pk())?;
        check_key("sk", item.sk, [item.timestamp, item.status], || event.sk())?;
        check_key("job_id", item.job_id, [item.source, item.run_date], || {
            event.job_id()
        })?;

        let truncated = |text: Option<&str>, max_chars| {
            text.map(|text| truncate_chars(text, max_chars).to_owned())
        };
        Ok(Self {
            file_fingerprint: item.file_fingerprint.map(str::to_owned),
            error_summary: truncated(item.error_summary, MAX_ERROR_SUMMARY_CHARS),
            error_details: truncated(item.error_details, MAX_ERROR_DETAILS_CHARS),
            execution_id: item.execution_id.map(str::to_owned),
            attempt: item.attempt,
            ttl: item.ttl,
            ..event
        })
    }

    /// The full-schema item to write.
    pub fn to_item(&self) -> EventItem {
        EventItem {
            pk: self.pk(),
            sk: self.sk(),
            job_id: self.job_id(),
            source: self.source.to_string(),
            category: self.lane.category.as_ref().map(Name::to_string),
            stage: self.lane.stage.to_string(),
            run_date: self.run_date.to_string(),
            status: self.key.status.to_string(),
            timestamp: self.key.at.to_string(),
            file_fingerprint: self.file_fingerprint.clone(),
            error_summary: self.error_summary.clone(),
            error_details: self.error_details.clone(),
            execution_id: self.execution_id.clone(),
            attempt: self.attempt,
            ttl: self.ttl,
        }
    }

    pub fn pk(&self) -> String {
        self.lane.event_pk(&self.source, self.run_date)
    }

    pub fn sk(&self) -> String {
        self.key.sk()
    }

    pub fn job_id(&self) -> String {
        job_id(&self.source, self.run_date)
    }

    pub fn source(&self) -> &Name {
        &self.source
    }

    pub fn category(&self) -> Option<&Name> {
        self.lane.category.as_ref()
    }

    pub fn stage(&self) -> &Name {
        &self.lane.stage
    }

    pub fn lane(&self) -> &Lane {
        &self.lane
    }

    pub fn run_date(&self) -> RunDate {
        self.run_date
    }

    pub fn status(&self) -> Status {
        self.key.status
    }

    pub fn timestamp(&self) -> Timestamp {
        self.key.at
    }

    pub fn key(&self) -> EventKey {
        self.key
    }

    pub fn file_fingerprint(&self) -> Option<&str> {
        self.file_fingerprint.as_deref()
    }

    pub fn error_summary(&self) -> Option<&str> {
        self.error_summary.as_deref()
    }

    pub fn error_details(&self) -> Option<&str> {
        self.error_details.as_deref()
    }

    pub fn execution_id(&self) -> Option<&str> {
        self.execution_id.as_deref()
    }
}

/// Checks that `found` is `parts` joined with `#`; `expected` builds the key for the error.
fn check_key<'p>(
    field: &'static str,
    found: &str,
    parts: impl IntoIterator<Item = &'p str>,
    expected: impl FnOnce() -> String,
) -> Result<(), EventError> {
    if is_joined(found, parts) {
        Ok(())
    } else {
        Err(EventError::KeyMismatch {
            field,
            found: found.to_owned(),
            expected: expected(),
        })
    }
}

/// `text == parts.join("#")`, without joining.
fn is_joined<'p>(text: &str, parts: impl IntoIterator<Item = &'p str>) -> bool {
    let mut rest = text;
    for (i, part) in parts.into_iter().enumerate() {
        let after_separator = if i == 0 {
            Some(rest)
        } else {
            rest.strip_prefix('#')
        };
        match after_separator.and_then(|r| r.strip_prefix(part)) {
            Some(after) => rest = after,
            None => return false,
        }
    }
    rest.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item() -> EventItem {
        EventItem {
            pk: "sales#eu#extract#20260625".into(),
            sk: "2026-06-25T11:30:56Z#FAILED".into(),
            job_id: "sales#20260625".into(),
            source: "sales".into(),
            category: Some("eu".into()),
            stage: "extract".into(),
            run_date: "20260625".into(),
            status: "FAILED".into(),
            timestamp: "2026-06-25T11:30:56Z".into(),
            file_fingerprint: None,
            error_summary: Some("boom".into()),
            error_details: None,
            execution_id: None,
            attempt: None,
            ttl: None,
        }
    }

    #[test]
    fn a_valid_item_round_trips() {
        let event = StageEvent::from_item(item()).unwrap();
        assert_eq!(event.job_id(), "sales#20260625");
        assert_eq!(event.lane().to_string(), "eu#extract");
        assert_eq!(event.to_item(), item());
    }

    #[test]
    fn joined_keys_match_exactly() {
        assert!(is_joined("a#b#c", ["a", "b", "c"]));
        assert!(is_joined("", []));
        for text in ["a#b", "a#b#c#", "a#bc", "ab#c", "a#b#cd", "#a#b#c"] {
            assert!(!is_joined(text, ["a", "b", "c"]), "{text}");
        }
    }

    #[test]
    fn keys_without_category_have_three_parts() {
        let mut it = item();
        it.category = None;
        it.pk = "sales#extract#20260625".into();
        assert_eq!(
            StageEvent::from_item(it).unwrap().pk(),
            "sales#extract#20260625"
        );
    }

    #[test]
    fn keys_must_agree_with_fields() {
        let mut it = item();
        it.pk = "sales#extract#20260625".into();
        let err = StageEvent::from_item(it).unwrap_err();
        assert!(
            matches!(err, EventError::KeyMismatch { field: "pk", .. }),
            "{err}"
        );

        let mut it = item();
        it.sk = "2026-06-25T11:30:56Z#DONE".into();
        assert!(matches!(
            StageEvent::from_item(it),
            Err(EventError::KeyMismatch { field: "sk", .. })
        ));

        let mut it = item();
        it.job_id = "sales#20260626".into();
        assert!(matches!(
            StageEvent::from_item(it),
            Err(EventError::KeyMismatch {
                field: "job_id",
                ..
            })
        ));
    }

    #[test]
    fn hash_in_source_is_rejected_with_its_field() {
        let mut it = item();
        it.source = "sa#les".into();
        let err = StageEvent::from_item(it).unwrap_err();
        assert!(
            matches!(
                err,
                EventError::InvalidName {
                    field: "source",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn over_long_errors_are_truncated_on_read_and_write() {
        let mut it = item();
        it.error_summary = Some("ü".repeat(501));
        it.error_details = Some("d".repeat(1001));
        let event = StageEvent::from_item(it).unwrap();
        assert_eq!(event.error_summary().unwrap().chars().count(), 500);
        assert_eq!(event.error_details().unwrap().chars().count(), 1000);

        let exactly = "x".repeat(500);
        let written = StageEvent::from_item(item())
            .unwrap()
            .with_error(&exactly, Some(&"y".repeat(1000)));
        assert_eq!(written.error_summary().unwrap(), exactly);
        assert_eq!(written.error_details().unwrap().len(), 1000);
    }

    #[test]
    fn job_stage_uses_succeeded_not_done() {
        let mut it = item();
        it.category = None;
        it.stage = "job".into();
        it.pk = "sales#job#20260625".into();
        it.status = "DONE".into();
        it.sk = "2026-06-25T11:30:56Z#DONE".into();
        assert!(matches!(
            StageEvent::from_item(it),
            Err(EventError::InvalidStatus { .. })
        ));
    }

    #[test]
    fn job_ids_and_lanes_parse_back() {
        let (source, date) = parse_job_id("sales#20240229").unwrap();
        assert_eq!(
            (source.as_str(), date.to_string().as_str()),
            ("sales", "20240229")
        );
        assert!(parse_job_id("sales").is_err());
        assert!(parse_job_id("sales#20230229").is_err());
        assert_eq!(Lane::parse("eu#extract").unwrap().to_string(), "eu#extract");
        assert_eq!(Lane::parse("extract").unwrap().category, None);
        assert!(Lane::parse("eu#ex#tract").is_err());
    }
}
