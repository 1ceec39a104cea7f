-- The event log and its cases, loaded from the Parquet files the transform wrote ($event_log, $cases).
-- event_log.parquet is sorted by case_id, timestamp (then activity, event_id); DuckDB keeps that insertion order.
CREATE TABLE event_log AS
SELECT * FROM read_parquet(getvariable('event_log_path'));

CREATE TABLE cases AS
SELECT * FROM read_parquet(getvariable('cases_path')) ORDER BY case_id;

-- pm4py's standard column names (case:concept:name, concept:name, time:timestamp, org:resource).
CREATE VIEW event_log_pm4py AS
SELECT case_id AS "case:concept:name", activity AS "concept:name", "timestamp" AS "time:timestamp",
       resource AS "org:resource", case_type, object_type, object_id, source, event_id
FROM event_log;
