//! Test harness: a real moto server on loopback, the pipetel tables, topic and queue in it, and
//! helpers to write events, read the table's stream, and read the projections back.
#![forbid(unsafe_code)]

use std::fmt;
use std::sync::Arc;

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_sdk_dynamodbstreams::types::ShardIteratorType;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use pipetel_model::{AlertMessage, FailedJob, JobRollup, StageEvent};
use pipetel_processors::adapters::{
    DynamoProjectionStore, DynamoRetryQueue, SnsAlertSink, StateMachines, StepFunctionsTarget,
};
use pipetel_processors::consumer::stream_arn_of;
use pipetel_processors::decode::StreamBatch;
use pipetel_processors::processor::StreamProcessor;
use pipetel_processors::retry::RetryDispatcher;
use pipetel_processors::streams::to_lambda_record;
use pipetel_processors::sweeper::Sweeper;
use pipetel_processors::tables::create_tables;

pub const EVENTS_TABLE: &str = "pipeline-logs";
pub const ROLLUPS_TABLE: &str = "job-rollups";
pub const FAILED_JOBS_TABLE: &str = "failed-jobs";
pub const ALERTS_TABLE: &str = "sla-alerts";

pub use pipetel_processors::local::{alert_topic_with_queue, sdk_config, Moto};

/// A moto server started from the repository's `.venv` (the README's test command installs it).
pub fn start_moto() -> Moto {
    Moto::start(&pipetel_processors::local::repo_root())
        .unwrap_or_else(|e| panic!("{}", pipetel_processors::decode::error_chain(&e)))
}

/// The pipetel tables, alert topic and a queue subscribed to it, in a fresh moto server.
pub struct Stack {
    pub moto: Moto,
    pub config: aws_config::SdkConfig,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub streams: aws_sdk_dynamodbstreams::Client,
    pub sns: aws_sdk_sns::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub sfn: aws_sdk_sfn::Client,
    pub topic_arn: String,
    pub queue_url: String,
    pub stream_arn: String,
}

impl Stack {
    pub async fn start() -> Self {
        let moto = start_moto();
        let config = sdk_config(&moto.endpoint).await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&config);
        // The tables exactly as infra/template.yaml defines them (keys, indexes, stream, TTL).
        create_tables(&dynamodb, "").await.unwrap();
        let stream_arn = stream_arn_of(&dynamodb, EVENTS_TABLE).await.unwrap();

