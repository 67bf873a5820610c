//! DynamoDB Streams records as read with `aws-sdk-dynamodbstreams`, turned into the Lambda event
//! shape, so a stream reader outside Lambda feeds exactly the handler code Lambda runs.

use aws_lambda_events::event::dynamodb::{EventRecord, StreamRecord, StreamViewType};
use aws_sdk_dynamodbstreams::types::Record;

/// The Lambda form of one stream record (images keep their DynamoDB JSON attribute values).
pub fn to_lambda_record(record: Record, stream_arn: &str) -> EventRecord {
    let mut out = EventRecord::default();
    out.aws_region = record.aws_region.unwrap_or_default();
    out.event_id = record.event_id.unwrap_or_default();
    out.event_name = record
        .event_name
        .map(|name| name.as_str().to_owned())
        .unwrap_or_default();
    out.event_source = record.event_source;
    out.event_version = record.event_version;
    out.event_source_arn = Some(stream_arn.to_owned());
    if let Some(change) = record.dynamodb {
        let mut stream = StreamRecord::default();
        if let Some(at) = change.approximate_creation_date_time {
            stream.approximate_creation_date_time =
                chrono::DateTime::from_timestamp(at.secs(), at.subsec_nanos()).unwrap_or_default();
        }
        stream.keys = change.keys.unwrap_or_default().into();
        stream.new_image = change.new_image.unwrap_or_default().into();
        stream.old_image = change.old_image.unwrap_or_default().into();
        stream.sequence_number = change.sequence_number;
        stream.size_bytes = change.size_bytes.unwrap_or_default();
        stream.stream_view_type = change
            .stream_view_type
            .and_then(|view| serde_json::from_value::<StreamViewType>(view.as_str().into()).ok());
        out.change = stream;
    }
    out
}
