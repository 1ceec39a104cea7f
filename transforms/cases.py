"""Which case each lead-to-cash record belongs to, and the case's attributes.

The opportunity is the case. A lead joins the opportunity that originated from it (the earliest, if a lead
was qualified more than once); quotes and sales orders join through their opportunity; an invoice through
its opportunity or, when that link is empty, through its sales order's opportunity. A lead that never became
an opportunity is a case of its own (case_type "lead"). Links come from the newest version of each record
ever landed, and, for a record deleted before any run saw it, from the old values of its audit Delete row.
"""

from __future__ import annotations

import polars as pl

LINK_SCHEMA = {"object_type": pl.Utf8, "object_id": pl.Utf8, "opportunity_id": pl.Utf8,
               "salesorder_id": pl.Utf8, "lead_id": pl.Utf8}
CASE_SCHEMA = {"object_type": pl.Utf8, "object_id": pl.Utf8, "case_id": pl.Utf8, "case_type": pl.Utf8}


def _col(frame: pl.LazyFrame, name: str) -> pl.Expr:
    return pl.col(name) if name in frame.collect_schema().names() else pl.lit(None, pl.Utf8)


def links(records: dict[str, pl.LazyFrame], deleted_details: pl.LazyFrame) -> pl.LazyFrame:
    """object -> (opportunity, sales order, originating lead) from the rows, completed by Delete details."""
    parts = []
    for table, key in (("lead", "leadid"), ("opportunity", "opportunityid"), ("quote", "quoteid"),
                       ("salesorder", "salesorderid"), ("invoice", "invoiceid")):
        frame = records.get(table)
        if frame is None:
            continue
        parts.append(frame.select(
            pl.lit(table).alias("object_type"), pl.col(key).alias("object_id"),
            (pl.col(key) if table == "opportunity" else _col(frame, "_opportunityid_value")).alias("opportunity_id"),
            _col(frame, "_salesorderid_value").alias("salesorder_id"),
            _col(frame, "_originatingleadid_value").alias("lead_id"),
        ))
    from_rows = pl.concat(parts, how="vertical_relaxed") if parts else pl.LazyFrame(schema=LINK_SCHEMA)
    old = pl.col("old_values")
    from_deletes = deleted_details.select(
        pl.col("objecttypecode").alias("object_type"), pl.col("objectid").alias("object_id"),
        old.str.json_path_match("$._opportunityid_value").alias("opportunity_id"),
        old.str.json_path_match("$._salesorderid_value").alias("salesorder_id"),
        old.str.json_path_match("$._originatingleadid_value").alias("lead_id"),
    )
    # Rows win over audit details where both know a record.
    return pl.concat([from_rows.cast(LINK_SCHEMA), from_deletes.cast(LINK_SCHEMA)],  # type: ignore[arg-type]
                     how="vertical").unique(["object_type", "object_id"], keep="first", maintain_order=True)


def case_of(link: pl.LazyFrame, opportunities_created: pl.LazyFrame) -> pl.LazyFrame:
    """object -> (case_id, case_type). `opportunities_created` has opportunityid, originating lead, createdon."""
    lead_case = (opportunities_created.filter(pl.col("lead_id").is_not_null())
                 .sort("createdon", "opportunityid").unique("lead_id", keep="first", maintain_order=True)
                 .select("lead_id", pl.col("opportunityid").alias("lead_opportunity")))
    order_opportunity = link.filter(pl.col("object_type") == "salesorder").select(
        pl.col("object_id").alias("salesorder_id"), pl.col("opportunity_id").alias("order_opportunity"))
    joined = (link.join(order_opportunity, on="salesorder_id", how="left")
              .join(lead_case, left_on="object_id", right_on="lead_id", how="left"))
    opportunity = (
        pl.when(pl.col("object_type") == "lead").then(pl.col("lead_opportunity"))
        .when(pl.col("object_type") == "invoice").then(pl.coalesce("opportunity_id", "order_opportunity"))
        .otherwise(pl.col("opportunity_id"))
    )
    lead_alone = (pl.col("object_type") == "lead") & opportunity.is_null()
    return joined.select(
        "object_type", "object_id",
        pl.when(lead_alone).then(pl.col("object_id")).otherwise(opportunity).alias("case_id"),
        pl.when(lead_alone).then(pl.lit("lead"))
        .when(opportunity.is_not_null()).then(pl.lit("opportunity")).otherwise(pl.lit(None, pl.Utf8))
        .alias("case_type"),
    )