        let (topic_arn, queue_url) = alert_topic_with_queue(&config, "sla-alerts", "alerts")
            .await
            .unwrap();
        Self {
            streams: aws_sdk_dynamodbstreams::Client::new(&config),
            sfn: aws_sdk_sfn::Client::new(&config),
            sns: aws_sdk_sns::Client::new(&config),
            sqs: aws_sdk_sqs::Client::new(&config),
            moto,
            config,
            dynamodb,
            topic_arn,
            queue_url,
            stream_arn,
        }
    }

    /// A processor with the production adapters, on `dynamodb` (which may carry test interceptors).
    pub fn processor(
        &self,
        dynamodb: aws_sdk_dynamodb::Client,
        rules: pipetel_model::SlaRules,
    ) -> StreamProcessor<DynamoProjectionStore, SnsAlertSink> {
        StreamProcessor::new(
            DynamoProjectionStore::new(dynamodb.clone(), ROLLUPS_TABLE, FAILED_JOBS_TABLE),
            SnsAlertSink::new(dynamodb, self.sns.clone(), ALERTS_TABLE, &self.topic_arn),
            rules,
        )
    }

    /// The sla-sweeper with the production adapters, on `dynamodb` (which may carry test
    /// interceptors).
    pub fn sweeper(
        &self,
        dynamodb: aws_sdk_dynamodb::Client,
        rules: pipetel_model::SlaRules,
    ) -> Sweeper<DynamoProjectionStore, SnsAlertSink> {
        Sweeper::new(
            DynamoProjectionStore::new(dynamodb.clone(), ROLLUPS_TABLE, FAILED_JOBS_TABLE),
            SnsAlertSink::new(dynamodb, self.sns.clone(), ALERTS_TABLE, &self.topic_arn),
            rules,
        )
    }

    /// Projects the stream records not projected yet (`seen` counts those that were), as if they
    /// had been written at `clock`: time is a parameter, so tests simulate hours without waiting.
    pub async fn project_new(
        &self,
        processor: &StreamProcessor<DynamoProjectionStore, SnsAlertSink>,
        seen: &mut usize,
        clock: pipetel_model::Timestamp,
    ) -> pipetel_processors::processor::BatchReport {
        let records = self.read_stream().await;
        let new = records[*seen..]
            .iter()
            .cloned()
            .map(|record| {
                let mut decoded = pipetel_processors::decode::decode_record(record);
                decoded.written_at = Some(clock);
                decoded
            })
            .collect();
        *seen = records.len();
        let report = processor.process(new, clock).await;
        assert_eq!(report.first_failed_sequence, None, "{report:?}");
        report
    }

    /// One raw item of a table, by its key attribute.
    pub async fn item(
        &self,
        table: &str,
        key: &str,
        value: &str,
    ) -> Option<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
        self.dynamodb
            .get_item()
            .table_name(table)
            .key(
                key,
                aws_sdk_dynamodb::types::AttributeValue::S(value.to_owned()),
            )
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .item
    }

    /// The retry dispatcher with the production adapters, resubmitting to `machines`.
    pub fn dispatcher(
        &self,
        machines: StateMachines,
        rules: &pipetel_model::SlaRules,
    ) -> RetryDispatcher<DynamoRetryQueue, StepFunctionsTarget> {
        RetryDispatcher::new(
            DynamoRetryQueue::new(self.dynamodb.clone(), FAILED_JOBS_TABLE),
            StepFunctionsTarget::new(self.sfn.clone(), machines),
            rules.retry().clone(),
        )
    }

    /// A (pass-through) Step Functions state machine in moto; returns its ARN.
    pub async fn state_machine(&self, name: &str) -> String {
        self.sfn
            .create_state_machine()
            .name(name)
            .definition(r#"{"StartAt":"Run","States":{"Run":{"Type":"Pass","End":true}}}"#)
            .role_arn("arn:aws:iam::123456789012:role/pipetel-pipeline")
            .send()
            .await
            .unwrap()
            .state_machine_arn
    }

    /// Executions of a state machine: (name, input), oldest first.
    pub async fn executions(&self, state_machine_arn: &str) -> Vec<(String, serde_json::Value)> {
        let listed = self
            .sfn
            .list_executions()
            .state_machine_arn(state_machine_arn)
            .send()
            .await
            .unwrap();
        let mut executions = Vec::new();
        for execution in listed.executions {
            let described = self
                .sfn
                .describe_execution()
                .execution_arn(&execution.execution_arn)
                .send()
                .await
                .unwrap();
            let input = serde_json::from_str(described.input().unwrap_or("null")).unwrap();
            executions.push((described.start_date, execution.name, input));
        }
        executions.sort_by(|a, b| a.0.secs().cmp(&b.0.secs()).then(a.1.cmp(&b.1)));
        executions
            .into_iter()
            .map(|(_, name, input)| (name, input))
            .collect()
    }

    /// Writes events as a producer following the contract would (full-schema PutItem).
    pub async fn write_events(&self, events: &[StageEvent]) {
        for event in events {
            self.write_item(serde_dynamo::to_item(event.to_item()).unwrap())
                .await;
        }
    }

    pub async fn write_item(
        &self,
        item: std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
    ) {
        self.dynamodb
            .put_item()
            .table_name(EVENTS_TABLE)
            .set_item(Some(item))
            .send()
            .await
            .unwrap();
    }

    /// Every record of the table's stream so far, shard by shard, in the Lambda event shape.
    pub async fn read_stream(&self) -> Vec<EventRecord> {
        let stream = self
            .streams
            .describe_stream()
            .stream_arn(&self.stream_arn)
            .send()
            .await
            .unwrap()
            .stream_description
            .unwrap();
        let mut records = Vec::new();
        for shard in stream.shards.unwrap_or_default() {
            let mut iterator = self
                .streams
                .get_shard_iterator()
                .stream_arn(&self.stream_arn)
                .shard_id(shard.shard_id.unwrap())
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await
                .unwrap()
                .shard_iterator;
            while let Some(it) = iterator {
                let out = self
                    .streams
                    .get_records()
                    .shard_iterator(it)
                    .send()
                    .await
                    .unwrap();
                let batch = out.records.unwrap_or_default();
                if batch.is_empty() {
                    break;
                }
                records.extend(
                    batch
                        .into_iter()
                        .map(|r| to_lambda_record(r, &self.stream_arn)),
                );
                iterator = out.next_shard_iterator;
            }
        }
        records
    }

    pub async fn rollups(&self) -> Vec<JobRollup> {
        let mut items: Vec<JobRollup> = self.scan(ROLLUPS_TABLE).await;
        items.sort_by(|a, b| a.job_id.cmp(&b.job_id));
        items
    }

    pub async fn failed_jobs(&self) -> Vec<FailedJob> {
        let mut items: Vec<FailedJob> = self.scan(FAILED_JOBS_TABLE).await;
        items.sort_by(|a, b| a.pk.cmp(&b.pk));
        items
    }

    async fn scan<T: serde::de::DeserializeOwned>(&self, table: &str) -> Vec<T> {
        let out = self.dynamodb.scan().table_name(table).send().await.unwrap();
        serde_dynamo::from_items(out.items.unwrap_or_default()).unwrap()
    }

    /// Alerts delivered to the subscribed queue, with their message attributes checked.
    pub async fn received_alerts(&self) -> Vec<AlertMessage> {
        let mut alerts = Vec::new();
        loop {
            let out = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .message_attribute_names("All")
                .send()
                .await
                .unwrap();
            let messages = out.messages.unwrap_or_default();
            if messages.is_empty() {
                return alerts;
            }
            for message in messages {
                let alert: AlertMessage = serde_json::from_str(message.body().unwrap()).unwrap();
                let attributes = message.message_attributes.clone().unwrap_or_default();
                let attribute =
                    |name: &str| attributes.get(name).and_then(|a| a.string_value.clone());
                assert_eq!(attribute("kind").as_deref(), Some(alert.kind.as_str()));
                assert_eq!(attribute("source").as_deref(), Some(alert.source.as_str()));
                assert_eq!(
                    attribute("severity").as_deref(),
                    Some(alert.severity.as_str())
                );
                assert_eq!(attribute("state").as_deref(), Some(alert.state.as_str()));
                alerts.push(alert);
                self.sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(message.receipt_handle.unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
    }
}

type RequestHook = dyn Fn(&str, &str) -> Result<(), BoxError> + Send + Sync;

/// An SDK interceptor that sees each DynamoDB request's operation (e.g. `PutItem`) and JSON body
/// just before it is sent, and may fail it: to count requests or inject failures at the SDK layer.
#[derive(Clone)]
pub struct OnRequest(Arc<RequestHook>);

impl OnRequest {
    pub fn new(hook: impl Fn(&str, &str) -> Result<(), BoxError> + Send + Sync + 'static) -> Self {
        Self(Arc::new(hook))
    }
}

impl fmt::Debug for OnRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OnRequest")
    }
}

impl Intercept for OnRequest {
    fn name(&self) -> &'static str {
        "OnRequest"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request();
        let target = request.headers().get("x-amz-target").unwrap_or_default();
        let operation = target.rsplit('.').next().unwrap_or_default();
        (self.0)(
            operation,
            &String::from_utf8_lossy(request.body().bytes().unwrap_or_default()),
        )
    }
}

