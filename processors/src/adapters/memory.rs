//! In-memory adapters with the same semantics as the AWS ones (conditions included), for unit
//! tests and benchmarks. They count requests, so tests can assert on coalescing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use pipetel_model::{AlertMessage, Breach, FailedJob, JobRollup, Timestamp};

use crate::ports::{AlertError, AlertSink, ProjectionStore, Raised, StoreError};

/// Requests an adapter received, by kind.
#[derive(Debug, Default)]
pub struct RequestCounts {
    pub reads: AtomicUsize,
    pub writes: AtomicUsize,
}

impl RequestCounts {
    pub fn reads(&self) -> usize {
        self.reads.load(Ordering::Relaxed)
    }

    pub fn writes(&self) -> usize {
        self.writes.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
pub struct MemoryStore {
    rollups: Mutex<HashMap<String, JobRollup>>,
    failed_jobs: Mutex<BTreeMap<String, FailedJob>>,
    failing_jobs: Mutex<HashSet<String>>,
    pub requests: RequestCounts,
}

impl MemoryStore {
    pub fn rollups(&self) -> BTreeMap<String, JobRollup> {
        self.rollups.lock().unwrap().clone().into_iter().collect()
    }

    pub fn failed_jobs(&self) -> BTreeMap<String, FailedJob> {
        self.failed_jobs.lock().unwrap().clone()
    }

    /// Makes every rollup write of `job_id` fail, as a throttled or unavailable table would.
    pub fn fail_writes_of(&self, job_id: &str) {
        self.failing_jobs.lock().unwrap().insert(job_id.to_owned());
    }

    pub fn heal(&self) {
        self.failing_jobs.lock().unwrap().clear();
    }
}

impl ProjectionStore for MemoryStore {
    async fn get_rollups(
        &self,
        job_ids: &[String],
    ) -> Result<HashMap<String, JobRollup>, StoreError> {
        self.requests.reads.fetch_add(1, Ordering::Relaxed);
        let rollups = self.rollups.lock().unwrap();
        Ok(job_ids
            .iter()
            .filter_map(|id| rollups.get(id).map(|r| (id.clone(), r.clone())))
            .collect())
    }

    async fn put_rollup(
        &self,
        rollup: &JobRollup,
        expected_revision: Option<&str>,
    ) -> Result<(), StoreError> {
        self.requests.writes.fetch_add(1, Ordering::Relaxed);
        if self.failing_jobs.lock().unwrap().contains(&rollup.job_id) {
            return Err(StoreError::Unavailable {
                table: "job-rollups".into(),
                operation: "PutItem",
                source: "injected failure: ProvisionedThroughputExceededException".into(),
            });
        }
        let mut rollups = self.rollups.lock().unwrap();
        let current = rollups.get(&rollup.job_id).map(|r| r.revision.as_str());
        if current != expected_revision {
            return Err(StoreError::Conflict {
                table: "job-rollups".into(),
                key: rollup.job_id.clone(),
            });
        }
        rollups.insert(rollup.job_id.clone(), rollup.clone());
        Ok(())
    }

    async fn put_failed_job(&self, entry: &FailedJob) -> Result<(), StoreError> {
        self.requests.writes.fetch_add(1, Ordering::Relaxed);
        let mut entries = self.failed_jobs.lock().unwrap();
        if entries
            .get(&entry.pk)
            .is_none_or(|e| e.events_seen <= entry.events_seen)
        {
            entries.insert(entry.pk.clone(), entry.clone());
        }
        Ok(())
    }
}

/// A ledger and a topic in memory: what was published, once per `alert_id`.
#[derive(Default)]
pub struct MemoryAlerts {
    ledger: Mutex<HashSet<String>>,
    published: Mutex<Vec<AlertMessage>>,
    pub requests: RequestCounts,
}

impl MemoryAlerts {
    pub fn published(&self) -> Vec<AlertMessage> {
        self.published.lock().unwrap().clone()
    }
}

impl AlertSink for MemoryAlerts {
    async fn raise(
        &self,
        breaches: &[Breach],
        detected_at: Timestamp,
    ) -> Result<Raised, AlertError> {
        let mut raised = Raised::default();
        for breach in breaches {
            self.requests.writes.fetch_add(1, Ordering::Relaxed);
            if self.ledger.lock().unwrap().insert(breach.alert_id()) {
                self.published
                    .lock()
                    .unwrap()
                    .push(breach.message(detected_at));
                raised.published += 1;
            } else {
                raised.already_published += 1;
            }
        }
        Ok(raised)
    }
}
