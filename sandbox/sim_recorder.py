"""An arrival's clock and the changes it records: the mechanics under every story the planner tells.

The cursor only moves forward and lands in the acting user's working hours (08-18 local, most weekends
off), at a pace that differs per user. Each create, update or delete becomes one audit change tuple (with
the attributemask and _old/_new JSON of sandbox/sim_audit.py) and, when it stands for an activity, one
truth event; the first change after the clock raises _PastClock, which cuts the story there.
"""

from __future__ import annotations

import random
from typing import Any

from sandbox.orgdata import HISTORY_DAYS
from sandbox.sim_audit import _DAY, _DYNAMIC, _META, A_CREATE, A_DELETE, _created_json
from sandbox.sim_static import _guid, _Org, _stable


class _PastClock(Exception):
    """The story reached its first change after the clock; nothing from here on is visible."""


class _Recorder:
    """The block lists of visible changes, truth and final row states, and the cursor of the arrival."""

    recs: list[list[Any]]  # the arrival's records: [table, id, state, its last change, alive]
    tr: list[tuple[Any, ...]]  # the arrival's truth events: (t, seq, activity, object type, id, resource)

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

    def _local_midnight(self, t: int, user: int) -> int:
        """A UserLocal date-only value: the user's local midnight of that day, in UTC."""
        off = self.org.uoff[user]
        return (t + off) // _DAY * _DAY - off

    def _local_day(self, t: int, user: int) -> int:
        return (t + self.org.uoff[user]) // _DAY

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
