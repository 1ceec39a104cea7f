"""Order to cash: the sales order of a won quote, its invoices and their payments, as the planner's last act.

An order is submitted, fulfilled (or canceled and sometimes deleted), then billed in one invoice or two;
an invoice is sent, paid early, on time or late (sometimes in two payments), canceled and replaced, or
never paid. Payment terms set the due date.
"""

from __future__ import annotations

import math
from typing import Any

from sandbox.sim_audit import _DAY, A_CANCEL, A_FULFILL, A_INVOICE, A_PAID, A_SUBMIT, A_UPDATE, INV, ORDER
from sandbox.sim_recorder import _Recorder

_TERMS_DAYS = {1: 30, 2: 30, 3: 45, 4: 60}


class _OrderToCash(_Recorder):
    """The order-to-cash steps of an arrival whose opportunity was won; the story sets these three."""

    acc: int
    owner: int
    opp: list[Any] | None

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
            ("statecode", 1), ("statuscode", 3), ("submitdate", self._local_midnight(self.t, self.owner))),
            "Order Submitted")
        if r.random() < 0.04:
            self._cancel_order(order)
            return
        delivered = None
        if r.random() < 0.85:
            self._wait(6.0, self.owner)
            self._update(order, A_FULFILL, self.owner, (
                ("statecode", 3), ("statuscode", 100001), ("datefulfilled", self._local_midnight(self.t, self.owner))),
                "Order Fulfilled")
            delivered = self._local_midnight(self.t, self.owner)  # UserLocal, Format DateOnly: a local midnight
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
