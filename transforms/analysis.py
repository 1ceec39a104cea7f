"""The object tables the analysis views of sql/views.sql and the exports need beside event_log and cases:
accounts, users, quotes, orders and invoices, a few attributes of each record's newest landed version."""

from __future__ import annotations

import polars as pl


def _column(frame: pl.LazyFrame, name: str, dtype: pl.DataType | type[pl.DataType] = pl.Utf8) -> pl.Expr:
    """A column, or nulls when this lake has no such column (a trimmed config/tables.toml)."""
    return pl.col(name) if name in frame.collect_schema().names() else pl.lit(None, dtype)


def analysis_tables(records: dict[str, pl.LazyFrame]) -> dict[str, pl.DataFrame]:
    """accounts, users, quotes, orders, invoices: a few attributes of each record's newest landed version."""
    account, quote, order, invoice = (records[name] for name in ("account", "quote", "salesorder", "invoice"))
    user = records["systemuser"]
    money = pl.Decimal(38, 4)
    return {
        "accounts": account.select(
            pl.col("accountid").alias("account_id"), _column(account, "name").alias("account"),
            _column(account, "territorycode__label").alias("region"),
            _column(account, "industrycode__label").alias("industry"),
            _column(account, "numberofemployees", pl.Int32).alias("employees")).collect(),
        "users": user.select(pl.col("systemuserid").alias("user_id"), _column(user, "fullname").alias("name"))
        .sort("user_id").collect(),
        "quotes": quote.select(
            pl.col("quoteid").alias("quote_id"), _column(quote, "_opportunityid_value").alias("opportunity_id"),
            _column(quote, "_customerid_value").alias("account_id"), _column(quote, "quotenumber").alias("number"),
            _column(quote, "revisionnumber", pl.Int32).alias("revision"),
            _column(quote, "_ownerid_value__label").alias("owner"),
            _column(quote, "statecode__label").alias("state"),
            _column(quote, "discountpercentage", pl.Float64).cast(pl.Float64).alias("discount_pct"),
            _column(quote, "totallineitemamount", money).alias("line_amount"),
            _column(quote, "totalamount", money).alias("total_amount")).collect(),
        "orders": order.select(
            pl.col("salesorderid").alias("order_id"), _column(order, "_opportunityid_value").alias("opportunity_id"),
            _column(order, "_quoteid_value").alias("quote_id"), _column(order, "_customerid_value").alias("account_id"),
            _column(order, "statecode__label").alias("state"),
            _column(order, "totalamount", money).alias("total_amount")).collect(),
        "invoices": invoice.select(
            pl.col("invoiceid").alias("invoice_id"), _column(invoice, "_opportunityid_value").alias("opportunity_id"),
            _column(invoice, "_salesorderid_value").alias("order_id"),
            _column(invoice, "_customerid_value").alias("account_id"),
            _column(invoice, "paymenttermscode__label").alias("payment_terms"),
            _column(invoice, "duedate", pl.Date).alias("due_date"),
            _column(invoice, "statecode__label").alias("state"),
            _column(invoice, "totalamount", money).alias("total_amount")).collect(),
    }
