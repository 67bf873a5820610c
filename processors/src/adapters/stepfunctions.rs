//! Resubmission of failed stages to the pipeline's Step Functions state machine.
//!
//! `StartExecution` with the entry's idempotent execution name and a deterministic input
//! (`source`, `category`, `stage`, `run_date`, `job_id`, `attempt`): Step Functions refuses a
//! second execution of that name (`ExecutionAlreadyExists`), which means an earlier dispatch got
//! through, not an error.

use std::collections::BTreeMap;

use pipetel_model::{Dispatch, Name};

use crate::ports::{RetryError, RetryTarget, Submitted};

/// Which state machine runs each source: a per-source map plus an optional default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateMachines {
    pub default: Option<String>,
    pub by_source: BTreeMap<Name, String>,
}

impl StateMachines {
    /// Parses `source=arn,source=arn` (spaces around entries are ignored).
    pub fn parse(default: Option<String>, by_source: &str) -> Result<Self, String> {
        let mut map = BTreeMap::new();
        for entry in by_source
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let (source, arn) = entry
                .split_once('=')
                .ok_or_else(|| format!("{entry:?} is not source=arn"))?;
            let source = Name::parse("source", source.trim()).map_err(|e| e.to_string())?;
            let arn = arn.trim();
            if !arn.starts_with("arn:") {
                return Err(format!("{source}: {arn:?} is not an ARN"));
            }
            map.insert(source, arn.to_owned());
        }
        Ok(Self {
            default,
            by_source: map,
        })
    }

    pub fn for_source(&self, source: &Name) -> Option<&str> {
        self.by_source
            .get(source)
            .or(self.default.as_ref())
            .map(String::as_str)
    }
}

pub struct StepFunctionsTarget {
    client: aws_sdk_sfn::Client,
    machines: StateMachines,
}

impl StepFunctionsTarget {
    pub fn new(client: aws_sdk_sfn::Client, machines: StateMachines) -> Self {
        Self { client, machines }
    }
}

impl RetryTarget for StepFunctionsTarget {
    async fn submit(&self, dispatch: &Dispatch) -> Result<Submitted, RetryError> {
        let source = &dispatch.entry.source;
        let arn = self
            .machines
            .for_source(source)
            .ok_or_else(|| RetryError::NoTarget {
                source_name: source.clone(),
            })?;
        let failed = |e: Box<dyn std::error::Error + Send + Sync>| RetryError::Submit {
            target: arn.to_owned(),
            source: e,
        };
        let input = serde_json::to_string(&dispatch.input()).map_err(|e| failed(e.into()))?;
        let result = self
            .client
            .start_execution()
            .state_machine_arn(arn)
            .name(&dispatch.execution_name)
            .input(input)
            .send()
            .await;
        match result {
            Ok(out) => Ok(Submitted::Started {
                run_id: out.execution_arn,
            }),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_execution_already_exists()) =>
            {
                Ok(Submitted::AlreadyStarted)
            }
            Err(err) => Err(failed(err.into())),
        }
    }
}
