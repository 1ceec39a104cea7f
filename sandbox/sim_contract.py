"""Contracts: the custom table new_contract in a won deal's story, told from the win on with an RNG of its own.

Every won opportunity gets a contract its owner drafts a few days after the win (Active/Active). Most are signed
within a couple of weeks, some weeks to months late, some never; signing sets statuscode Signed and new_signedon,
the signing user's local day, and is the truth's "Contract Signed". The contract draws from an RNG seeded by a
stable hash of (seed, arrival) and numbers its changes from _SEQ up, so the rest of the story (its values, times,
ids and sequence numbers) is what it would be without contracts. Its cursor moves forward from the win and stops at
its first change after the clock, as the story's does, so a later clock only adds contract changes after this one.
"""

from __future__ import annotations

import random
from typing import Any

from sandbox.sim_audit import A_UPDATE, CONTRACT
from sandbox.sim_recorder import _PastClock, _Recorder
from sandbox.sim_static import _MASK64, _guid, _Org, _stable

SIGNED = 100_000_000  # new_contract statuscode "Signed" (sandbox/schema.py)
_SEQ = 1 << 14  # the contract's sequence numbers start here, above any a story reaches; audit keys allow < 1 << 16


class _Contracts(_Recorder):
    """The contract of an arrival whose opportunity was won; the story sets these four."""

    i: int
    opp: list[Any] | None
    owner: int
    manager: int

    def __init__(self, org: _Org, clock: int, leads: int) -> None:
        super().__init__(org, clock, leads)
        self.contract_base = _stable(org.seed, "contracts")
        self.contract_r = random.Random()

    def _contract(self) -> None:
        """Drafts the won opportunity's contract and signs it, on the contract's own RNG, cursor and sequence."""
        assert self.opp is not None
        story = self.r, self.t, self.seq
        r = self.r = self.contract_r
        r.seed(self.contract_base ^ ((self.i * 0x9E3779B97F4A7C15) & _MASK64))
        self.seq = _SEQ
        try:
            self._wait(3.0, self.owner)
            rec = self._create(CONTRACT, {
                "new_contractid": _guid(self.org.seed, "new_contract", self.i), "new_opportunityid": self.opp[1],
                "new_name": f"Contract for {self.opp[2]['name']}", "statecode": 0, "statuscode": 1,
            }, self.owner, self.owner, None)
            fate = r.random()
            if fate < 0.08:
                return  # never signed: the customer walked away from the paperwork
            signer = self.manager if r.random() < 0.2 else self.owner
            if fate < 0.8:
                self._wait(6.0, signer, sigma=0.6)  # within a couple of weeks
            else:
                self._wait(45.0, signer, sigma=0.5)  # late: legal review, procurement, a signatory away
            self._update(rec, A_UPDATE, signer, (
                ("statuscode", SIGNED), ("new_signedon", self._local_day(self.t, signer))), "Contract Signed")
        except _PastClock:
            pass
        finally:
            self.r, self.t, self.seq = story
