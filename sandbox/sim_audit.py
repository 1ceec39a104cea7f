"""How a simulated change reads in the audit table: action codes, the dynamic tables and Web API JSON values.

Every change the simulator makes is one `audits` row whose hidden _old/_new columns hold the changed columns
as the Web API renders them (GUID strings, numbers, "2023-04-07T21:59:01Z", "2023-04-07", null). This
module names the audit actions per message, numbers the tables that change after HISTORY_START, and holds
per table the JSON keys, ColumnNumbers and value encoders the recorder (sandbox/sim_recorder.py) and the
static records (sandbox/sim_static.py) write with, looked up once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from typing import Any

from sandbox.schema import TABLES, Column, Table

# audit.action per message. Where the docs name the message for a table we follow them ([PD]
# auditing/retrieve-audit-data.md "Event groups": 44 Win = WinOpportunity, 16 Close = CloseQuote, 43 Revise
# = ReviseQuote). The same page says a verb is shared by the "<verb><table>" messages, so WinQuote (which
# "sets the state of a quote to Won", WinQuote Action, CRM 2016 SDK) is 44 Win on a quote as well. The rest
# take the label that names the message (Activate 4 for a quote, Submit 26, Fulfill 22, Invoice 29 on the
# order an invoice is made from, Paid 23, Cancel 17 for orders and invoices, Reopen 21); no captured audit
# row confirming them was found, so clients should key on state/status changes, not only on the action.
A_CREATE, A_UPDATE, A_DELETE, A_ACTIVATE, A_ASSIGN, A_CLOSE, A_CANCEL = 1, 2, 3, 4, 13, 16, 17
A_REOPEN, A_FULFILL, A_PAID, A_QUALIFY, A_DISQUALIFY, A_SUBMIT, A_INVOICE = 21, 22, 23, 24, 25, 26, 29
A_REVISE, A_WIN, A_LOSE = 43, 44, 45

ACC, LEAD, OPP, QUOTE, ORDER, INV, CONTRACT = range(7)
_DYNAMIC = ("account", "lead", "opportunity", "quote", "salesorder", "invoice", "new_contract")
# Maintained by the platform on every write and not audit-enabled, so they never appear in audit details.
_UNAUDITED = frozenset({"modifiedon", "modifiedby", "versionnumber"})
_DAY = 86_400


_DAYS: dict[int, str] = {}


def _day(d: int) -> str:
    s = _DAYS.get(d)
    if s is None:
        s = _DAYS[d] = date.fromordinal(d + 719_163).isoformat()  # 719163 = ordinal of 1970-01-01
    return s


def _iso(t: int) -> str:
    d, s = divmod(t, _DAY)
    return f"{_day(d)}T{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}Z"


_estr = json.encoder.encode_basestring  # C-accelerated; keeps non-ASCII as UTF-8 like the Web API does


def _q_iso(t: int) -> str:
    return '"' + _iso(t) + '"'


def _q_day(d: int) -> str:
    return '"' + _day(d) + '"'


def _bool(v: bool) -> str:
    return "true" if v else "false"


def _encoder(column: Column) -> Callable[[Any], str]:
    """The JSON rendering of a column's non-null values, as the Web API writes them (one direct call per
    value: this runs for every value of every change)."""
    if column.type == "DateTime":
        return _q_day if column.date_only and column.behavior == "DateOnly" else _q_iso
    if column.type in ("Integer", "Picklist", "State", "Status", "BigInt"):
        return str
    if column.type in ("Money", "Decimal"):
        return repr  # values are floats rounded to 2 decimals; repr is the shortest round-tripping form
    if column.type == "Boolean":
        return _bool
    return _estr


class _Meta:
    """Per table: column order, JSON keys, ColumnNumbers and value kinds, looked up once."""

    def __init__(self, table: Table) -> None:
        self.name = table.logical_name
        self.pk = table.primary_id
        self.cols = tuple(c.name for c in table.columns)
        self.key = {c.name: json.dumps(c.api_name) + ":" for c in table.columns}
        self.num = {c.name: str(c.number) for c in table.columns}
        self.enc = {c.name: _encoder(c) for c in table.columns}
        self.audited = tuple(c.name for c in table.columns if c.audited and c.name not in _UNAUDITED)
        self.all_mask = ",".join(self.num[c] for c in self.audited)


_META = tuple(_Meta(TABLES[name]) for name in _DYNAMIC)


def _created_json(meta: _Meta, st: dict[str, Any]) -> str:
    key, enc = meta.key, meta.enc
    return "{" + ",".join([key[c] + enc[c](v) for c in meta.audited if (v := st[c]) is not None]) + "}"
