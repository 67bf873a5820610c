//! The DynamoDB tables as `infra/template.yaml` defines them. `pipetel tables create` and the
//! integration tests create local tables from these definitions, so local and deployed tables
//! cannot drift: the template is the one source of truth.

use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType, TableStatus,
    TimeToLiveSpecification,
};
use serde::Deserialize;

/// The deployment template, compiled in.
pub const TEMPLATE: &str = include_str!("../../infra/template.yaml");

/// How the template names tables: `Fn::Sub: "${TablePrefix}<name>"`.
const PREFIX_PARAMETER: &str = "${TablePrefix}";
/// Checks, and how long to wait in all, for a new table to become ACTIVE.
const ACTIVE_POLL: Duration = Duration::from_millis(200);
const ACTIVE_POLLS: u32 = 150;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("infra/template.yaml is not a readable CloudFormation template")]
    Template(#[source] yaml_serde::Error),
    #[error("table resource {resource}: {reason}")]
    Definition { resource: String, reason: String },
    #[error("table {table}: {operation} failed")]
    Aws {
        table: String,
        operation: &'static str,
        #[source]
        source: BoxError,
    },
    #[error("table {table} did not become ACTIVE")]
    NotActive { table: String },
}

/// The names of one deployment's tables: the contract's names behind the template's
/// `TablePrefix` parameter (empty in production).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableNames {
    pub prefix: String,
    pub events: String,
    pub rollups: String,
    pub failed_jobs: String,
    pub alerts: String,
    pub checkpoints: String,
}

impl TableNames {
    pub fn with_prefix(prefix: &str) -> Self {
        let name = |base: &str| format!("{prefix}{base}");
        Self {
            prefix: prefix.to_owned(),
            events: name("pipeline-logs"),
            rollups: name("job-rollups"),
            failed_jobs: name("failed-jobs"),
            alerts: name("sla-alerts"),
            checkpoints: name("pipetel-checkpoints"),
        }
    }

    /// Every table of the deployment.
    pub fn all(&self) -> [&String; 5] {
        [
            &self.events,
            &self.rollups,
            &self.failed_jobs,
            &self.alerts,
            &self.checkpoints,
        ]
    }
}

/// One `AWS::DynamoDB::Table` of the template, with what a local table needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDefinition {
    /// The name without the prefix, e.g. `pipeline-logs`.
    pub base_name: String,
    pub attributes: Vec<(String, String)>,
    pub key_schema: Vec<(String, String)>,
    pub indexes: Vec<IndexDefinition>,
    pub stream_view_type: Option<String>,
    pub ttl_attribute: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexDefinition {
    pub name: String,
    pub key_schema: Vec<(String, String)>,
    pub projection_type: String,
    pub non_key_attributes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Template {
    resources: std::collections::BTreeMap<String, Resource>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Resource {
    #[serde(rename = "Type")]
    kind: String,
    #[serde(default)]
    properties: yaml_serde::Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TableProperties {
    table_name: yaml_serde::Value,
    attribute_definitions: Vec<RawAttribute>,
    key_schema: Vec<RawKey>,
    #[serde(default)]
    global_secondary_indexes: Vec<RawIndex>,
    stream_specification: Option<RawStream>,
    time_to_live_specification: Option<RawTtl>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawAttribute {
    attribute_name: String,
    attribute_type: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawKey {
    attribute_name: String,
    key_type: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawIndex {
    index_name: String,
    key_schema: Vec<RawKey>,
    projection: RawProjection,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawProjection {
    projection_type: String,
    #[serde(default)]
    non_key_attributes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawStream {
    stream_view_type: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawTtl {
    attribute_name: String,
    enabled: bool,
}

/// The tables of the compiled-in template.
pub fn definitions() -> Result<Vec<TableDefinition>, TableError> {
    parse_definitions(TEMPLATE)
}

/// The `AWS::DynamoDB::Table` resources of a template, in resource order.
pub fn parse_definitions(template: &str) -> Result<Vec<TableDefinition>, TableError> {
    let template: Template = yaml_serde::from_str(template).map_err(TableError::Template)?;
    template
        .resources
        .into_iter()
        .filter(|(_, resource)| resource.kind == "AWS::DynamoDB::Table")
        .map(|(resource, table)| {
            let props: TableProperties =
                yaml_serde::from_value(table.properties).map_err(|e| TableError::Definition {
                    resource: resource.clone(),
                    reason: e.to_string(),
                })?;
            let base_name = base_name(&props.table_name).ok_or_else(|| TableError::Definition {
                resource: resource.clone(),
                reason: format!("TableName must be Fn::Sub \"{PREFIX_PARAMETER}<name>\""),
            })?;
            let keys = |keys: Vec<RawKey>| {
                keys.into_iter()
                    .map(|k| (k.attribute_name, k.key_type))
                    .collect()
            };
            Ok(TableDefinition {
                base_name,
                attributes: props
                    .attribute_definitions
                    .into_iter()
                    .map(|a| (a.attribute_name, a.attribute_type))
                    .collect(),
                key_schema: keys(props.key_schema),
                indexes: props
                    .global_secondary_indexes
                    .into_iter()
                    .map(|index| IndexDefinition {
                        name: index.index_name,
                        key_schema: keys(index.key_schema),
                        projection_type: index.projection.projection_type,
                        non_key_attributes: index.projection.non_key_attributes,
                    })
                    .collect(),
                stream_view_type: props.stream_specification.map(|s| s.stream_view_type),
                ttl_attribute: props
                    .time_to_live_specification
                    .filter(|ttl| ttl.enabled)
                    .map(|ttl| ttl.attribute_name),
            })
        })
        .collect()
}

fn base_name(table_name: &yaml_serde::Value) -> Option<String> {
    let sub = table_name.get("Fn::Sub")?.as_str()?;
    sub.strip_prefix(PREFIX_PARAMETER).map(str::to_owned)
}

/// What `create_tables` did to one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    New(String),
    AlreadyThere(String),
}

/// Creates every table of the template under `prefix` (on-demand), waits until each is ACTIVE
/// and turns on its TTL. Tables that already exist are left as they are.
pub async fn create_tables(
    client: &aws_sdk_dynamodb::Client,
    prefix: &str,
) -> Result<Vec<Created>, TableError> {
    let mut created = Vec::new();
    for definition in definitions()? {
        created.push(create_table(client, &definition, prefix).await?);
    }
    Ok(created)
}

async fn create_table(
    client: &aws_sdk_dynamodb::Client,
    definition: &TableDefinition,
    prefix: &str,
) -> Result<Created, TableError> {
    let table = format!("{prefix}{}", definition.base_name);
    let aws = |operation: &'static str| {
        let table = table.clone();
        move |source: BoxError| TableError::Aws {
            table,
            operation,
            source,
        }
    };
    let invalid = |reason: String| TableError::Definition {
        resource: definition.base_name.clone(),
        reason,
    };
    let mut request = client
        .create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .set_key_schema(Some(key_schema(&definition.key_schema).map_err(invalid)?));
    for (name, kind) in &definition.attributes {
        request = request.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::from(kind.as_str()))
                .build()
                .map_err(|e| aws("CreateTable")(e.into()))?,
        );
    }
    for index in &definition.indexes {
        let projection = Projection::builder()
            .projection_type(ProjectionType::from(index.projection_type.as_str()))
            .set_non_key_attributes(
                (!index.non_key_attributes.is_empty()).then(|| index.non_key_attributes.clone()),
            )
            .build();
        request = request.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(&index.name)
                .set_key_schema(Some(key_schema(&index.key_schema).map_err(invalid)?))
                .projection(projection)
                .build()
                .map_err(|e| aws("CreateTable")(e.into()))?,
        );
    }
    if let Some(view) = &definition.stream_view_type {
        request = request.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::from(view.as_str()))
                .build()
                .map_err(|e| aws("CreateTable")(e.into()))?,
        );
    }
    match request.send().await {
        Ok(_) => {}
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception()) =>
        {
            return Ok(Created::AlreadyThere(table));
        }
        Err(err) => return Err(aws("CreateTable")(err.into())),
    }
    wait_until_active(client, &table).await?;
    if let Some(attribute) = &definition.ttl_attribute {
        client
            .update_time_to_live()
            .table_name(&table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(attribute)
                    .enabled(true)
                    .build()
                    .map_err(|e| aws("UpdateTimeToLive")(e.into()))?,
            )
            .send()
            .await
            .map_err(|e| aws("UpdateTimeToLive")(e.into()))?;
    }
    Ok(Created::New(table))
}

fn key_schema(keys: &[(String, String)]) -> Result<Vec<KeySchemaElement>, String> {
    keys.iter()
        .map(|(name, kind)| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(KeyType::from(kind.as_str()))
                .build()
                .map_err(|e| e.to_string())
        })
        .collect()
}

