-- The HTML report's queries (exports/report.py), over l2c.duckdb opened read-only: one block per `-- name:` line.
-- Headline numbers come from the analysis views' total rows ('(all)', 'any'): GROUPING SETS compute those over
-- every row at once, so an overall median is the median of all durations, never a mean of segment medians.

-- name: header
SELECT count(*) AS events, count(DISTINCT case_id) AS cases, count(DISTINCT activity) AS activities,
       min("timestamp") AS first_at, max("timestamp") AS last_at,
       (SELECT count(*) FROM cases WHERE case_type = 'opportunity') AS opportunities,
       (SELECT max_discount_pct FROM policy) AS policy_pct
FROM event_log;

-- name: activities
-- Per activity: frequency, its object type (for the colour) and its typical position: the median over cases of
-- the position of its first event in the case. An activity is on the map when it happens at least $min_share
-- times per case on average and is among the $max_activities most frequent.
WITH ordered AS (
    SELECT case_id, activity,
           row_number() OVER (PARTITION BY case_id ORDER BY "timestamp", activity, event_id) AS pos
    FROM event_log
), firsts AS (
    SELECT activity, median(first_pos) AS position
    FROM (SELECT case_id, activity, min(pos) AS first_pos FROM ordered GROUP BY case_id, activity)
    GROUP BY activity
), counted AS (
    SELECT activity, count(*) AS events, count(DISTINCT case_id) AS cases, mode(object_type) AS object_type,
           row_number() OVER (ORDER BY count(*) DESC, activity) AS frequency_rank
    FROM event_log GROUP BY activity
)
SELECT c.activity, c.events, c.cases, c.object_type, f.position, c.frequency_rank,
       c.events >= $min_share * (SELECT count(DISTINCT case_id) FROM event_log)
       AND c.frequency_rank <= $max_activities AS shown
FROM counted c JOIN firsts f USING (activity)
ORDER BY c.frequency_rank;

-- name: transitions
-- The directly-follows edges between the activities on the map ($shown): the $max_edges most frequent, plus, for
-- an activity none of those touch, its most frequent edge in or out (self-loops aside), so none floats alone.
WITH candidates AS (
    SELECT d.* FROM v_dfg d
    WHERE list_contains($shown, d.from_activity) AND list_contains($shown, d.to_activity)
), ranked AS (
    SELECT *, row_number() OVER (ORDER BY edges DESC, from_activity, to_activity) AS frequency_rank
    FROM candidates
), touched AS (
    SELECT from_activity AS activity FROM ranked WHERE frequency_rank <= $max_edges
    UNION SELECT to_activity FROM ranked WHERE frequency_rank <= $max_edges
), rescue AS (
    SELECT activity, arg_max(frequency_rank, edges) AS frequency_rank
    FROM (SELECT from_activity AS activity, frequency_rank, edges FROM ranked WHERE from_activity <> to_activity
          UNION ALL
          SELECT to_activity, frequency_rank, edges FROM ranked WHERE from_activity <> to_activity)
    WHERE activity NOT IN (SELECT activity FROM touched)
    GROUP BY activity
)
SELECT from_activity, to_activity, edges, cases, median_wait_hours, p90_wait_hours
FROM ranked
WHERE frequency_rank <= $max_edges OR frequency_rank IN (SELECT frequency_rank FROM rescue)
ORDER BY frequency_rank;

-- name: all_transitions
SELECT count(*) AS edges FROM v_dfg;

-- name: slowest
-- The slowest transitions seen at least $min_support times, by median wait.
SELECT from_activity, to_activity, edges, cases, median_wait_hours, p90_wait_hours
FROM v_dfg WHERE edges >= $min_support
ORDER BY median_wait_hours DESC, edges DESC, from_activity, to_activity
LIMIT 10;

-- name: variants
SELECT rank, variant, cases, share, cumulative_share, events, median_case_days,
       (SELECT count(*) FROM v_variants) AS variants
FROM v_variants ORDER BY rank LIMIT 10;

-- name: rework
SELECT rework, occurrences, cases, opportunities, share_of_opportunities FROM v_rework;

-- name: discount_reps
SELECT segment AS rep, quotes, discounted_quotes, avg_discount_pct, max_discount_pct, policy_pct, above_policy,
       share_above_policy
FROM v_discount_by_rep WHERE dimension = 'rep'
ORDER BY share_above_policy DESC, above_policy DESC, rep;

-- name: discount_quotes
-- The individual quotes furthest above policy, with who gave the discount.
SELECT q.number, q.revision, q.owner, a.account, q.discount_pct, q.total_amount::DOUBLE AS total_amount,
       c.currency
