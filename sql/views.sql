-- The lead-to-cash guide's analysis questions, one view each, over the tables sql/load.sql creates (event_log,
-- cases) and the ones it loads beside them from the transform (sql/load.py): the object model's analysis tables
-- (config/tables.toml [[analysis]]: accounts, users, quotes, orders, invoices, the newest landed version of each
-- record, deleted ones included) and quality_issues.
--
-- Conventions: a duration is the DOUBLE number of hours or days between two UTC instants (epoch seconds, so the
-- session's TimeZone never matters); medians are median() (the mean of the two middle values for an even count),
-- p90 is quantile_cont(x, 0.9). Within one object or case, "the time of an activity" is its first occurrence
-- unless a view says otherwise. Grouped views add total rows whose group column reads '(all)'; a group value
-- that is unknown reads '(none)'. Events are ordered as in event_log: timestamp, activity, event_id.

-- The discount policy, in one place: a quote discounted above max_discount_pct percent is outside policy.
-- Every `l2c transform` rebuilds this database: change the value here to keep it, or UPDATE it for a session.
CREATE TABLE policy AS SELECT 15.0::DOUBLE AS max_discount_pct;

CREATE MACRO hours_between(a, b) AS (epoch(b) - epoch(a)) / 3600.0;
CREATE MACRO days_between(a, b) AS (epoch(b) - epoch(a)) / 86400.0;

-- Building block: per object (lead, opportunity, quote, salesorder, invoice) and activity, the first and last
-- time it happened and how often, with the object's case and region.
CREATE VIEW v_object_activity AS
SELECT object_type, object_id, any_value(case_id) AS case_id, any_value(region) AS region, activity,
       min("timestamp") AS first_at, max("timestamp") AS last_at, count(*) AS occurrences
FROM event_log
GROUP BY object_type, object_id, activity;

-- Q: How long does a lead take to become an opportunity, by lead source?
-- Per opportunity case that came from a lead: days from Lead Captured to Opportunity Created (and to Lead
-- Qualified). Opportunities entered without a lead are left out.
CREATE VIEW v_lead_to_opportunity_time AS
WITH per_case AS (
    SELECT case_id, any_value(lead_source) AS lead_source,
           min("timestamp") FILTER (activity = 'Lead Captured') AS captured,
           min("timestamp") FILTER (activity = 'Lead Qualified') AS qualified,
           min("timestamp") FILTER (activity = 'Opportunity Created') AS created
    FROM event_log WHERE case_type = 'opportunity' GROUP BY case_id
), timed AS (
    SELECT lead_source, days_between(captured, created) AS days, days_between(captured, qualified) AS to_qualify
    FROM per_case WHERE captured IS NOT NULL AND created IS NOT NULL
)
SELECT CASE WHEN grouping(lead_source) = 1 THEN '(all)' ELSE coalesce(lead_source, '(none)') END AS lead_source,
       count(*) AS opportunities, median(days) AS median_days, quantile_cont(days, 0.9) AS p90_days,
       avg(days) AS avg_days, median(to_qualify) AS median_days_to_qualify
FROM timed
GROUP BY GROUPING SETS ((lead_source), ())
ORDER BY grouping(lead_source), lead_source;

-- Q: How long is the sales cycle, by outcome and region?
-- Per closed opportunity (cases.outcome Won or Lost): days from Opportunity Created to its last Opportunity Won
-- or Opportunity Lost (after a reopen, the final close counts); also from Lead Captured when there was a lead.
CREATE VIEW v_sales_cycle_time AS
WITH per_case AS (
    SELECT e.case_id, any_value(c.outcome) AS outcome, any_value(c.region) AS region,
           min(e."timestamp") FILTER (e.activity = 'Lead Captured') AS captured,
           min(e."timestamp") FILTER (e.activity = 'Opportunity Created') AS created,
           max(e."timestamp") FILTER (e.activity IN ('Opportunity Won', 'Opportunity Lost')) AS closed
    FROM event_log e JOIN cases c USING (case_id)
    WHERE e.case_type = 'opportunity' AND c.outcome IN ('Won', 'Lost')
    GROUP BY e.case_id
), timed AS (
    SELECT outcome, region, days_between(created, closed) AS days, days_between(captured, closed) AS from_lead
    FROM per_case WHERE created IS NOT NULL AND closed IS NOT NULL
)
SELECT CASE WHEN grouping(outcome) = 1 THEN '(all)' ELSE outcome END AS outcome,
       CASE WHEN grouping(region) = 1 THEN '(all)' ELSE coalesce(region, '(none)') END AS region,
       count(*) AS opportunities, median(days) AS median_days, quantile_cont(days, 0.9) AS p90_days,
       avg(days) AS avg_days, median(from_lead) AS median_days_from_lead
FROM timed
GROUP BY GROUPING SETS ((outcome, region), (outcome), ())
ORDER BY grouping(outcome), outcome, grouping(region), region;

-- Q: How long does a quote wait for approval (Quote Created -> Quote Activated), and do discounts outside policy
-- take longer? Per activated quote: hours between its first Quote Created and first Quote Activated; the
-- quote's (final) discount puts it in a band against policy.max_discount_pct ('(unknown)': a quote deleted
-- before any run landed its row).
CREATE VIEW v_quote_approval_time AS
WITH per_quote AS (
    SELECT object_id AS quote_id,
           min(first_at) FILTER (activity = 'Quote Created') AS created,
           min(first_at) FILTER (activity = 'Quote Activated') AS activated
    FROM v_object_activity WHERE object_type = 'quote' GROUP BY object_id
), banded AS (
    SELECT CASE WHEN q.quote_id IS NULL THEN '(unknown)' WHEN coalesce(q.discount_pct, 0) = 0 THEN 'no discount'
                WHEN q.discount_pct <= p.max_discount_pct THEN 'within policy'
                ELSE 'above policy' END AS discount_band,
           hours_between(t.created, t.activated) AS hours
    FROM per_quote t LEFT JOIN quotes q USING (quote_id) CROSS JOIN policy p
    WHERE t.created IS NOT NULL AND t.activated IS NOT NULL
)
SELECT CASE WHEN grouping(discount_band) = 1 THEN '(all)' ELSE discount_band END AS discount_band,
       count(*) AS quotes, median(hours) AS median_hours, quantile_cont(hours, 0.9) AS p90_hours,
       avg(hours) AS avg_hours, median(hours) / 24.0 AS median_days
