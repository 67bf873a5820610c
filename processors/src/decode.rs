//! Decoding stream records, one at a time, so one bad record can never fail a whole batch.

use std::borrow::Cow;

use aws_lambda_events::event::dynamodb::EventRecord;
use pipetel_model::{EventError, EventItem, EventItemRef, StageEvent, Timestamp};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;

/// A Lambda DynamoDB Streams event with its records left undecoded: each is decoded on its own.
#[derive(Debug, Deserialize)]
pub struct StreamBatch {
    #[serde(rename = "Records")]
    pub records: Vec<Box<RawValue>>,
}

/// Why a record was set aside.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("record is not a DynamoDB stream record")]
    Envelope(#[source] serde_json::Error),
    #[error("{event_name} record has no NewImage (stream view type must include NEW_IMAGE)")]
    MissingNewImage { event_name: String },
    #[error("unknown eventName {0:?}")]
    UnknownEventName(String),
    #[error("NewImage is not a stage event item")]
    Item(#[source] serde_dynamo::Error),
    #[error("stage event breaks the contract")]
    Invalid(#[source] EventError),
    #[error("record has no SequenceNumber, so it could never be retried from")]
    MissingSequenceNumber,
}

/// What one stream record means to the projections.
#[derive(Debug)]
pub enum Change {
    /// INSERT, or MODIFY (its NewImage taken as an event).
    Event(Box<StageEvent>),
    /// REMOVE (TTL expiry or a manual delete): never changes a projection.
    Removed,
    /// Breaks the contract: logged with its reason, counted, skipped.
    Malformed(DecodeError),
}

/// One decoded record and its position in the shard.
#[derive(Debug)]
pub struct DecodedRecord {
    pub sequence_number: Option<String>,
    /// When DynamoDB wrote the change (the stream's own clock), if the record says.
    pub written_at: Option<Timestamp>,
    pub change: Change,
}

/// Decodes a record of a Lambda event. A well-formed record is read straight from its JSON, as
/// this runs for every record of every batch; any other is parsed into the Lambda event shape and
/// decoded by [`decode_record`], so it is set aside for the same reason as before.
pub fn decode_raw(raw: &RawValue) -> DecodedRecord {
    if let Some(decoded) = decode_well_formed(raw) {
        return decoded;
    }
    match serde_json::from_str::<EventRecord>(raw.get()) {
        Ok(record) => decode_record(record),
        Err(err) => DecodedRecord {
            sequence_number: sequence_number_of(raw),
            written_at: None,
            change: Change::Malformed(DecodeError::Envelope(err)),
        },
    }
}

/// Decodes a record already parsed into the Lambda event shape (e.g. read by `pipetel consume`).
pub fn decode_record(record: EventRecord) -> DecodedRecord {
    let sequence_number = record.change.sequence_number;
    // Absent in the record: the field deserializes to the epoch.
    let written_at = Some(record.change.approximate_creation_date_time)
        .filter(|at| at.timestamp() > 0)
        .map(Timestamp::from_datetime);
    let change = match record.event_name.as_str() {
        _ if sequence_number.is_none() => Change::Malformed(DecodeError::MissingSequenceNumber),
        "REMOVE" => Change::Removed,
        "INSERT" | "MODIFY" if record.change.new_image.is_empty() => {
            Change::Malformed(DecodeError::MissingNewImage {
                event_name: record.event_name,
            })
        }
        "INSERT" | "MODIFY" => match decode_image(record.change.new_image) {
            Ok(event) => Change::Event(Box::new(event)),
            Err(err) => Change::Malformed(err),
        },
        other => Change::Malformed(DecodeError::UnknownEventName(other.to_owned())),
    };
    DecodedRecord {
        sequence_number,
        written_at,
        change,
    }
}

fn decode_image(image: serde_dynamo::Item) -> Result<StageEvent, DecodeError> {
    let item: EventItem = serde_dynamo::from_item(image).map_err(DecodeError::Item)?;
    StageEvent::from_item(item).map_err(DecodeError::Invalid)
}

/// The record decoded, if it is a REMOVE, or an INSERT or MODIFY whose NewImage has every
/// contract attribute of its type (the outcome may still be an event that breaks the contract);
/// `None` for anything else, left to [`decode_record`] to classify.
fn decode_well_formed(raw: &RawValue) -> Option<DecodedRecord> {
    let record: RecordJson = serde_json::from_str(raw.get()).ok()?;
    let stream = record.change;
    let change = match (record.event_name, stream.new_image) {
        ("REMOVE", _) => Change::Removed,
        ("INSERT" | "MODIFY", Some(image)) => match StageEvent::from_item_ref(image.item()?) {
            Ok(event) => Change::Event(Box::new(event)),
            Err(err) => Change::Malformed(DecodeError::Invalid(err)),
        },
        _ => return None,
    };
    // Whole seconds, as `decode_record` keeps them; absent, or at or before the epoch: unknown.
    let written_at = match stream.approximate_creation_date_time {
        Some(seconds) => Some(Timestamp::from_epoch_seconds(seconds.trunc() as i64)?)
            .filter(|at| at.epoch_seconds() > 0),
        None => None,
    };
    Some(DecodedRecord {
        sequence_number: Some(stream.sequence_number?.to_owned()),
        written_at,
        change,
    })
}

/// What the processor reads of a Lambda stream record, borrowed from its JSON: the NewImage goes
/// straight into an [`EventItemRef`] instead of an attribute map, Keys and OldImage are skipped. The
/// fields the Lambda event shape requires are required here too.
#[derive(Deserialize)]
struct RecordJson<'a> {
    #[serde(rename = "eventName")]
    event_name: &'a str,
    #[serde(rename = "dynamodb", borrow)]
    change: StreamRecordJson<'a>,
    #[serde(rename = "awsRegion")]
    _aws_region: IgnoredAny,
    #[serde(rename = "eventID")]
    _event_id: IgnoredAny,
}

#[derive(Deserialize)]
struct StreamRecordJson<'a> {
    /// Seconds since the epoch, possibly with a fraction.
    #[serde(rename = "ApproximateCreationDateTime", default)]
    approximate_creation_date_time: Option<f64>,
    #[serde(rename = "SequenceNumber", default)]
    sequence_number: Option<&'a str>,
    #[serde(rename = "NewImage", default, borrow)]
    new_image: Option<ImageJson<'a>>,
    #[serde(rename = "SizeBytes")]
    _size_bytes: IgnoredAny,
}

