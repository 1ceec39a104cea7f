"""The per-arrival story: a lead, or an opportunity a rep enters directly, told forward from its arrival.

Arrival i is planned from its own RNG, seeded by a stable hash of (seed, i): a lead from a weighted source
is captured, worked, then qualified into an opportunity, disqualified or left open; the opportunity moves
through the sales stages with quotes (discounts, revisions, alternatives), is won or lost and sometimes
reopened, and a won one gets a contract (sandbox/sim_contract.py) and goes on to order to cash
(sandbox/sim_cash.py). The truth the arrival leaves is keyed by its case: the opportunity if there is one, else
the lead.
"""

from __future__ import annotations

from bisect import bisect
from itertools import accumulate
from typing import Any

from sandbox.sim_audit import (
    _DAY,
    A_ACTIVATE,
    A_ASSIGN,
    A_CLOSE,
    A_DISQUALIFY,
    A_LOSE,
    A_QUALIFY,
    A_REOPEN,
    A_REVISE,
    A_UPDATE,
    A_WIN,
    LEAD,
    OPP,
    QUOTE,
)
from sandbox.sim_cash import _OrderToCash
from sandbox.sim_contract import _Contracts
from sandbox.sim_recorder import _PastClock
from sandbox.sim_static import _HS, _MASK64, _PRODUCTS

# leadsourcecode -> (share of leads, qualification rate, median working days to a decision)
_SOURCES = {1: (12, 0.10, 12.0), 2: (6, 0.45, 3.0), 3: (8, 0.35, 5.0), 4: (8, 0.40, 4.0), 5: (5, 0.15, 10.0),
            6: (8, 0.25, 7.0), 7: (10, 0.30, 6.0), 8: (30, 0.20, 9.0), 9: (7, 0.35, 5.0), 10: (6, 0.15, 10.0)}
_SRC_CODES = tuple(_SOURCES)
_SRC_CUM = tuple(accumulate(v[0] for v in _SOURCES.values()))
_WEB = 8
_DISCOUNT_POLICY = 15.0  # percent; discounts above it are "outside policy" and often applied by a manager
_STEPS = ("1-Qualify", "2-Develop", "3-Propose", "4-Close")
_STAGE_ACTIVITY = (None, "Stage Entered: Develop", "Stage Entered: Propose", "Stage Entered: Close")
_STAGE_PROB = (10, 25, 50, 75)


class _Planner(_OrderToCash, _Contracts):
    """Plans arrivals one by one, appending visible changes, truth and final row states to block lists."""

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
            "estimatedclosedate": self._local_day(self.t + int(r.uniform(20, 120) * _DAY), user),
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
        if r.random() < 0.2:  # the close date slips by whole days
            self._update(self.opp, A_UPDATE, self.owner, (
                ("estimatedclosedate", st["estimatedclosedate"] + r.randint(7, 45)),))
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
            ("actualclosedate", self._local_day(self.t, self.owner)), ("closeprobability", 0)),
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
        # UserLocal date-only columns entered in the form: the owner's local midnight, in UTC.
        midnight = self._local_midnight(self.t, self.owner)
        self._update(q, A_ACTIVATE, self.owner, (
            ("statecode", 1), ("statuscode", 2), ("effectivefrom", midnight), ("effectiveto", midnight + 30 * _DAY)),
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
            ("actualclosedate", self._local_day(self.t, self.owner)), ("closeprobability", 100)),
            "Opportunity Won", txn if same else -1)
        self._contract()
        if r.random() < 0.95:
            self._order(quote)
