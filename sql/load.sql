-- The event log, its cases and who did each event, loaded from the Parquet files the transform wrote.
-- event_log.parquet is sorted by case_id, timestamp (then activity, event_id); DuckDB keeps that insertion order.
CREATE TABLE event_log AS
SELECT * FROM read_parquet(getvariable('event_log_path'));

CREATE TABLE cases AS
SELECT * FROM read_parquet(getvariable('cases_path')) ORDER BY case_id;

-- Who did each event (user ids; the log keeps their names): OCEL exports link events to user objects with it.
CREATE TABLE event_resources AS
SELECT event_id, user_id FROM read_parquet(getvariable('event_users_path'));

-- pm4py's standard column names (case:concept:name, concept:name, time:timestamp, org:resource).
CREATE VIEW event_log_pm4py AS
SELECT case_id AS "case:concept:name", activity AS "concept:name", "timestamp" AS "time:timestamp",
       resource AS "org:resource", case_type, object_type, object_id, source, event_id
FROM event_log;
