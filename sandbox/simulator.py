"""The synthetic Dynamics 365 Sales org: the ground truth the whole project is tested against.

`simulate(seed, leads, clock)` is a pure function. Static records (currencies, users, accounts) exist from
before HISTORY_START and take the first versions. Then "arrivals" (a lead, or ~5% opportunities a rep
creates directly) come in at HISTORY_DAYS / leads intervals with jitter, forever; arrival i is planned from
its own RNG, seeded by a stable hash of (seed, i), as one forward-moving story (lead -> opportunity ->
quotes -> order -> invoices -> payments) whose cursor never goes back in time. A clock therefore only cuts
each story at its first change after the clock: nothing before the cut depends on the clock, and global
versions (rank of (time, arrival, sequence) after the static records) of changes up to a clock stay the
same at every later clock, which is what `sandbox advance` needs. Every change is one audit row (Web API
`audits` layout plus the hidden _old/_new/_version); truth is the activity the change stands for. Python
works per arrival on small dicts and tuples; frames are built once per block of arrivals, and the global
sort, versions and audit GUIDs are vectorised.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import random
import time
import unicodedata
from bisect import bisect
from collections.abc import Callable
from datetime import UTC, date, datetime
from itertools import accumulate
from typing import Any

import numpy as np
import polars as pl

from sandbox.orgdata import (
    BASE_CLOCK,
    DELETED_SCHEMA,
    HISTORY_DAYS,
    HISTORY_START,
    TRUTH_SCHEMA,
    OrgData,
    OrgMeta,
)
from sandbox.schema import INDUSTRIES, TABLES, Column, Table

# The default activity catalogue (CONTRACT.md); the simulator emits every one of them.
ACTIVITIES: tuple[str, ...] = (
    "Lead Captured", "Lead Qualified", "Lead Disqualified", "Opportunity Created",
    "Stage Entered: Develop", "Stage Entered: Propose", "Stage Entered: Close",
    "Quote Created", "Quote Activated", "Quote Revised", "Discount Applied", "Quote Accepted", "Quote Closed",
    "Sales Order Created", "Order Submitted", "Order Fulfilled", "Order Canceled",
    "Invoice Created", "Invoice Sent", "Payment Received", "Invoice Canceled",
    "Opportunity Won", "Opportunity Lost", "Opportunity Reopened", "Owner Changed",
    "Quote Deleted", "Order Deleted", "Invoice Deleted",
)

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

ACC, LEAD, OPP, QUOTE, ORDER, INV = range(6)
_DYNAMIC = ("account", "lead", "opportunity", "quote", "salesorder", "invoice")
# Maintained by the platform on every write and not audit-enabled, so they never appear in audit details.
_UNAUDITED = frozenset({"modifiedon", "modifiedby", "versionnumber"})
_DAY = 86_400
_HS = int(HISTORY_START.timestamp())
_BLOCK = 25_000  # arrivals per block: bounds the Python objects alive at once (1M leads < 8 GB)
_MASK64 = (1 << 64) - 1

# leadsourcecode -> (share of leads, qualification rate, median working days to a decision)
_SOURCES = {1: (12, 0.10, 12.0), 2: (6, 0.45, 3.0), 3: (8, 0.35, 5.0), 4: (8, 0.40, 4.0), 5: (5, 0.15, 10.0),
            6: (8, 0.25, 7.0), 7: (10, 0.30, 6.0), 8: (30, 0.20, 9.0), 9: (7, 0.35, 5.0), 10: (6, 0.15, 10.0)}
_SRC_CODES = tuple(_SOURCES)
_SRC_CUM = tuple(accumulate(v[0] for v in _SOURCES.values()))
_WEB = 8
_DISCOUNT_POLICY = 15.0  # percent; discounts above it are "outside policy" and often applied by a manager
_TERMS_DAYS = {1: 30, 2: 30, 3: 45, 4: 60}
_STEPS = ("1-Qualify", "2-Develop", "3-Propose", "4-Close")
_STAGE_ACTIVITY = (None, "Stage Entered: Develop", "Stage Entered: Propose", "Stage Entered: Close")
_STAGE_PROB = (10, 25, 50, 75)

# --- static org content ------------------------------------------------------------------------------
_TZ = {1: (-300, -360, -420, -480), 2: (0, 60, 120), 3: (330, 480, 540, 600), 4: (-180, -300)}
_PLACES = {
    1: (("New York", "United States"), ("Chicago", "United States"), ("Seattle", "United States"),
        ("Toronto", "Canada")),
    2: (("London", "United Kingdom"), ("Berlin", "Germany"), ("Paris", "France"), ("Madrid", "Spain"),
        ("Amsterdam", "Netherlands")),
    3: (("Tokyo", "Japan"), ("Bengaluru", "India"), ("Sydney", "Australia"), ("Singapore", "Singapore")),
    4: (("São Paulo", "Brazil"), ("Ciudad de México", "Mexico"), ("Bogotá", "Colombia")),
}
_SUFFIX = {"United States": "Inc.", "Canada": "Inc.", "United Kingdom": "Ltd", "Germany": "GmbH",
           "France": "SAS", "Spain": "S.L.", "Netherlands": "B.V.", "Japan": "K.K.", "India": "Pvt Ltd",
           "Australia": "Pty Ltd", "Singapore": "Pte Ltd", "Brazil": "Ltda.", "Mexico": "S.A. de C.V.",
           "Colombia": "S.A.S."}
_EURO = frozenset({"Germany", "France", "Spain", "Netherlands", "Ireland", "Greece"})
# Names that break naive CSV/JSON/SQL/XML handling or ASCII assumptions, on purpose.
_EDGE_ACCOUNTS = (
    ("O'Brien & Sons", 2, "Dublin", "Ireland"),
    ('"Acme" Ltd', 2, "London", "United Kingdom"),
    ("Müller GmbH", 2, "München", "Germany"),
    ("Société Générale d'Équipement", 2, "Lyon", "France"),
    ("株式会社ヤマダ", 3, "東京", "Japan"),
    ("Ελληνικά Α.Ε.", 2, "Αθήνα", "Greece"),
    ("Smith, Jones & Partners", 1, "Boston", "United States"),
    ("Ünal Tekstil A.Ş.", 2, "İstanbul", "Türkiye"),
    ("Back\\Slash Analytics", 1, "Austin", "United States"),
    ("Café São Paulo Ltda.", 4, "São Paulo", "Brazil"),
)
_ACC_A = ("Northwind", "Contoso", "Fabrikam", "Tailspin", "Wingtip", "Litware", "Adventure", "Alpine",
          "Blue Yonder", "Coho", "Fourth Coffee", "Humongous", "Lucerne", "Margie's", "Proseware", "Trey",
          "Wide World", "Woodgrove", "Graphic", "Southridge")
_ACC_B = ("Traders", "Logistics", "Foods", "Energy", "Bank", "Systems", "Health", "Airlines", "Retail",
          "Media", "Labs", "Motors", "Insurance", "Pharma", "Consulting")
# (firstname, lastname, fullname, territory, utc offset minutes): always the first reps.
_EDGE_REPS = (("Zoë", "Ångström", "Zoë Ångström", 2, 60), ("José", "Müller", "José Müller", 4, -180),
              ("Łukasz", "Żółć", "Łukasz Żółć", 2, 60), ("Hiroshi", "Ōta", "Ōta Hiroshi", 3, 540))
_MANAGERS = (("Margaret", "O'Neill", "Margaret O'Neill", 1, -300), ("Jürgen", "Weiß", "Jürgen Weiß", 2, 60),
             ("Priya", "Raman", "Priya Raman", 3, 330), ("Ana Lúcia", "Souza", "Ana Lúcia Souza", 4, -180))
_REP_FIRST = ("Emma", "Liam", "Sofia", "Mateo", "Aarav", "Mei", "Noah", "Chloé", "Lars", "Ingrid", "Kwame",
              "Amara", "Yuki", "Diego", "Fatima", "Oliver", "Hannah", "Rafael", "Björn", "Anaïs", "Siobhán",
              "Tomás", "Chen", "Olga", "Pedro", "Eleni", "Mohammed", "Grace", "Jakub", "Nia")
_REP_LAST = ("Smith", "García", "Nakamura", "Dubois", "Kowalski", "Rossi", "Andersson", "O'Sullivan",
             "Nguyen", "Okafor", "Silva", "Schmidt", "Papadopoulos", "Haddad", "Kim", "Fernández", "Jensen",
             "Novák", "Costa", "Murphy", "Patel", "Yılmaz", "Horváth", "Lefèvre", "van der Berg", "D'Souza",
             "Sato", "Ivanova", "Brennan", "Moreau")
_REP_TERR = (1, 2, 1, 3, 1, 2, 4, 1, 2, 3)
_LEAD_FIRST = ("Seán", "Chloé", "Björn", "Ana", "Wei", "Aisha", "Kenji", "Małgorzata", "Thomas", "Isabella",
               "Dmitri", "Nomvula", "François", "Lucía", "Ahmed", "Sarah", "Jörg", "Mariana", "Ravi", "Emily")
_LEAD_LAST = ("O'Connor", "D'Angelo", "Nguyễn", "Kowalczyk", "Schäfer", "Hernández", "Tanaka", "Al-Farsi",
              "Brown", "Rossi", "Johansson", "Mbeki", "Dupont", "Ivanov", "Chen", "Wilson", "Søndergaard",
              "Pereira", "Gupta", "Taylor")
_PRODUCTS = ("CRM licenses", "Analytics add-on", "Support renewal", "Onboarding services", "Data migration",
             "Field service module", "Premium support", "Integration package")
_CURRENCIES = (("US Dollar", "USD", "$", 1.0), ("Euro", "EUR", "€", 0.92),
               ("Pound Sterling", "GBP", "£", 0.79))
_FOLD = str.maketrans({"Ł": "L", "ł": "l", "Ø": "O", "ø": "o", "ß": "ss", "Æ": "AE", "æ": "ae", "ı": "i",
                       "Đ": "D", "đ": "d"})


class _PastClock(Exception):
    """The story reached its first change after the clock; nothing from here on is visible."""


def _stable(*parts: object) -> int:
    # Python's hash() is salted per process; the org must be the same in every process.
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "big")


def _guid(seed: int, kind: str, *index: int) -> str:
    h = hashlib.blake2b(f"{seed}|{kind}|{index}".encode(), digest_size=16).hexdigest()
    # v4 layout (version nibble 4, variant 8-b) so the ids look like the random GUIDs Dataverse hands out.
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:32]}"


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text.translate(_FOLD)).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum())


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


class _Org:
    """Static records and lookups shared by every arrival; depends on (seed, leads) only."""

    def __init__(self, seed: int, leads: int) -> None:
        r = random.Random(_stable(seed, "static"))
        self.seed = seed
        self.meta = OrgMeta(organization_id=_guid(seed, "organization", 0),
                            business_unit_id=_guid(seed, "businessunit", 0),
                            app_user_id=_guid(seed, "systemuser", 0))
        t0 = _HS - 400 * _DAY
        self.cur_ids = [_guid(seed, "transactioncurrency", k) for k in range(len(_CURRENCIES))]
        self.currency_rows = [
            (self.cur_ids[k], name, iso, sym, rate, t0 + k * 60, t0 + k * 60, k + 1)
            for k, (name, iso, sym, rate) in enumerate(_CURRENCIES)]
        version = len(_CURRENCIES)

        # users: 0 the l2c app, 1 SYSTEM, 2 web forms app, then managers, then reps
        people: list[tuple[str | None, str, str, int, int, str]] = [
            ("#", "l2c", "# l2c", 0, 0, "app"), (None, "SYSTEM", "SYSTEM", 0, 0, "system"),
            ("#", "Web Forms Integration", "# Web Forms Integration", 0, 0, "app")]
        people += [(f, la, full, terr, off, "Sales Manager") for f, la, full, terr, off in _MANAGERS]
        n_reps = min(150, max(6, leads // 400))
        names = {p[2] for p in people}
        reps: list[tuple[str | None, str, str, int, int, str]] = []
        for k in range(n_reps):
            if k < len(_EDGE_REPS):
                f, la, full, terr, off = _EDGE_REPS[k]
            else:
                terr = _REP_TERR[k % len(_REP_TERR)]
                while True:
                    f, la = r.choice(_REP_FIRST), r.choice(_REP_LAST)
                    full = f"{f} {la}"
                    if full not in names:
                        break
                off = r.choice(_TZ[terr])
            names.add(full)
            reps.append((f, la, full, terr, off, "Sales Representative"))
        people += reps
        self.APP, self.SYSTEM, self.WEBFORMS = 0, 1, 2
        self.managers = {terr: 3 + k for k, (_, _, _, terr, _) in enumerate(_MANAGERS)}
        self.reps = list(range(3 + len(_MANAGERS), len(people)))
        self.reps_by_terr = {terr: [u for u in self.reps if people[u][3] == terr] or self.reps
                             for terr in _TZ}
        self.uid = [_guid(seed, "systemuser", k) for k in range(len(people))]
        self.uname = [p[2] for p in people]
        self.uoff = [p[4] * 60 for p in people]
        self.speed = [r.lognormvariate(0.0, 0.35) for _ in people]  # rep pace: some reps are slow
        self.user_rows = []
        for k, (first, last, full, _, off, title) in enumerate(people):
            version += 1
            created = t0 + 3600 + k * 600
            mail = f"{_ascii(full) or 'user'}{k}@contoso-sales.example"
            app_id = _guid(seed, "application", k) if title == "app" else None
            self.user_rows.append((self.uid[k], full, first, last, mail,
                                   title if title not in ("app", "system") else None, False, app_id,
                                   self.meta.business_unit_id, off, created, created, version))

        # accounts
        n_acc = max(20, leads // 25)
        terr_pick = (1,) * 4 + (2,) * 3 + (3,) * 2 + (4,)
        inds = tuple(INDUSTRIES)
        self.acc_id, self.acc_name, self.acc_terr, self.acc_cur, self.acc_emp, self.acc_domain = \
            [], [], [], [], [], []
        self.static_audits: list[tuple[Any, ...]] = []
        self.account_rows: list[tuple[Any, ...]] = []
        meta = _META[ACC]
        for k in range(n_acc):
            if k < len(_EDGE_ACCOUNTS):
                name, terr, city, country = _EDGE_ACCOUNTS[k]
            else:
                terr = r.choice(terr_pick)
                city, country = r.choice(_PLACES[terr])
                name = f"{r.choice(_ACC_A)} {r.choice(_ACC_B)} {_SUFFIX.get(country, 'Ltd')}"
            cur = 2 if country == "United Kingdom" else 1 if country in _EURO else 0
            emp = int(r.lognormvariate(5.0, 1.3)) + 5
            revenue = None if r.random() < 0.1 else float(round(emp * r.uniform(80_000, 250_000), -3))
            aid = _guid(seed, "account", k)
            owner = self.uid[self.managers[terr]]
            version += 1
            created = t0 + 2 * _DAY + k * (300 * _DAY // n_acc)
            st = {"accountid": aid, "name": name, "accountnumber": f"ACC-{k + 1:06d}", "territorycode": terr,
                  "industrycode": r.choice(inds), "numberofemployees": emp, "revenue": revenue,
                  "address1_city": city, "address1_country": country, "statecode": 0, "statuscode": 1,
                  "transactioncurrencyid": self.cur_ids[cur], "createdon": created, "modifiedon": created,
                  "createdby": owner, "modifiedby": owner, "ownerid": owner, "versionnumber": version}
            st = {c: st[c] for c in meta.cols}
            self.account_rows.append(tuple(st.values()))
            # key = -1 - k keeps static audit ids apart from arrivals' (arrival, seq) keys
            self.static_audits.append((created, -1, k, "account", aid, 1, A_CREATE, owner, k, "{}",
                                       _created_json(meta, st), None, version))
            slug = _ascii(name)[:20] or f"kunde{k}"
            self.acc_id.append(aid)
            self.acc_name.append(name)
            self.acc_terr.append(terr)
            self.acc_cur.append(self.cur_ids[cur])
            self.acc_emp.append(emp)
            self.acc_domain.append(f"{slug}.example")
        self.static_versions = version
        self.lead_names = [(f, la, f"{f} {la}", _ascii(f), _ascii(la))
                           for f in _LEAD_FIRST for la in _LEAD_LAST]


class _Planner:
    """Plans arrivals one by one, appending visible changes, truth and final row states to block lists."""

    def __init__(self, org: _Org, clock: int, leads: int) -> None:
        self.org = org
        self.clock = clock
        self.step = HISTORY_DAYS * _DAY / leads
        self.base = _stable(org.seed, "arrivals")
        self.r = random.Random()
        self.i = self.seq = self.nid = self.t = 0  # the arrival being planned, its next sequence, its cursor
        self.changes: list[tuple[Any, ...]] = []
        self.offset = 0  # changes of earlier blocks: rows point at their last change by its overall index
        self.truth: list[tuple[Any, ...]] = []
        self.rows: list[list[tuple[Any, ...]]] = [[] for _ in _DYNAMIC]

    # --- time -----------------------------------------------------------------------------------------
    def _work(self, t: int, user: int) -> int:
        """The first moment at or after t inside the user's working hours (08-18 local, most weekends off)."""
        off = self.org.uoff[user]
        r = self.r
        day, sec = divmod(t + off, _DAY)
        if sec < 28_800:
            sec = 28_800 + int(r.random() * 5_400)
        elif sec >= 64_800:
            day += 1
            sec = 28_800 + int(r.random() * 5_400)
        wd = (day + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
        if wd >= 5 and r.random() < 0.93:
            day += 7 - wd
            sec = 28_800 + int(r.random() * 5_400)
        return day * _DAY + sec - off

    def _wait(self, days: float, user: int, sigma: float = 0.8) -> None:
        """Lognormal delay with median `days` (scaled by the user's pace), then into working hours."""
        delay = days * self.org.speed[user] * self.r.lognormvariate(0.0, sigma)
        self.t = self._work(self.t + int(delay * _DAY) + 1, user)

    def _soon(self, user: int, lo: int = 60, hi: int = 5_400) -> None:
        self.t = self._work(self.t + self.r.randint(lo, hi), user)

    # --- changes --------------------------------------------------------------------------------------
    def _seq(self) -> int:
        if self.t > self.clock:
            raise _PastClock
        seq = self.seq
        self.seq = seq + 1
        return seq

    def _create(self, tb: int, values: dict[str, Any], user: int, owner: int, activity: str | None,
                txn: int = -1) -> list[Any]:
        seq = self._seq()
        t = self.t
        meta = _META[tb]
        uid = self.org.uid[user]
        values.update(createdon=t, modifiedon=t, createdby=uid, modifiedby=uid, ownerid=self.org.uid[owner])
        st = {c: values.get(c) for c in meta.cols}  # schema order; later updates keep it
        rec = [tb, values[meta.pk], st, len(self.changes), True]  # [3]: its last change in self.changes
        self.recs.append(rec)
        self.changes.append((t, self.i, seq, meta.name, rec[1], 1, A_CREATE, uid, seq if txn < 0 else txn,
                             "{}", _created_json(meta, st), None))
        if activity:
            self.tr.append((t, seq, activity, meta.name, rec[1], self.org.uname[user]))
        return rec

    def _update(self, rec: list[Any], action: int, user: int, pairs: tuple[tuple[str, Any], ...],
                activity: str | None = None, txn: int = -1) -> int:
        seq = self._seq()
        t = self.t
        meta = _META[rec[0]]
        st = rec[2]
        key, enc, num = meta.key, meta.enc, meta.num
        olds, news, nums = [], [], []
        for c, v in pairs:
            o = st[c]
            olds.append(key[c] + ("null" if o is None else enc[c](o)))
            news.append(key[c] + ("null" if v is None else enc[c](v)))
            nums.append(num[c])
            st[c] = v
        uid = self.org.uid[user]
        st["modifiedon"] = t
        st["modifiedby"] = uid
        rec[3] = len(self.changes)
        # attributemask: ColumnNumbers joined by commas without leading/trailing commas, as in the Web API
        # response captured in [PD] auditing/retrieve-audit-data.md ("attributemask": "47,45,42,...,2");
        # the SQL column of on-premises CRM stores ",47,45,...,26," (mahadeomatre.blogspot.com, 2015), so
        # clients must accept both.
        self.changes.append((t, self.i, seq, meta.name, rec[1], 2, action, uid, seq if txn < 0 else txn,
                             "{" + ",".join(olds) + "}", "{" + ",".join(news) + "}", ",".join(nums)))
        if activity:
            self.tr.append((t, seq, activity, meta.name, rec[1], self.org.uname[user]))
        return seq

    def _delete(self, rec: list[Any], user: int, activity: str) -> None:
        seq = self._seq()
        meta = _META[rec[0]]
        st = rec[2]
        key, enc = meta.key, meta.enc
        old = "{" + ",".join([key[c] + ("null" if (v := st[c]) is None else enc[c](v))
                              for c in meta.audited]) + "}"
        uid = self.org.uid[user]
        # The Delete audit in [PD] auditing/retrieve-audit-data.md carries an attributemask listing the
        # record's columns, so a Delete row lists every audited column (and _old holds them all).
        self.changes.append((self.t, self.i, seq, meta.name, rec[1], 3, A_DELETE, uid, seq, old, "{}",
                             meta.all_mask))
        self.tr.append((self.t, seq, activity, meta.name, rec[1], self.org.uname[user]))
        rec[4] = False

    def _id(self, kind: str) -> str:
        self.nid += 1
        return _guid(self.org.seed, kind, self.i, self.nid)

    # --- one arrival ----------------------------------------------------------------------------------
    def arrival(self, i: int) -> None:
        r = self.r
        r.seed(self.base ^ ((i * 0x9E3779B97F4A7C15) & _MASK64))
        self.i, self.seq, self.nid = i, 0, 0
        self.recs: list[list[Any]] = []
        self.tr: list[tuple[Any, ...]] = []
        self.lead: list[Any] | None = None
        self.opp: list[Any] | None = None
        self.quotes: list[list[Any]] = []
        org = self.org
        self.acc = int(len(org.acc_id) * r.random() ** 1.6)  # a few big customers bring many leads
        terr = org.acc_terr[self.acc]
        self.owner = r.choice(org.reps_by_terr[terr])
        self.manager = org.managers[terr]
        try:
            self._story(_HS + int((i + r.random()) * self.step))
        except _PastClock:
            pass
        case = self.opp if self.opp is not None else self.lead
        if case is None:
            return
        ctype = "opportunity" if case is self.opp else "lead"
        for t, seq, act, otype, oid, res in self.tr:
            self.truth.append((case[1], ctype, act, t, res, otype, oid, seq))
        for rec in self.recs:
            if rec[4]:
                self.rows[rec[0]].append((*rec[2].values(), rec[3] + self.offset))

    def _story(self, t0: int) -> None:
        r, org = self.r, self.org
        if r.random() < 0.05:  # a rep enters an opportunity directly, without a lead
            self.t = self._work(t0, self.owner)
            self._new_opp(self.owner, txn=-1)
            self._opp_flow()
            return
        src = _SRC_CODES[bisect(_SRC_CUM, r.random() * _SRC_CUM[-1])]
        _, q_rate, days = _SOURCES[src]
        web = src == _WEB
        creator = org.WEBFORMS if web else self.owner
        self.t = t0 if web else self._work(t0, self.owner)  # web forms arrive around the clock
        first, last, full, af, al = org.lead_names[int(r.random() * len(org.lead_names))]
        product = r.choice(_PRODUCTS)
        acc_name = org.acc_name[self.acc]
        amount = float(round(self._value(), -3)) if r.random() < 0.5 else None
        self.lead = self._create(LEAD, {
            "leadid": self._id("lead"), "subject": f"{product} for {acc_name}", "fullname": full,
            "firstname": first, "lastname": last, "companyname": acc_name,
            "emailaddress1": f"{af}.{al}@{org.acc_domain[self.acc]}", "leadsourcecode": src,
            "statecode": 0, "statuscode": 1, "estimatedamount": amount,
            "transactioncurrencyid": org.acc_cur[self.acc],
            "parentaccountid": org.acc_id[self.acc] if r.random() < 0.7 else None,
        }, creator, self.owner, "Lead Captured")
        if r.random() < 0.55:
            self._wait(days * 0.15, self.owner)
            self._update(self.lead, A_UPDATE, self.owner, (("statuscode", 2),))
        if r.random() < 0.10:
            self._assign(self.lead, 1.0)
        decision = r.random()
        if decision < q_rate:
            self._wait(days, self.owner)
            # QualifyLead: the lead's Qualify and the new opportunity's Create share one transaction and
            # second; the lead's row comes first so the truth reads "Lead Qualified" -> "Opportunity Created"
            opp_id = self._id("opportunity")
            txn = self.seq
            pairs: tuple[tuple[str, Any], ...] = (
                ("statecode", 1), ("statuscode", 3), ("qualifyingopportunityid", opp_id))
            if r.random() < 0.6:
                comment = r.choice(("Budget confirmed", "Decision maker engaged"))
                pairs += (("qualificationcomments", comment),)
            self._update(self.lead, A_QUALIFY, self.owner, pairs, "Lead Qualified")
            self._new_opp(self.owner, txn=txn, opp_id=opp_id, name=self.lead[2]["subject"])
            self._opp_flow()
        elif decision < q_rate + (1 - q_rate) * 0.75:
            self._wait(days * 1.3, self.owner)
            status = r.choice((4, 4, 4, 5, 5, 6, 6, 6, 7))
            self._update(self.lead, A_DISQUALIFY, self.owner, (("statecode", 2), ("statuscode", status)),
                         "Lead Disqualified")
        # else: the lead stalls and stays open

    def _assign(self, rec: list[Any], days: float) -> None:
        """Assign (action 13) to another rep of the territory, usually by the manager."""
        org = self.org
        pool = [u for u in org.reps_by_terr[org.acc_terr[self.acc]] if u != self.owner]
        new = self.r.choice(pool or [u for u in org.reps if u != self.owner])
        actor = self.manager if self.r.random() < 0.7 else self.owner
        self._wait(days, actor)
        self._update(rec, A_ASSIGN, actor, (("ownerid", org.uid[new]),), "Owner Changed")
        self.owner = new

    def _value(self) -> float:
        return 6000.0 * self.org.acc_emp[self.acc] ** 0.3 * self.r.lognormvariate(0.0, 0.6)

    def _local_midnight(self, t: int, user: int) -> int:
        """A UserLocal date-only value: the user's local midnight of that day, in UTC."""
        off = self.org.uoff[user]
        return (t + off) // _DAY * _DAY - off

    def _local_day(self, t: int, user: int) -> int:
        return (t + self.org.uoff[user]) // _DAY

    # --- opportunity ----------------------------------------------------------------------------------
    def _new_opp(self, user: int, txn: int, opp_id: str | None = None, name: str | None = None) -> None:
        r, org = self.r, self.org
        value = float(round(self._value(), -2))
        self.opp = self._create(OPP, {
            "opportunityid": opp_id or self._id("opportunity"),
            "name": name or f"{r.choice(_PRODUCTS)} - {org.acc_name[self.acc]}",
            "customerid": org.acc_id[self.acc], "parentaccountid": org.acc_id[self.acc],
            "originatingleadid": self.lead[1] if self.lead else None, "statecode": 0, "statuscode": 1,
            "salesstage": 0, "stepname": _STEPS[0],
            "estimatedvalue": None if r.random() < 0.03 else value,  # null amounts on purpose
            "estimatedclosedate": self._local_midnight(self.t + int(r.uniform(20, 120) * _DAY), user),
            "closeprobability": _STAGE_PROB[0], "discountpercentage": r.choice((None, 0.0)),
            "transactioncurrencyid": org.acc_cur[self.acc],
        }, user, self.owner, "Opportunity Created", txn)
        self.base_value = value

    def _stage(self, stage: int) -> None:
        assert self.opp is not None
        self._update(self.opp, A_UPDATE, self.owner, (
            ("salesstage", stage), ("stepname", _STEPS[stage]), ("closeprobability", _STAGE_PROB[stage])),
            _STAGE_ACTIVITY[stage])

    def _opp_flow(self) -> None:
        reopened = False
        while True:
            won = self._advance()
            if won or reopened or self.r.random() >= 0.15:
                return
            self._wait(20.0, self.owner)
            actor = self.manager if self.r.random() < 0.3 else self.owner
            assert self.opp is not None
            self._update(self.opp, A_REOPEN, actor, (
                ("statecode", 0), ("statuscode", 1), ("actualclosedate", None), ("closeprobability", 50)),
                "Opportunity Reopened")
            reopened = True

    def _advance(self) -> bool:
        """Moves the open opportunity through the stages to Won (True) or Lost (False)."""
        r = self.r
        assert self.opp is not None
        st = self.opp[2]
        if st["salesstage"] < 1:
            self._wait(5.0, self.owner)
            if r.random() < 0.12:
                return self._lose()
            self._stage(1)
            if r.random() < 0.06:
                self._assign(self.opp, 2.0)
        self._wait(7.0, self.owner)
        if r.random() < 0.16:
            return self._lose()
        if st["salesstage"] != 2:
            self._stage(2)  # after a reopen from Close this is a re-entry
        quote = self._quotes()
        self._wait(8.0, self.owner)
        if r.random() < 0.12:
            return self._lose()
        if r.random() < 0.2:  # the close date slips (whole days: it stays the creator's local midnight)
            self._update(self.opp, A_UPDATE, self.owner, (
                ("estimatedclosedate", st["estimatedclosedate"] + r.randint(7, 45) * _DAY),))
        self._stage(3)
        self._wait(10.0, self.owner)
        if r.random() < 0.64:
            self._win(quote)
            return True
        return self._lose()

    def _lose(self) -> bool:
        r = self.r
        assert self.opp is not None
        txn = self.seq
        # LoseOpportunity closes the opportunity's active quotes in the same transaction and second.
        self._update(self.opp, A_LOSE, self.owner, (
            ("statecode", 2), ("statuscode", 5 if r.random() < 0.7 else 4),
            ("actualclosedate", self._local_midnight(self.t, self.owner)), ("closeprobability", 0)),
            "Opportunity Lost")
        for q in self.quotes:
            if q[4] and q[2]["statecode"] == 1:
                self._close_quote(q, 5, txn)
        self._wait(3.0, self.owner)
        for q in self.quotes:
            if q[4] and (q[2]["statecode"] == 0 and r.random() < 0.3 or q[2]["statecode"] == 3
                         and q[2]["statuscode"] in (5, 6) and r.random() < 0.08):
                self._delete(q, self.owner, "Quote Deleted")
        return False

    # --- quotes ---------------------------------------------------------------------------------------
    def _new_quote(self, number: str, revision: int, line: float, txn: int = -1) -> list[Any]:
        r, org = self.r, self.org
        assert self.opp is not None
        disc = r.choice((None, 0.0))
        q = self._create(QUOTE, {
            "quoteid": self._id("quote"), "name": f"Quote for {self.opp[2]['name']}", "quotenumber": number,
            "revisionnumber": revision, "opportunityid": self.opp[1], "customerid": org.acc_id[self.acc],
            "statecode": 0, "statuscode": 1, "totallineitemamount": line, "discountpercentage": disc,
            "discountamount": disc, "totalamount": line, "transactioncurrencyid": org.acc_cur[self.acc],
        }, self.owner, self.owner, "Quote Created", txn)
        self.quotes.append(q)
        return q

    def _quote_number(self) -> str:
        code = "".join(self.r.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(5))
        return f"QUO-{self.i % 90_000 + 10_000:05d}-{code}{len(self.quotes) % 10}"

    def _line(self) -> float:
        return round(self.base_value * self.r.uniform(0.85, 1.15), 2)

    def _quotes(self) -> list[Any]:
        """Draft -> discount(s) -> activate, with revisions and rework; returns the quote to close with."""
        r = self.r
        assert self.opp is not None
        self._wait(1.5, self.owner)
        q = self._new_quote(self._quote_number(), 0, self._line())
        if r.random() < 0.05:  # a duplicate draft, deleted soon after
            self._soon(self.owner)
            dup = self._new_quote(self._quote_number(), 0, self._line())
            self._wait(0.5, self.owner)
            self._delete(dup, self.owner, "Quote Deleted")
        self._prepare(q)
        if r.random() < 0.15:  # rework: back to Develop, then Propose again with a revised quote
            self._wait(4.0, self.owner)
            self._stage(1)
            self._wait(5.0, self.owner)
            self._stage(2)
            q = self._revise(q)
        revisions = 0
        while revisions < 3 and r.random() < (0.3 if revisions == 0 else 0.15):
            self._wait(6.0, self.owner)
            q = self._revise(q)
            revisions += 1
        if r.random() < 0.08:  # an alternative offer stays active next to the main one
            self._wait(2.0, self.owner)
            alt = self._new_quote(self._quote_number(), 0, self._line())
            self._prepare(alt)
        return q

    def _prepare(self, q: list[Any]) -> None:
        r = self.r
        discounted = r.random() < 0.45
        if discounted:
            self._discount(q)
            if r.random() < 0.15:  # discount drift: a second, larger discount
                self._discount(q, q[2]["discountpercentage"])
        if not (discounted and r.random() < 0.25):  # else: activated in the same second as the discount
            self._wait(0.3, self.owner)
        day = self._local_day(self.t, self.owner)
        self._update(q, A_ACTIVATE, self.owner, (
            ("statecode", 1), ("statuscode", 2), ("effectivefrom", day), ("effectiveto", day + 30)),
            "Quote Activated")

    def _discount(self, q: list[Any], previous: float | None = None) -> None:
        r = self.r
        if previous is None:
            within = r.random() < 0.75
            pct = round(r.uniform(2, _DISCOUNT_POLICY), 1) if within else round(r.uniform(16, 35), 1)
        else:
            pct = round(previous + r.uniform(1, 8), 1)
        above = pct > _DISCOUNT_POLICY
        actor = self.manager if above and r.random() < 0.6 else self.owner
        self._wait(2.0 if above else 0.5, actor)  # approvals outside policy take longer
        line = q[2]["totallineitemamount"]
        amount = round(line * pct / 100, 2)
        self._update(q, A_UPDATE, actor, (
            ("discountpercentage", pct), ("discountamount", amount),
            ("totalamount", round(line - amount, 2))), "Discount Applied")

    def _revise(self, old: list[Any]) -> list[Any]:
        """ReviseQuote: the active quote closes as Revised and a new draft revision opens, one transaction."""
        txn = self.seq
        self._update(old, A_REVISE, self.owner, (("statecode", 3), ("statuscode", 7)), "Quote Revised")
        st = old[2]
        new = self._new_quote(st["quotenumber"], st["revisionnumber"] + 1,
                              round(st["totallineitemamount"] * self.r.uniform(0.9, 1.05), 2), txn)
        self._prepare(new)
        return new

    def _close_quote(self, q: list[Any], status: int, txn: int = -1) -> None:
        self._update(q, A_CLOSE, self.owner, (
            ("statecode", 3), ("statuscode", status), ("closedon", self._local_day(self.t, self.owner))),
            "Quote Closed", txn)

    def _win(self, quote: list[Any]) -> None:
        r = self.r
        assert self.opp is not None
        if quote[2]["statecode"] != 1:  # reopened opportunities start over with a new offer
            quote = self._new_quote(self._quote_number(), 0, self._line())
            self._prepare(quote)
        txn = self.seq
        self._update(quote, A_WIN, self.owner, (
            ("statecode", 2), ("statuscode", 4), ("closedon", self._local_day(self.t, self.owner))),
            "Quote Accepted")
        for q in self.quotes:
            if q[4] and q is not quote and q[2]["statecode"] == 1:
                self._close_quote(q, 6, txn)
        same = r.random() < 0.5  # WinQuote may close the opportunity in the same transaction
        if not same:
            self._soon(self.owner)
        self._update(self.opp, A_WIN, self.owner, (
            ("statecode", 1), ("statuscode", 3), ("actualvalue", quote[2]["totalamount"]),
            ("actualclosedate", self._local_midnight(self.t, self.owner)), ("closeprobability", 100)),
            "Opportunity Won", txn if same else -1)
        if r.random() < 0.95:
            self._order(quote)

    # --- order to cash --------------------------------------------------------------------------------
    def _order(self, quote: list[Any]) -> None:
        r, org = self.r, self.org
        assert self.opp is not None
        self._wait(1.5, self.owner)
        qs = quote[2]
        order = self._create(ORDER, {
            "salesorderid": self._id("salesorder"), "name": f"Order for {self.opp[2]['name']}",
            "ordernumber": qs["quotenumber"].replace("QUO-", "ORD-"), "opportunityid": self.opp[1],
            "quoteid": quote[1], "customerid": org.acc_id[self.acc], "statecode": 0, "statuscode": 1,
            "totalamount": qs["totalamount"], "discountpercentage": qs["discountpercentage"],
            "transactioncurrencyid": org.acc_cur[self.acc],
        }, self.owner, self.owner, "Sales Order Created")
        if r.random() < 0.06:
            self._cancel_order(order)
            return
        self._wait(1.5, self.owner)
        self._update(order, A_SUBMIT, self.owner, (
            ("statecode", 1), ("statuscode", 3), ("submitdate", self.t)), "Order Submitted")
        if r.random() < 0.04:
            self._cancel_order(order)
            return
        delivered = None
        if r.random() < 0.85:
            self._wait(6.0, self.owner)
            self._update(order, A_FULFILL, self.owner, (
                ("statecode", 3), ("statuscode", 100001), ("datefulfilled", self.t)), "Order Fulfilled")
            delivered = self._local_day(self.t, self.owner)
        elif r.random() < 0.5:
            return  # submitted, never invoiced (yet)
        total = order[2]["totalamount"]
        half = round(total * 0.5, 2)
        parts = [total] if r.random() >= 0.1 else [half, round(total - half, 2)]
        for n, amount in enumerate(parts):  # a few opportunities are billed in two invoices
            self._wait(2.0 if n == 0 else 25.0, self.owner)
            self._invoice(order, amount, delivered, replacements=1)

    def _cancel_order(self, order: list[Any]) -> None:
        self._wait(2.0, self.owner)
        self._update(order, A_CANCEL, self.owner, (("statecode", 2), ("statuscode", 4)), "Order Canceled")
        if self.r.random() < 0.5:
            self._wait(5.0, self.owner)
            self._delete(order, self.owner, "Order Deleted")

    def _invoice(self, order: list[Any], amount: float | None, delivered: int | None,
                 replacements: int) -> None:
        r, org = self.r, self.org
        assert self.opp is not None
        terms = r.choice((1, 1, 1, 2, 3, 4))
        created_day = self._local_day(self.t, self.owner)
        txn = self.seq
        inv = self._create(INV, {
            "invoiceid": self._id("invoice"), "name": f"Invoice for {self.opp[2]['name']}",
            "invoicenumber": f"INV-{self.i % 90_000 + 10_000:05d}-{self.nid:02d}",
            # ~30% carry no opportunity: they reach it only through their order, on purpose
            "opportunityid": None if r.random() < 0.3 else self.opp[1], "salesorderid": order[1],
            "customerid": org.acc_id[self.acc], "statecode": 0, "statuscode": 1, "totalamount": amount,
            "paymenttermscode": terms, "duedate": created_day + _TERMS_DAYS[terms],
            "datedelivered": delivered,
            "transactioncurrencyid": org.acc_cur[self.acc],
        }, self.owner, self.owner, "Invoice Created", txn)
        if order[2]["statecode"] != 4:
            self._update(order, A_INVOICE, self.owner, (("statecode", 4), ("statuscode", 100003)), None, txn)
        if r.random() < 0.9:
            self._wait(0.5, self.owner)
            self._update(inv, A_UPDATE, self.owner, (("statuscode", 4),), "Invoice Sent")
        if r.random() < 0.05:
            self._wait(3.0, self.owner)
            self._update(inv, A_CANCEL, self.owner, (("statecode", 3), ("statuscode", 100003)),
                         "Invoice Canceled")
            if r.random() < 0.5:
                self._wait(2.0, self.owner)
                self._delete(inv, self.owner, "Invoice Deleted")
            if replacements and r.random() < 0.8:
                self._wait(2.0, self.owner)
                self._invoice(order, amount, delivered, replacements - 1)
            return
        if r.random() < 0.06:
            return  # never paid
        created = inv[2]["createdon"]
        days = _TERMS_DAYS[terms]
        if terms == 2 and r.random() < 0.6:
            due_in = r.uniform(3, 10)  # takes the early-payment discount
        elif r.random() < 0.7:
            due_in = r.uniform(0.3, 0.95) * days
        else:
            due_in = days + r.lognormvariate(math.log(12), 0.7)  # late
        if r.random() < 0.15:  # partial payment first
            self.t = self._work(max(self.t, created + int(due_in * 0.6 * _DAY)), self.owner)
            self._update(inv, A_PAID, self.owner, (("statecode", 2), ("statuscode", 100002)),
                         "Payment Received")
        self.t = self._work(max(self.t + 1, created + int(due_in * _DAY)), self.owner)
        self._update(inv, A_PAID, self.owner, (("statecode", 2), ("statuscode", 100001)), "Payment Received")


# --- frames -------------------------------------------------------------------------------------------
_CHANGE_SCHEMA = {"t": pl.Int64, "arrival": pl.Int64, "seq": pl.Int32, "objecttypecode": pl.Utf8,
                  "_objectid_value": pl.Utf8, "operation": pl.Int32, "action": pl.Int32,
                  "_userid_value": pl.Utf8, "txn": pl.Int32, "_old": pl.Utf8, "_new": pl.Utf8,
                  "attributemask": pl.Utf8}


_TRUTH_TMP = {"case_id": pl.Utf8, "case_type": pl.Utf8, "activity": pl.Utf8, "t": pl.Int64,
              "resource": pl.Utf8, "object_type": pl.Utf8, "object_id": pl.Utf8, "seq": pl.Int32}


def _columns(rows: list[tuple[Any, ...]], schema: dict[str, Any]) -> pl.DataFrame:
    # transposing in C and building one Series per column is several times faster than orient="row"
    cols: list[Any] = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    return pl.DataFrame([pl.Series(name, values, dtype=dtype)
                         for (name, dtype), values in zip(schema.items(), cols, strict=True)])


def _sorted(parts: list[pl.DataFrame], by: list[str],
            schema: dict[str, Any]) -> tuple[pl.DataFrame, pl.Series]:
    """Concatenates block frames and sorts them one column at a time (a plain sort would hold two full copies
    of the audit strings at once: 7.9 GB peak for 1M leads). Also returns the permutation used."""
    if not parts:
        return pl.DataFrame(schema=schema), pl.Series([], dtype=pl.UInt32)
    frame = pl.concat(parts, rechunk=False)
    parts.clear()
    order = frame.select(pl.arg_sort_by(by)).to_series()
    out = []
    for name in frame.columns:
        out.append(frame.get_column(name).gather(order))
        frame = frame.drop(name)  # frees the unsorted column
    return pl.DataFrame(out), order


def _column_dtype(table: Table) -> list[tuple[str, pl.DataType, int]]:
    out: list[tuple[str, pl.DataType, int]] = []
    for c in table.columns:
        if c.type == "DateTime":
            kind = 2 if c.date_only and c.behavior == "DateOnly" else 1
            out.append((c.api_name, pl.Date() if kind == 2 else pl.Datetime("us", "UTC"), kind))
        elif c.type in ("Integer", "Picklist", "State", "Status"):
            out.append((c.api_name, pl.Int32(), 0))
        elif c.type == "BigInt":
            out.append((c.api_name, pl.Int64(), 0))
        elif c.type in ("Money", "Decimal"):
            out.append((c.api_name, pl.Float64(), 0))
        elif c.type == "Boolean":
            out.append((c.api_name, pl.Boolean(), 0))
        else:
            out.append((c.api_name, pl.Utf8(), 0))
    return out


def _table_frame(table: Table, rows: list[tuple[Any, ...]], extra: tuple[str, ...] = ()) -> pl.DataFrame:
    """Row tuples in schema column order (plus `extra` Int64 columns) -> a frame with the contract dtypes."""
    spec = _column_dtype(table)
    cols: list[Any] = list(zip(*rows, strict=True)) if rows else [() for _ in range(len(spec) + len(extra))]
    series = []
    for (name, dtype, kind), values in zip(spec, cols, strict=False):
        if kind == 1:
            s = (pl.Series(name, values, dtype=pl.Int64) * 1_000_000).cast(pl.Datetime("us")) \
                .dt.replace_time_zone("UTC")
        elif kind == 2:
            s = pl.Series(name, values, dtype=pl.Int32).cast(pl.Date)
        else:
            s = pl.Series(name, values, dtype=dtype)
        series.append(s)
    series += [pl.Series(name, values, dtype=pl.Int64) for name, values in
               zip(extra, cols[len(spec):], strict=True)]
    return pl.DataFrame(series)


def _splitmix(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_HEX_POS = np.array([*range(8), *range(9, 13), *range(14, 18), *range(19, 23), *range(24, 36)])


def _guids(keys: np.ndarray, salt: int) -> pl.Series:
    """Vectorised v4-style GUID strings from unique uint64 keys (audit ids, transaction ids)."""
    step = 1 << 20  # bounded temporaries (the nibble matrices are 70 bytes a key)
    return pl.concat([_guid_chunk(keys[lo:lo + step], salt) for lo in range(0, len(keys), step)] or
                     [pl.Series([], dtype=pl.Utf8)])


def _guid_chunk(keys: np.ndarray, salt: int) -> pl.Series:
    with np.errstate(over="ignore"):
        a = _splitmix(keys ^ np.uint64(salt & _MASK64))
        b = _splitmix(a ^ np.uint64((salt * 0x2545F4914F6CDD1D) & _MASK64))
    raw = np.stack([a, b], axis=1).astype(">u8").view(np.uint8).reshape(-1, 16)
    nib = np.empty((len(keys), 32), dtype=np.uint8)
    nib[:, 0::2] = raw >> 4
    nib[:, 1::2] = raw & 15
    nib[:, 12] = 4
    nib[:, 16] = 8 | (nib[:, 16] & 3)
    out = np.full((len(keys), 36), ord("-"), dtype=np.uint8)
    out[:, _HEX_POS] = _HEX[nib]
    return pl.Series(np.ascontiguousarray(out).view("S36").ravel()).cast(pl.Utf8)


def simulate(seed: int, leads: int, clock: datetime | None = None) -> OrgData:
    """The org of `leads` leads a year, generated from `seed`, as it stands at `clock`."""
    started = time.perf_counter()
    if leads < 1:
        raise ValueError(f"leads must be at least 1, got {leads}")
    clock = clock or BASE_CLOCK
    if clock.tzinfo is None:
        clock = clock.replace(tzinfo=UTC)
    clk = math.floor(clock.timestamp())
    org = _Org(seed, leads)
    planner = _Planner(org, clk, leads)
    # arrival i comes at or after HS + int(i * step): plan every i whose earliest time is not after the clock
    n = max(0, math.floor((clk - _HS) / planner.step))
    while _HS + int(n * planner.step) <= clk:
        n += 1
    change_parts, truth_parts = [], []
    row_parts: list[list[pl.DataFrame]] = [[] for _ in _DYNAMIC]
    for lo in range(0, n, _BLOCK):
        # Planning allocates millions of small acyclic objects; the cyclic GC would rescan them for nothing
        # (~20% of the run time), so it is paused per block and the block's lists are dropped right after.
        gc_was_on = gc.isenabled()
        gc.disable()
        try:
            for i in range(lo, min(n, lo + _BLOCK)):
                planner.arrival(i)
        finally:
            if gc_was_on:
                gc.enable()
        change_parts.append(_columns(planner.changes, _CHANGE_SCHEMA))
        truth_parts.append(_columns(planner.truth, _TRUTH_TMP))
        for tb in range(1, len(_DYNAMIC)):
            row_parts[tb].append(_table_frame(TABLES[_DYNAMIC[tb]], planner.rows[tb], ("_change",)))
        planner.offset += len(planner.changes)
        planner.changes, planner.truth = [], []
        planner.rows = [[] for _ in _DYNAMIC]

    static = org.static_versions
    dynamic, order = _sorted(change_parts, ["t", "arrival", "seq"], _CHANGE_SCHEMA)
    dynamic = dynamic.with_columns(
        _version=pl.int_range(static + 1, static + 1 + dynamic.height, dtype=pl.Int64))
    static_changes = _columns(org.static_audits, {**_CHANGE_SCHEMA, "_version": pl.Int64})
    changes = pl.concat([static_changes, dynamic], rechunk=False)
    arrival = changes["arrival"].to_numpy()
    key = np.where(arrival >= 0, (arrival.astype(np.int64) << 16), np.int64(1) << 62).astype(np.uint64)
    audit_key = key | changes["seq"].to_numpy().astype(np.uint64)
    txn_key = key | changes["txn"].to_numpy().astype(np.uint64)
    audits = changes.select(
        auditid=_guids(audit_key, _stable(seed, "audit")),
        createdon=(pl.col("t") * 1_000_000).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
        operation="operation", action="action", objecttypecode="objecttypecode",
        _objectid_value="_objectid_value", _userid_value="_userid_value",
        _callinguserid_value=pl.lit(None, pl.Utf8), _regardingobjectid_value=pl.lit(None, pl.Utf8),
        # no evidence that Create audits carry a mask; Delete and Update ones do (see _delete/_update)
        attributemask="attributemask",
        transactionid=_guids(txn_key, _stable(seed, "transaction")),
        useradditionalinfo=pl.lit(None, pl.Utf8), _old="_old", _new="_new", _version="_version")
    # version of the change at unsorted position j = static + 1 + (its sorted position)
    position = np.empty(len(order), dtype=np.int64)
    position[order.to_numpy()] = np.arange(len(order), dtype=np.int64)

    rows: dict[str, pl.DataFrame] = {
        "transactioncurrency": _table_frame(TABLES["transactioncurrency"], org.currency_rows),
        "systemuser": _table_frame(TABLES["systemuser"], org.user_rows),
        "account": _table_frame(TABLES["account"], org.account_rows),
    }
    for tb in range(1, len(_DYNAMIC)):
        table = TABLES[_DYNAMIC[tb]]
        parts = row_parts[tb] or [_table_frame(table, [], ("_change",))]
        frame = pl.concat(parts, rechunk=False)
        parts.clear()
        version = pl.Series("versionnumber", position[frame["_change"].to_numpy()] + static + 1)
        rows[table.logical_name] = frame.with_columns(version).select([c.api_name for c in table.columns])

    deleted = audits.filter(pl.col("operation") == 3).select(
        table="objecttypecode", id="_objectid_value", version="_version", deletedon="createdon")
    truth = _sorted(truth_parts, ["case_id", "t", "seq"], _TRUTH_TMP)[0].select(
        "case_id", "case_type", "activity",
        timestamp=(pl.col("t") * 1_000_000).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
        resource="resource", object_type="object_type", object_id="object_id")
    max_version = static + dynamic.height
    stats: dict[str, float] = {"arrivals": float(n), "changes": float(dynamic.height),
                               "truth_events": float(truth.height)}
    stats.update({f"rows.{name}": float(frame.height) for name, frame in rows.items()})
    stats["seconds"] = time.perf_counter() - started
    return OrgData(seed=seed, leads=leads, clock=clock, meta=org.meta, rows=rows,
                   deleted=deleted.cast(DELETED_SCHEMA), audits=audits,  # type: ignore[arg-type]
                   truth=truth.cast(TRUTH_SCHEMA), max_version=max_version, stats=stats)  # type: ignore[arg-type]
