//! `decode_raw` reads well-formed records straight from their JSON; every record, well-formed or
//! not, must decode exactly as through the Lambda event shape (`decode_record`).

use aws_lambda_events::event::dynamodb::EventRecord;
use pipetel_model::Timestamp;
use pipetel_processors::decode::{
    decode_raw, decode_record, error_chain, Change, DecodeError, DecodedRecord, StreamBatch,
};
use serde_json::value::RawValue;
use serde_json::{json, Value};

fn fixture(name: &str) -> Vec<Box<RawValue>> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str::<StreamBatch>(&text)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .records
}

/// A record comparable across the two paths: errors by their message chain.
fn outcome(record: &DecodedRecord) -> (Option<String>, Option<Timestamp>, String) {
    let change = match &record.change {
        Change::Event(event) => format!("{event:?}"),
        Change::Removed => "removed".to_owned(),
        Change::Malformed(err) => format!("malformed: {}", error_chain(err)),
    };
    (record.sequence_number.clone(), record.written_at, change)
}

/// A FAILED event of the day fixture, in its stream record, changed by `edit`.
fn variant(edit: impl FnOnce(&mut Value)) -> Box<RawValue> {
    let mut record = json!({
        "eventID": "c4ca4238a0b923820dcc509a6f75849b",
        "eventName": "INSERT",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": 1782349205.347,
            "Keys": {"pk": {"S": "sales#eu#clean#20260625"}, "sk": {"S": "2026-06-25T01:15:00Z#FAILED"}},
            "NewImage": {
                "pk": {"S": "sales#eu#clean#20260625"},
                "sk": {"S": "2026-06-25T01:15:00Z#FAILED"},
                "job_id": {"S": "sales#20260625"},
                "source": {"S": "sales"},
                "category": {"S": "eu"},
                "stage": {"S": "clean"},
                "run_date": {"S": "20260625"},
                "status": {"S": "FAILED"},
                "timestamp": {"S": "2026-06-25T01:15:00Z"},
                "file_fingerprint": {"NULL": true},
                "error_summary": {"S": "schema drift: \"amount\"\ncolumn é"},
                "error_details": {"NULL": true},
                "attempt": {"N": "2"},
                "ttl": {"N": "1784941200"}
            },
            "SequenceNumber": "44215845000000000174504400",
            "SizeBytes": 321,
            "StreamViewType": "NEW_AND_OLD_IMAGES"
        },
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/pipeline-logs/stream/2026-06-25T00:00:00.000"
    });
    edit(&mut record);
    RawValue::from_string(record.to_string()).expect("valid JSON")
}

fn image(record: &mut Value) -> &mut Value {
    &mut record["dynamodb"]["NewImage"]
}

fn edge_records() -> Vec<Box<RawValue>> {
    vec![
        variant(|_| {}),
        variant(|r| {
            r["eventName"] = json!("MODIFY");
            r["dynamodb"]["OldImage"] = r["dynamodb"]["NewImage"].clone();
        }),
        variant(|r| {
            r["eventName"] = json!("REMOVE");
            r["dynamodb"]["OldImage"] = r["dynamodb"]["NewImage"].take();
            r["dynamodb"].as_object_mut().unwrap().remove("NewImage");
        }),
        variant(|r| *image(r) = json!({})),
        variant(|r| *image(r) = json!(null)),
        variant(|r| *image(r) = json!("not a map")),
        variant(|r| {
            r["dynamodb"].as_object_mut().unwrap().remove("NewImage");
        }),
        variant(|r| image(r)["attempt"] = json!({"S": "2"})),
        variant(|r| image(r)["attempt"] = json!({"N": "-2"})),
        variant(|r| image(r)["pk"] = json!({"NULL": true})),
        variant(|r| image(r)["source"] = json!({"N": "7"})),
        variant(|r| {
            image(r).as_object_mut().unwrap().remove("category");
        }),
        variant(|r| image(r)["status"] = json!({"S": "DONE"})),
        variant(|r| image(r)["note"] = json!({"M": {"by": {"BOOL": true}}})),
        variant(|r| image(r)["category"] = json!({"BOOL": true})),
        variant(|r| r["eventName"] = json!("UPSERT")),
        variant(|r| {
            r["dynamodb"]
                .as_object_mut()
                .unwrap()
                .remove("SequenceNumber");
        }),
        variant(|r| {
            r["dynamodb"]
                .as_object_mut()
                .unwrap()
                .remove("ApproximateCreationDateTime");
        }),
        variant(|r| r["dynamodb"]["ApproximateCreationDateTime"] = json!(0)),
        variant(|r| r["dynamodb"]["ApproximateCreationDateTime"] = json!(1782349205)),
        variant(|r| r["dynamodb"]["ApproximateCreationDateTime"] = json!(1e300)),
        variant(|r| {
            r.as_object_mut().unwrap().remove("awsRegion");
        }),
        variant(|r| {
            r["dynamodb"].as_object_mut().unwrap().remove("SizeBytes");
        }),
        variant(|r| r["dynamodb"] = json!([])),
    ]
}

#[test]
fn raw_records_decode_as_through_the_lambda_event_shape() {
    let records = [
        "aws-docs-sample.json",
        "day-of-sales.json",
        "poison-in-middle.json",
    ]
    .into_iter()
    .flat_map(fixture)
    .chain(edge_records());
    for raw in records {
        let fast = decode_raw(&raw);
        match serde_json::from_str::<EventRecord>(raw.get()) {
            Ok(record) => assert_eq!(
                outcome(&fast),
                outcome(&decode_record(record)),
                "{}",
                raw.get()
            ),
            Err(_) => assert!(
                matches!(fast.change, Change::Malformed(DecodeError::Envelope(_))),
                "{}: {:?}",
                raw.get(),
                fast.change
            ),
        }
    }
}

#[test]
fn escaped_text_is_read_unescaped() {
    let Change::Event(event) = decode_raw(&variant(|_| {})).change else {
        panic!("a valid event");
    };
    assert_eq!(
        event.error_summary(),
        Some("schema drift: \"amount\"\ncolumn é")
    );
}
