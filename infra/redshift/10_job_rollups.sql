-- pipetel.job_rollups: one row per job (job-rollups projection), typed columns.
-- See 00_setup.sql for the assumptions about the replicated layout.
SET enable_case_sensitive_identifier TO true;

CREATE OR REPLACE VIEW pipetel.job_rollups AS
SELECT
    r.job_id::varchar(200)                                               AS job_id,
    r.value."source"."S"::varchar(64)                                    AS source,
    r.value."run_date"."S"::varchar(8)                                   AS run_date,
    r.value."status"."S"::varchar(16)                                    AS status,
    -- ISO 8601 UTC strings ('2026-06-25T11:30:56Z'); {"NULL": true} yields SQL NULL.
    r.value."started_at"."S"::varchar(20)::timestamptz                   AS started_at,
    r.value."finished_at"."S"::varchar(20)::timestamptz                  AS finished_at,
    r.value."duration_seconds"."N"::varchar(32)::decimal(18, 3)          AS duration_seconds,
    r.value."last_event_at"."S"::varchar(20)::timestamptz                AS last_event_at,
    r.value."event_count"."N"::varchar(32)::bigint                       AS event_count,
    r.value."updated_at"."S"::varchar(40)                                AS updated_at
FROM pipetel_rollups.public."job-rollups" AS r
WITH NO SCHEMA BINDING;
