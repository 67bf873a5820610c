-- pipetel analytics on Redshift over the DynamoDB zero-ETL integrations.
--
-- Run once, as a superuser, on the target warehouse (Serverless namespace or RA3 cluster).
-- The stack (infra/template.yaml, RedshiftNamespaceArn set) creates one integration per
-- projection table: <stack>-job-rollups and <stack>-failed-jobs.
--
-- ASSUMPTIONS (check against SVV_INTEGRATION / the replicated tables before relying on them):
--  * Each integration lands in its own read-only destination database, created FROM INTEGRATION.
--    Destination databases are read-only: the views live in a normal database (here `analytics`,
--    schema `pipetel`) and read the replicas with three-part names (cross-database queries),
--    hence the views are late-binding (WITH NO SCHEMA BINDING).
--  * A replicated DynamoDB table has one column per key attribute (job-rollups: job_id;
--    failed-jobs: pk) plus a SUPER column `value` holding the whole item in DynamoDB JSON
--    (typed: {"status": {"S": "FAILED"}, "attempts": {"N": "2"}, "finished_at": {"NULL": true},
--    "stages": {"M": {...}}, "events": {"L": [...]}}). Numbers arrive as strings under "N".
--  * Table names keep the DynamoDB names, so they need double quotes ("job-rollups"). With a
--    TablePrefix, use "<prefix>job-rollups".
--  * Zero-ETL requires enable_case_sensitive_identifier = true on the warehouse; the views also
--    need it in the session, because the DynamoDB JSON type tags ("S", "N", "M") are upper case.

-- 1) Destination databases (integration ids from: SELECT integration_id, source FROM svv_integration;)
-- CREATE DATABASE pipetel_rollups  FROM INTEGRATION '<job-rollups integration id>';
-- CREATE DATABASE pipetel_failures FROM INTEGRATION '<failed-jobs integration id>';

-- 2) Analytics database and schema for the views
-- CREATE DATABASE analytics;
-- \c analytics
SET enable_case_sensitive_identifier TO true;
CREATE SCHEMA IF NOT EXISTS pipetel;

-- 3) Then run 10_job_rollups.sql, 20_job_stages.sql, 30_failed_jobs.sql in `analytics`.