impl Stack {
    /// A DynamoDB client on this stack whose requests pass through `hook`.
    pub fn dynamodb_with(&self, hook: OnRequest) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&self.config)
                .interceptor(hook)
                .build(),
        )
    }
}

/// The records as the JSON Lambda would invoke the function with, parsed as the handler does.
pub fn lambda_batch(records: &[EventRecord]) -> StreamBatch {
    let mut event = Event::default();
    event.records = records.to_vec();
    serde_json::from_str(&serde_json::to_string(&event).unwrap()).unwrap()
}

/// A realistic day of events, shared by the integration tests and the demo.
pub mod scenario {
    use pipetel_model::{Name, RunDate, StageEvent, Status, Timestamp};

    /// An event on 2026-06-25; `lane` is `stage` or `category#stage`, `at` is `HH:MM:SS` UTC.
    pub fn event(source: &str, lane: &str, status: Status, at: &str) -> StageEvent {
        let name = |s: &str| Name::parse("name", s).unwrap();
        let (category, stage) = match lane.split_once('#') {
            Some((c, s)) => (Some(name(c)), name(s)),
            None => (None, name(lane)),
        };
        let at = Timestamp::parse("timestamp", &format!("2026-06-25T{at}Z")).unwrap();
        StageEvent::new(
            name(source),
            category,
            stage,
            RunDate::parse("20260625").unwrap(),
            status,
            at,
        )
        .unwrap()
    }

    /// One day: `sales` (category eu) succeeds after a retried clean and a slow convert; `orders` fails.
    pub fn day() -> Vec<StageEvent> {
        use Status::*;
        vec![
            event("sales", "job", Running, "01:00:00")
                .with_execution_id("arn:aws:states:us-east-1:1:execution:sales:1"),
            event("sales", "eu#extract", Running, "01:00:05"),
            event("sales", "eu#extract", Done, "01:10:00").with_file_fingerprint("sha256:9f2c"),
            event("sales", "eu#clean", Running, "01:10:05"),
            event("sales", "eu#clean", Failed, "01:15:00")
                .with_error("schema drift: column amount", Some("ValueError at row 17")),
            event("orders", "extract", Running, "03:00:00"),
            event("sales", "eu#clean", Running, "01:45:00").with_attempt(2),
            event("sales", "eu#clean", Done, "01:50:00"),
            event("sales", "eu#convert", Running, "01:50:05"),
            event("sales", "eu#convert", Done, "02:40:00"),
            event("orders", "extract", Failed, "03:05:00")
                .with_error("source API returned 503", None),
            event("sales", "eu#merge", Running, "02:40:05"),
            event("sales", "eu#merge", Done, "02:50:00"),
            event("sales", "job", Succeeded, "02:50:05"),
        ]
    }
}