def case_map(records: dict[str, pl.LazyFrame], deleted_details: pl.LazyFrame) -> pl.LazyFrame:
    """Every known lead-to-cash record -> its (case_id, case_type); both null for a record that links to no case."""
    opportunities = records["opportunity"].select(
        "opportunityid", _col(records["opportunity"], "_originatingleadid_value").alias("lead_id"), "createdon")
    return case_of(links(records, deleted_details), opportunities)


def case_accounts(records: dict[str, pl.LazyFrame]) -> pl.LazyFrame:
    """(case_id, account_id): the account whose row gives a case its region (see `attributes`)."""
    opp, lead = records["opportunity"], records["lead"]
    return pl.concat([
        opp.select(pl.col("opportunityid").alias("case_id"), pl.coalesce(
            _col(opp, "_parentaccountid_value"), _col(opp, "_customerid_value")).alias("account_id")),
        lead.select(pl.col("leadid").alias("case_id"), _col(lead, "_parentaccountid_value").alias("account_id")),
    ], how="vertical_relaxed").filter(pl.col("account_id").is_not_null())


def attributes(cases: pl.LazyFrame, records: dict[str, pl.LazyFrame]) -> pl.LazyFrame:
    """One row per case: owner, outcome, amount, currency, lead_source, stage, account, region."""
    opp, lead, account = records["opportunity"], records["lead"], records.get("account")
    region = (account.select(pl.col("accountid").alias("_account"), _col(account, "territorycode__label")
                             .alias("region")) if account is not None else None)
    sources = lead.select(pl.col("leadid").alias("_lead"), _col(lead, "leadsourcecode__label").alias("lead_source"))
    won = pl.col("statecode") == 1
    opp_cases = opp.select(
        pl.col("opportunityid").alias("case_id"), pl.lit("opportunity").alias("case_type"),
        _col(opp, "_ownerid_value__label").alias("owner"), _col(opp, "statecode__label").alias("outcome"),
        pl.when(won).then(pl.coalesce("actualvalue", "estimatedvalue")).otherwise(pl.col("estimatedvalue"))
        .cast(pl.Decimal(38, 4)).alias("amount"),
        _col(opp, "_transactioncurrencyid_value__label").alias("currency"),
        _col(opp, "_originatingleadid_value").alias("_lead"),
        _col(opp, "salesstage__label").alias("stage"),
        pl.coalesce(_col(opp, "_parentaccountid_value__label"), _col(opp, "_customerid_value__label")).alias("account"),
        pl.coalesce(_col(opp, "_parentaccountid_value"), _col(opp, "_customerid_value")).alias("_account"),
    ).join(sources, on="_lead", how="left").drop("_lead")
    lead_cases = lead.select(
        pl.col("leadid").alias("case_id"), pl.lit("lead").alias("case_type"),
        _col(lead, "_ownerid_value__label").alias("owner"), _col(lead, "statecode__label").alias("outcome"),
        pl.col("estimatedamount").cast(pl.Decimal(38, 4)).alias("amount"),
        _col(lead, "_transactioncurrencyid_value__label").alias("currency"),
        pl.lit(None, pl.Utf8).alias("stage"),
        pl.coalesce(_col(lead, "_parentaccountid_value__label"), _col(lead, "companyname")).alias("account"),
        _col(lead, "_parentaccountid_value").alias("_account"),
        _col(lead, "leadsourcecode__label").alias("lead_source"),
    )
    both = pl.concat([opp_cases, lead_cases.select(opp_cases.collect_schema().names())], how="vertical_relaxed")
    if region is not None:
        both = both.join(region, on="_account", how="left")
    else:
        both = both.with_columns(pl.lit(None, pl.Utf8).alias("region"))
    wanted = cases.select("case_id", "case_type").unique()
    return wanted.join(both.drop("_account"), on=["case_id", "case_type"], how="left")