FROM banded
GROUP BY GROUPING SETS ((discount_band), ())
ORDER BY grouping(discount_band), discount_band;

-- Q: How much discount do reps and segments give, against policy?
-- Over every quote (each revision is a quote; a quote's discount is its latest discountpercentage), grouped by
-- one dimension at a time: rep (the quote's owner), region and industry (the quote's customer account).
-- Discount statistics are over discounted quotes; above_policy counts quotes above policy.max_discount_pct.
CREATE VIEW v_discount_by_rep AS
WITH q AS (
    SELECT q.owner, a.region, a.industry, coalesce(q.discount_pct, 0) AS pct, p.max_discount_pct AS policy_pct
    FROM quotes q LEFT JOIN accounts a USING (account_id) CROSS JOIN policy p
), dims AS (
    SELECT 'rep' AS dimension, owner AS segment, pct, policy_pct FROM q
    UNION ALL SELECT 'region', region, pct, policy_pct FROM q
    UNION ALL SELECT 'industry', industry, pct, policy_pct FROM q
    UNION ALL SELECT '(all)', '(all)', pct, policy_pct FROM q
)
SELECT dimension, coalesce(segment, '(none)') AS segment, count(*) AS quotes,
       count(*) FILTER (pct > 0) AS discounted_quotes,
       avg(pct) FILTER (pct > 0) AS avg_discount_pct, median(pct) FILTER (pct > 0) AS median_discount_pct,
       max(pct) AS max_discount_pct, any_value(policy_pct) AS policy_pct,
       count(*) FILTER (pct > policy_pct) AS above_policy,
       count(*) FILTER (pct > policy_pct) / count(*) AS share_above_policy
FROM dims
GROUP BY dimension, segment
ORDER BY dimension = '(all)' DESC, dimension, share_above_policy DESC, segment;

-- Q: How much rework is there? Per kind: stage regressions (a Stage Entered: <stage> event for an earlier stage
-- than the case's previous Stage Entered event; stages Qualify < Develop < Propose < Close), quote revisions
-- (Quote Revised) and reopened opportunities (Opportunity Reopened), with the cases affected and their share of
-- all opportunity cases; 'any' counts cases with at least one of them.
CREATE VIEW v_rework AS
WITH stage_rank(activity, rank) AS (
    VALUES ('Stage Entered: Qualify', 0), ('Stage Entered: Develop', 1), ('Stage Entered: Propose', 2),
           ('Stage Entered: Close', 3)
), stages AS (
    SELECT e.case_id, r.rank < lag(r.rank) OVER (PARTITION BY e.case_id ORDER BY e."timestamp", e.activity, e.event_id)
           AS regressed
    FROM event_log e JOIN stage_rank r USING (activity)
), found AS (
    SELECT 'stage regression' AS rework, case_id FROM stages WHERE regressed
    UNION ALL SELECT 'quote revision', case_id FROM event_log WHERE activity = 'Quote Revised'
    UNION ALL SELECT 'reopened', case_id FROM event_log WHERE activity = 'Opportunity Reopened'
), total AS (SELECT count(*) AS opportunities FROM cases WHERE case_type = 'opportunity')
SELECT CASE WHEN grouping(rework) = 1 THEN 'any' ELSE rework END AS rework,
       count(*) AS occurrences, count(DISTINCT case_id) AS cases, any_value(t.opportunities) AS opportunities,
       count(DISTINCT case_id) / any_value(t.opportunities) AS share_of_opportunities
FROM found CROSS JOIN total t
GROUP BY GROUPING SETS ((rework), ())
ORDER BY grouping(rework), rework;

-- Q: How long from an accepted quote (the contract) to its sales order, by region?
-- Per sales order with a quote: days from the quote's first Quote Accepted to the order's Sales Order Created.
CREATE VIEW v_quote_to_order AS
WITH per_order AS (
    SELECT o.order_id, created.region, days_between(accepted.first_at, created.first_at) AS days
    FROM orders o
    JOIN v_object_activity created
      ON created.object_type = 'salesorder' AND created.object_id = o.order_id
     AND created.activity = 'Sales Order Created'
    JOIN v_object_activity accepted
      ON accepted.object_type = 'quote' AND accepted.object_id = o.quote_id AND accepted.activity = 'Quote Accepted'
)
SELECT CASE WHEN grouping(region) = 1 THEN '(all)' ELSE coalesce(region, '(none)') END AS region,
       count(*) AS orders, median(days) AS median_days, quantile_cont(days, 0.9) AS p90_days, avg(days) AS avg_days
FROM per_order
GROUP BY GROUPING SETS ((region), ())
ORDER BY grouping(region), region;

-- Q: How long from an accepted quote to a signed contract (contract delay), by region?
-- Per case with a Quote Accepted: days from its first Quote Accepted to the first Contract Signed after it.
-- "Contract Signed" is a custom table's rule (config/examples/contract): where the log has none, every case
-- counts as unsigned and the durations are null. Cases with an accepted quote and no signature (yet) count in
-- `unsigned`.
CREATE VIEW v_contract_delay AS
WITH accepted AS (
    SELECT case_id, any_value(region) AS region, min("timestamp") AS accepted_at
    FROM event_log WHERE activity = 'Quote Accepted' GROUP BY case_id
), per_case AS (
    SELECT a.case_id, a.region, days_between(a.accepted_at, min(e."timestamp")) AS days
    FROM accepted a
    LEFT JOIN event_log e ON e.case_id = a.case_id AND e.activity = 'Contract Signed' AND e."timestamp" >= a.accepted_at
    GROUP BY a.case_id, a.region, a.accepted_at
)
SELECT CASE WHEN grouping(region) = 1 THEN '(all)' ELSE coalesce(region, '(none)') END AS region,
       count(*) AS accepted_cases, count(days) AS signed, count(*) - count(days) AS unsigned,
       median(days) AS median_days, quantile_cont(days, 0.9) AS p90_days, avg(days) AS avg_days
FROM per_case
GROUP BY GROUPING SETS ((region), ())
ORDER BY grouping(region), region;

-- Q: How long does order fulfilment take, and how many orders are canceled, by region?
-- Per sales order: first Sales Order Created, Order Submitted, Order Fulfilled, Order Canceled; days between
-- creation and submission, submission and fulfilment, creation and fulfilment.
CREATE VIEW v_order_fulfilment AS
WITH per_order AS (
    SELECT object_id, any_value(region) AS region,
           min(first_at) FILTER (activity = 'Sales Order Created') AS created,
           min(first_at) FILTER (activity = 'Order Submitted') AS submitted,
           min(first_at) FILTER (activity = 'Order Fulfilled') AS fulfilled,
           min(first_at) FILTER (activity = 'Order Canceled') AS canceled
    FROM v_object_activity WHERE object_type = 'salesorder' GROUP BY object_id
)
SELECT CASE WHEN grouping(region) = 1 THEN '(all)' ELSE coalesce(region, '(none)') END AS region,
       count(*) AS orders, count(submitted) AS submitted, count(fulfilled) AS fulfilled, count(canceled) AS canceled,
       median(days_between(created, submitted)) AS median_days_to_submit,
       median(days_between(submitted, fulfilled)) AS median_days_submit_to_fulfil,
       median(days_between(created, fulfilled)) AS median_days_to_fulfil,
       quantile_cont(days_between(created, fulfilled), 0.9) AS p90_days_to_fulfil
FROM per_order
GROUP BY GROUPING SETS ((region), ())
ORDER BY grouping(region), region;

-- Q: How long after fulfilment is an order invoiced, by region?
-- Per fulfilled sales order: days from Order Fulfilled to the first Invoice Created among its invoices
-- (invoices.order_id); fulfilled orders without an invoice are counted apart.
CREATE VIEW v_fulfilment_to_invoice AS
WITH fulfilled AS (
    SELECT object_id AS order_id, region, first_at AS fulfilled_at
    FROM v_object_activity WHERE object_type = 'salesorder' AND activity = 'Order Fulfilled'
), invoiced AS (
    SELECT i.order_id, min(a.first_at) AS invoiced_at
    FROM invoices i JOIN v_object_activity a
      ON a.object_type = 'invoice' AND a.object_id = i.invoice_id AND a.activity = 'Invoice Created'
    GROUP BY i.order_id
), per_order AS (
    SELECT f.region, days_between(f.fulfilled_at, i.invoiced_at) AS days
    FROM fulfilled f LEFT JOIN invoiced i USING (order_id)
)
SELECT CASE WHEN grouping(region) = 1 THEN '(all)' ELSE coalesce(region, '(none)') END AS region,
       count(days) AS invoiced_orders, count(*) FILTER (days IS NULL) AS fulfilled_not_invoiced,
       median(days) AS median_days, quantile_cont(days, 0.9) AS p90_days, avg(days) AS avg_days
FROM per_order
GROUP BY GROUPING SETS ((region), ())
ORDER BY grouping(region), region;

-- Q: How long do customers take to pay (days sales outstanding), by payment terms and segment (region)?
-- Per invoice that was not canceled: days from Invoice Created to its last Payment Received (a partial payment
-- comes first; the last one settles it). Unpaid invoices count in `unpaid` only. Late: paid on a UTC day after
-- the due date. The amount-weighted mean weights each paid invoice's days by its total.
CREATE VIEW v_dso_by_terms AS
WITH per_invoice AS (
    SELECT object_id AS invoice_id, any_value(region) AS region,
           min(first_at) FILTER (activity = 'Invoice Created') AS created,
           max(last_at) FILTER (activity = 'Payment Received') AS paid,
           bool_or(activity = 'Invoice Canceled') AS canceled
    FROM v_object_activity WHERE object_type = 'invoice' GROUP BY object_id
), timed AS (
    SELECT coalesce(i.payment_terms, '(none)') AS payment_terms, coalesce(t.region, '(none)') AS region,
           days_between(t.created, t.paid) AS days, i.total_amount::DOUBLE AS amount,
           (t.paid AT TIME ZONE 'UTC')::DATE > i.due_date AS late
    FROM per_invoice t LEFT JOIN invoices i USING (invoice_id)
    WHERE NOT t.canceled AND t.created IS NOT NULL
)
SELECT CASE WHEN grouping(payment_terms) = 1 THEN '(all)' ELSE payment_terms END AS payment_terms,
       CASE WHEN grouping(region) = 1 THEN '(all)' ELSE region END AS region,
       count(*) AS invoices, count(days) AS paid, count(*) - count(days) AS unpaid,
       median(days) AS median_days_to_pay, avg(days) AS avg_days_to_pay,
       quantile_cont(days, 0.9) AS p90_days_to_pay,
       sum(days * amount) / sum(amount) FILTER (days IS NOT NULL) AS amount_weighted_days_to_pay,
       count(*) FILTER (late) AS paid_late, count(*) FILTER (late) / nullif(count(days), 0) AS share_paid_late
FROM timed
GROUP BY GROUPING SETS ((payment_terms, region), (payment_terms), ())
ORDER BY grouping(payment_terms), payment_terms, grouping(region), region;

-- Q: Which lead sources convert? Per lead (by its own lead source): captured, qualified, disqualified, still
-- open (neither), and won (its case's opportunity outcome is Won); rates over the leads, win rate over the
-- qualified ones.
CREATE VIEW v_conversion_by_lead_source AS
WITH per_lead AS (
    SELECT a.object_id, any_value(c.lead_source) AS lead_source,
           bool_or(a.activity = 'Lead Captured') AS captured, bool_or(a.activity = 'Lead Qualified') AS qualified,
           bool_or(a.activity = 'Lead Disqualified') AS disqualified,
           any_value(c.case_type) = 'opportunity' AND any_value(c.outcome) = 'Won' AS won
    FROM v_object_activity a JOIN cases c USING (case_id)
    WHERE a.object_type = 'lead' GROUP BY a.object_id
)
SELECT CASE WHEN grouping(lead_source) = 1 THEN '(all)' ELSE coalesce(lead_source, '(none)') END AS lead_source,
       count(*) FILTER (captured) AS leads, count(*) FILTER (qualified) AS qualified,
       count(*) FILTER (disqualified) AS disqualified,
       count(*) FILTER (captured AND NOT qualified AND NOT disqualified) AS open,
       count(*) FILTER (won) AS won,
       count(*) FILTER (qualified) / nullif(count(*) FILTER (captured), 0) AS qualification_rate,
       count(*) FILTER (won) / nullif(count(*) FILTER (qualified), 0) AS win_rate,
       count(*) FILTER (won) / nullif(count(*) FILTER (captured), 0) AS lead_to_won_rate
FROM per_lead
GROUP BY GROUPING SETS ((lead_source), ())
ORDER BY grouping(lead_source), lead_source;

-- Q: Which paths do cases take? One row per variant (the case's activities in event_log order, joined by
-- ' -> '), most frequent first: cases, share and running share of all cases, events per case, median case
-- duration in days (first to last event).
CREATE VIEW v_variants AS
WITH traces AS (
    SELECT case_id, string_agg(activity, ' -> ' ORDER BY "timestamp", activity, event_id) AS variant,
           count(*) AS events, days_between(min("timestamp"), max("timestamp")) AS days
    FROM event_log GROUP BY case_id
), per_variant AS (
    SELECT variant, count(*) AS cases, any_value(events) AS events, median(days) AS median_case_days
    FROM traces GROUP BY variant
)
SELECT row_number() OVER (ORDER BY cases DESC, variant) AS rank, variant, cases,
       cases / sum(cases) OVER () AS share,
       sum(cases) OVER (ORDER BY cases DESC, variant ROWS UNBOUNDED PRECEDING) / sum(cases) OVER () AS cumulative_share,
       events, median_case_days
FROM per_variant
ORDER BY rank;

-- Q: What follows what, and how long is the wait? The directly-follows graph: per pair of consecutive events of
-- a case (event_log order), how often, in how many cases, and the hours between them (median, p90, mean).
CREATE VIEW v_dfg AS
WITH steps AS (
    SELECT case_id, activity, "timestamp",
           lead(activity) OVER w AS next_activity, lead("timestamp") OVER w AS next_at
    FROM event_log
    WINDOW w AS (PARTITION BY case_id ORDER BY "timestamp", activity, event_id)
)
SELECT activity AS from_activity, next_activity AS to_activity, count(*) AS edges,
       count(DISTINCT case_id) AS cases, median(hours_between("timestamp", next_at)) AS median_wait_hours,
       quantile_cont(hours_between("timestamp", next_at), 0.9) AS p90_wait_hours,
       avg(hours_between("timestamp", next_at)) AS avg_wait_hours
FROM steps WHERE next_activity IS NOT NULL
GROUP BY activity, next_activity
ORDER BY edges DESC, from_activity, to_activity;

-- Q: What did the data-quality checks find? Findings per check and severity (details in table quality_issues).
CREATE VIEW v_quality_summary AS
SELECT "check", severity, count(*) AS issues, count(DISTINCT object_id) AS objects
FROM quality_issues GROUP BY "check", severity ORDER BY severity, "check";