FROM quotes q LEFT JOIN accounts a USING (account_id) LEFT JOIN cases c ON c.case_id = q.opportunity_id
CROSS JOIN policy p
WHERE q.discount_pct > p.max_discount_pct
ORDER BY q.discount_pct DESC, q.total_amount DESC, q.number, q.revision
LIMIT 10;

-- name: quality
SELECT s."check", s.severity, s.issues, s.objects, e.example
FROM v_quality_summary s
LEFT JOIN (SELECT "check", severity, min(detail) AS example FROM quality_issues GROUP BY "check", severity) e
  USING ("check", severity)
ORDER BY s.severity = 'error' DESC, s.issues DESC, s."check";

-- name: conversion
SELECT lead_source, leads, qualified, disqualified, open, won, qualification_rate, win_rate, lead_to_won_rate
FROM v_conversion_by_lead_source
ORDER BY lead_source = '(all)', qualification_rate DESC NULLS LAST, lead_source;

-- name: kpis
-- One row: every tile's headline and the numbers of its sub-line, each view's total row(s) read once.
WITH lead_time AS (SELECT * FROM v_lead_to_opportunity_time WHERE lead_source = '(all)'),
cycle AS (
    SELECT any_value(median_days) FILTER (outcome = '(all)') AS days,
           any_value(opportunities) FILTER (outcome = '(all)') AS n,
           any_value(median_days) FILTER (outcome = 'Won') AS won,
           any_value(median_days) FILTER (outcome = 'Lost') AS lost
    FROM v_sales_cycle_time WHERE region = '(all)'
), approval AS (
    SELECT any_value(median_hours) FILTER (discount_band = '(all)') AS hours,
           any_value(median_hours) FILTER (discount_band = 'above policy') AS above,
           any_value(median_hours) FILTER (discount_band = 'no discount') AS none
    FROM v_quote_approval_time
), discount AS (SELECT * FROM v_discount_by_rep WHERE dimension = '(all)'),
rework AS (SELECT * FROM v_rework WHERE rework = 'any'),
quote_order AS (SELECT * FROM v_quote_to_order WHERE region = '(all)'),
fulfilment AS (SELECT * FROM v_order_fulfilment WHERE region = '(all)'),
invoicing AS (SELECT * FROM v_fulfilment_to_invoice WHERE region = '(all)'),
dso AS (SELECT * FROM v_dso_by_terms WHERE payment_terms = '(all)' AND region = '(all)'),
conversion AS (SELECT * FROM v_conversion_by_lead_source WHERE lead_source = '(all)')
SELECT lead_time.median_days AS lead_to_opportunity_days, lead_time.p90_days AS lead_to_opportunity_p90,
       lead_time.opportunities AS lead_to_opportunity_n,
       cycle.days AS sales_cycle_days, cycle.n AS sales_cycle_n, cycle.won AS sales_cycle_won,
       cycle.lost AS sales_cycle_lost,
       approval.hours AS approval_hours, approval.above AS approval_above, approval.none AS approval_none,
       discount.share_above_policy AS discount_share, discount.above_policy AS discount_above,
       discount.quotes AS discount_quotes, (SELECT max_discount_pct FROM policy) AS policy_pct,
       rework.share_of_opportunities AS rework_share, rework.cases AS rework_cases,
       (SELECT count(*) FROM cases WHERE case_type = 'opportunity') AS opportunities,
       quote_order.median_days AS quote_to_order_days, quote_order.p90_days AS quote_to_order_p90,
       quote_order.orders AS quote_to_order_n,
       fulfilment.median_days_to_fulfil AS fulfilment_days, fulfilment.orders AS fulfilment_orders,
       fulfilment.fulfilled AS fulfilment_fulfilled, fulfilment.canceled AS fulfilment_canceled,
       invoicing.median_days AS invoicing_days, invoicing.invoiced_orders AS invoicing_n,
       invoicing.fulfilled_not_invoiced AS invoicing_missing,
       dso.median_days_to_pay AS dso_days, dso.amount_weighted_days_to_pay AS dso_weighted,
       dso.share_paid_late AS dso_late, dso.paid AS dso_paid,
       conversion.qualification_rate AS conversion_rate, conversion.leads AS conversion_leads,
       conversion.lead_to_won_rate AS conversion_won
FROM (SELECT 1) AS one
LEFT JOIN lead_time ON true LEFT JOIN cycle ON true LEFT JOIN approval ON true LEFT JOIN discount ON true
LEFT JOIN rework ON true LEFT JOIN quote_order ON true LEFT JOIN fulfilment ON true LEFT JOIN invoicing ON true
LEFT JOIN dso ON true LEFT JOIN conversion ON true;
