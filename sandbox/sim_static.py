"""The org's static records and deterministic ids: currencies, users, accounts and the names they carry.

`_Org(seed, leads)` builds what exists before HISTORY_START (three currencies, the application and system
users, managers and reps with their territories, time zones and pace, and accounts, some with names that
break naive CSV/JSON/SQL/XML handling on purpose), taking the first versions. Every id and seed is a stable
hash of (seed, kind, index), never Python's salted hash(), so the org is the same in every process; audit
and transaction ids are the same hash, vectorised over numpy keys.
"""

from __future__ import annotations

import hashlib
import random
import unicodedata
from typing import Any

import numpy as np
import polars as pl

from sandbox.orgdata import HISTORY_START, OrgMeta
from sandbox.schema import INDUSTRIES
from sandbox.sim_audit import _DAY, _META, A_CREATE, ACC, _created_json

_HS = int(HISTORY_START.timestamp())
_MASK64 = (1 << 64) - 1

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


# --- ids and ASCII folding ----------------------------------------------------------------------------

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


# --- static records -----------------------------------------------------------------------------------

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
