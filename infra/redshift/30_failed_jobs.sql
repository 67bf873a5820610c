-- pipetel.failed_jobs: the failed-jobs projection (retry queue), one row per failed stage run.
-- Key pk = the failed stage's event-log pk ({source}[#{category}]#{stage}#{run_date}).
-- next_retry_at exists only on PENDING entries (sparse index attribute): NULL otherwise.
SET enable_case_sensitive_identifier TO true;

CREATE OR REPLACE VIEW pipetel.failed_jobs AS
SELECT
    f.pk::varchar(300)                                                    AS pk,
    f.value."job_id"."S"::varchar(200)                                    AS job_id,
    f.value."source"."S"::varchar(64)                                     AS source,
    f.value."category"."S"::varchar(64)                                   AS category,
    f.value."stage"."S"::varchar(64)                                      AS stage,
    f.value."run_date"."S"::varchar(8)                                    AS run_date,
    f.value."failed_at"."S"::varchar(20)::timestamptz                     AS failed_at,
    f.value."error_summary"."S"::varchar(2000)                            AS error_summary,
    f.value."error_details"."S"::varchar(4000)                            AS error_details,
    f.value."failure_count"."N"::varchar(32)::int                         AS failure_count,
    f.value."retry_state"."S"::varchar(16)                                AS retry_state,
    f.value."next_retry_at"."S"::varchar(40)                              AS next_retry_at,
    -- ttl is epoch seconds (N): expose it as a timestamp.
    TIMESTAMP 'epoch' + f.value."ttl"."N"::varchar(32)::bigint * INTERVAL '1 second' AS expires_at
FROM pipetel_failures.public."failed-jobs" AS f
WITH NO SCHEMA BINDING;

-- Example: failure rate per source and stage, last 30 days
-- SELECT j.source, j.stage, count(*) AS runs,
--        sum(CASE WHEN j.status = 'FAILED' THEN 1 ELSE 0 END) AS failed_now,
--        (SELECT count(*) FROM pipetel.failed_jobs f WHERE f.source = j.source AND f.stage = j.stage
--           AND f.run_date >= to_char(current_date - 30, 'YYYYMMDD')) AS ever_failed
-- FROM pipetel.job_stages j
-- WHERE j.run_date >= to_char(current_date - 30, 'YYYYMMDD')
-- GROUP BY 1, 2;