/// A DynamoDB JSON attribute value, of the types a stage event item uses.
#[derive(Deserialize)]
enum Attribute<'a> {
    S(#[serde(borrow)] Cow<'a, str>),
    N(&'a str),
    #[serde(rename = "NULL")]
    Null(IgnoredAny),
}

/// A NewImage in DynamoDB JSON: the attributes of an [`EventItem`]; others are skipped.
#[derive(Deserialize)]
struct ImageJson<'a> {
    #[serde(borrow, default)]
    pk: Option<Attribute<'a>>,
    #[serde(borrow, default)]
    sk: Option<Attribute<'a>>,
    #[serde(borrow, default)]
    job_id: Option<Attribute<'a>>,
    #[serde(borrow, default)]
    source: Option<Attribute<'a>>,
    #[serde(borrow, default)]
    category: Option<Attribute<'a>>,
    #[serde(borrow, default)]
    stage: Option<Attribute<'a>>,
    #[serde(borrow, default)]
    run_date: Option<Attribute<'a>>,
    #[serde(borrow, default)]
    status: Option<Attribute<'a>>,
    #[serde(borrow, default)]
    timestamp: Option<Attribute<'a>>,
    #[serde(borrow, default)]
    file_fingerprint: Option<Attribute<'a>>,
    #[serde(borrow, default)]
    error_summary: Option<Attribute<'a>>,
    #[serde(borrow, default)]
    error_details: Option<Attribute<'a>>,
    #[serde(borrow, default)]
    execution_id: Option<Attribute<'a>>,
    #[serde(borrow, default)]
    attempt: Option<Attribute<'a>>,
    #[serde(borrow, default)]
    ttl: Option<Attribute<'a>>,
}

impl ImageJson<'_> {
    /// The item as `serde_dynamo` reads it (strings from S, numbers from N, NULL or absence as
    /// `None` where optional); `None` where it would not read one.
    fn item(&self) -> Option<EventItemRef<'_>> {
        fn text<'a>(value: &'a Option<Attribute>) -> Option<Option<&'a str>> {
            match value {
                None | Some(Attribute::Null(_)) => Some(None),
                Some(Attribute::S(text)) => Some(Some(text)),
                Some(Attribute::N(_)) => None,
            }
        }
        fn number<T: std::str::FromStr>(value: &Option<Attribute>) -> Option<Option<T>> {
            match value {
                None | Some(Attribute::Null(_)) => Some(None),
                Some(Attribute::N(number)) => number.parse().ok().map(Some),
                Some(Attribute::S(_)) => None,
            }
        }
        Some(EventItemRef {
            pk: text(&self.pk)??,
            sk: text(&self.sk)??,
            job_id: text(&self.job_id)??,
            source: text(&self.source)??,
            category: text(&self.category)?,
            stage: text(&self.stage)??,
            run_date: text(&self.run_date)??,
            status: text(&self.status)??,
            timestamp: text(&self.timestamp)??,
            file_fingerprint: text(&self.file_fingerprint)?,
            error_summary: text(&self.error_summary)?,
            error_details: text(&self.error_details)?,
            execution_id: text(&self.execution_id)?,
            attempt: number(&self.attempt)?,
            ttl: number(&self.ttl)?,
        })
    }
}

/// Best effort: the sequence number of a record whose envelope did not decode, for the log.
fn sequence_number_of(raw: &RawValue) -> Option<String> {
    #[derive(Deserialize)]
    struct Envelope {
        dynamodb: Position,
    }
    #[derive(Deserialize)]
    struct Position {
        #[serde(rename = "SequenceNumber")]
        sequence_number: String,
    }
    serde_json::from_str::<Envelope>(raw.get())
        .ok()
        .map(|e| e.dynamodb.sequence_number)
}

/// The full causal chain of an error, for one log line.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
