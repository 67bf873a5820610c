-- pipetel.job_stages: the rollups' `stages` map flattened to one row per (job_id, stage).
--
-- Each entry of the `stages` map (DynamoDB M) is keyed by the stage name, or by
-- "category#stage" when the events carry a category, and holds:
--   category (S|NULL), stage (S), status (S), started_at (S|NULL), finished_at (S|NULL),
--   duration_seconds (N|NULL), attempts (N), error_summary (S|NULL), file_fingerprint (S|NULL),
--   events (L of S: the event sort keys folded in; internal, not exposed here),
--   last_failure (M|NULL).
-- The map key (stage_key) is kept because it is the unique name of the stage within the job;
-- category/stage are read from the entry itself rather than parsed out of the key.
--
-- PartiQL: `UNPIVOT <super object> AS value AT key` iterates the attributes of a SUPER object.
-- In DynamoDB JSON the map is under the "M" tag, and each entry is itself {"M": {...}}.
SET enable_case_sensitive_identifier TO true;

CREATE OR REPLACE VIEW pipetel.job_stages AS
SELECT
    r.job_id::varchar(200)                                                  AS job_id,
    r.value."source"."S"::varchar(64)                                       AS source,
    r.value."run_date"."S"::varchar(8)                                      AS run_date,
    stage_key::varchar(200)                                                 AS stage_key,
    s."M"."category"."S"::varchar(64)                                       AS category,
    s."M"."stage"."S"::varchar(64)                                          AS stage,
    s."M"."status"."S"::varchar(16)                                         AS status,
    s."M"."started_at"."S"::varchar(20)::timestamptz                        AS started_at,
    s."M"."finished_at"."S"::varchar(20)::timestamptz                       AS finished_at,
    s."M"."duration_seconds"."N"::varchar(32)::decimal(18, 3)               AS duration_seconds,
    s."M"."attempts"."N"::varchar(32)::int                                  AS attempts,
    s."M"."error_summary"."S"::varchar(2000)                                AS error_summary,
    s."M"."file_fingerprint"."S"::varchar(256)                              AS file_fingerprint,
    -- last_failure is a map or NULL; its inner layout is internal to the processors, so it is
    -- exposed as SUPER (still in DynamoDB JSON, e.g. last_failure."<field>"."S").
    s."M"."last_failure"."M"                                                AS last_failure
FROM pipetel_rollups.public."job-rollups" AS r,
     UNPIVOT r.value."stages"."M" AS s AT stage_key
WITH NO SCHEMA BINDING;

-- Example: slowest stages of the last 7 days
-- SELECT source, stage, percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_seconds) AS p95_s
-- FROM pipetel.job_stages
-- WHERE run_date >= to_char(current_date - 7, 'YYYYMMDD') AND status = 'DONE'
-- GROUP BY 1, 2 ORDER BY p95_s DESC;
