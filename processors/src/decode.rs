//! Decoding stream records, one at a time, so one bad record can never fail a whole batch.

use aws_lambda_events::event::dynamodb::EventRecord;
use pipetel_model::{EventError, EventItem, StageEvent, Timestamp};
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

/// Decodes a record of a Lambda event.
pub fn decode_raw(raw: &RawValue) -> DecodedRecord {
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