async fn wait_until_active(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<(), TableError> {
    for _ in 0..ACTIVE_POLLS {
        let status = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| TableError::Aws {
                table: table.to_owned(),
                operation: "DescribeTable",
                source: e.into(),
            })?
            .table
            .and_then(|t| t.table_status);
        if status == Some(TableStatus::Active) {
            return Ok(());
        }
        tokio::time::sleep(ACTIVE_POLL).await;
    }
    Err(TableError::NotActive {
        table: table.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_defines_the_contract_tables_with_their_indexes() {
        let tables = definitions().unwrap();
        let names: Vec<_> = tables.iter().map(|t| t.base_name.as_str()).collect();
        for wanted in TableNames::with_prefix("").all() {
            assert!(names.contains(&wanted.as_str()), "{wanted} in {names:?}");
        }
        let events = tables
            .iter()
            .find(|t| t.base_name == "pipeline-logs")
            .unwrap();
        assert_eq!(
            events.key_schema,
            [("pk".into(), "HASH".into()), ("sk".into(), "RANGE".into())]
        );
        assert_eq!(
            events.stream_view_type.as_deref(),
            Some("NEW_AND_OLD_IMAGES")
        );
        assert_eq!(events.ttl_attribute.as_deref(), Some("ttl"));
        let index_names: Vec<_> = events.indexes.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(index_names, ["by-job", "by-source-date", "by-status"]);
        // Every key attribute, of the table and of its indexes, is declared.
        for table in &tables {
            let declared: Vec<_> = table.attributes.iter().map(|(n, _)| n).collect();
            let keys = table
                .key_schema
                .iter()
                .chain(table.indexes.iter().flat_map(|i| &i.key_schema));
            for (key, _) in keys {
                assert!(declared.contains(&key), "{}: {key}", table.base_name);
            }
        }
    }

    #[test]
    fn a_table_named_without_the_prefix_parameter_is_refused() {
        let template = r#"
Resources:
  Events:
    Type: AWS::DynamoDB::Table
    Properties:
      TableName: pipeline-logs
      AttributeDefinitions: [{AttributeName: pk, AttributeType: S}]
      KeySchema: [{AttributeName: pk, KeyType: HASH}]
"#;
        let err = parse_definitions(template).unwrap_err();
        assert!(matches!(err, TableError::Definition { ref resource, .. } if resource == "Events"));
    }

    #[test]
    fn a_broken_template_is_a_typed_error() {
        assert!(matches!(
            parse_definitions("Resources: [unclosed"),
            Err(TableError::Template(_))
        ));
    }
}
