"""The emulated org's metadata: tables, columns, ColumnNumbers, choice labels, lookup targets.

This is what `EntityDefinitions` and `.../Attributes` serve and what the simulator fills. Column names are
the real Dynamics 365 Sales logical names; lookups are exposed in the Web API as `_<name>_value`
([PD] webapi/web-api-types-operations.md, "Lookup properties"). ColumnNumber is what audit `attributemask`
lists ([PD] auditing/retrieve-audit-data.md); the numbers here are stable for the life of the sandbox, as
they are for one real org, but differ between orgs, so clients must read them from metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

# AttributeType values as EntityDefinitions(...)/Attributes returns them.
LOOKUP_TYPES = frozenset({"Lookup", "Owner", "Customer"})
CHOICE_TYPES = frozenset({"Picklist", "State", "Status"})


@dataclass(frozen=True)
class Column:
    name: str  # logical name (what metadata and attributemask use)
    type: str  # AttributeType
    number: int  # ColumnNumber
    options: dict[int, str] | None = None  # choice labels (FormattedValue)
    targets: tuple[str, ...] = ()  # lookup target tables
    date_only: bool = False  # DateTime with Format=DateOnly (display only: it says nothing of the value)
    # DateTimeBehavior ([PD] behavior-format-date-time-attribute.md): "UserLocal" values are UTC instants (a
    # DateOnly-format one entered in a form is the user's local midnight in UTC, so its UTC day can shift);
    # "DateOnly" values are calendar days, Edm.Date in the Web API ("2026-06-01"). Each column's pair follows
    # Microsoft's table reference (MicrosoftDocs/dynamics-365-customer-engagement ce/developer/reference/entities).
    behavior: str = "UserLocal"
    audited: bool = True
    navigations: tuple[str, ...] | None = None  # single-valued navigation properties, when not the rule's
    custom: bool = False  # IsCustomAttribute: a column a maker added (with the publisher's prefix)

    @property
    def api_name(self) -> str:
        """The property name in Web API JSON and in `$select`."""
        return f"_{self.name}_value" if self.type in LOOKUP_TYPES else self.name

    @property
    def navigation(self) -> tuple[str, ...]:
        """The single-valued navigation properties a lookup's `_<name>_value` belongs to ([PD]
        webapi/web-api-navigation-properties.md): "In most cases the `<name>` found in the lookup property will
        match the name of the navigation property, except in the case of multi-table lookups", which have one
        per table, e.g. `customerid_account` and `customerid_contact` (a Customer lookup is an account or a
        contact). An Owner lookup has one, `ownerid`, to the owning principal."""
        if self.navigations is not None or not self.is_lookup:
            return self.navigations or ()
        if self.type == "Customer":
            return (f"{self.name}_account", f"{self.name}_contact")
        if self.type == "Lookup" and len(self.targets) > 1:
            return tuple(f"{self.name}_{target}" for target in self.targets)
        return (self.name,)

    @property
    def is_lookup(self) -> bool:
        return self.type in LOOKUP_TYPES


@dataclass(frozen=True)
class Table:
    logical_name: str
    entity_set: str
    primary_id: str
    primary_name: str | None
    object_type_code: int
    columns: tuple[Column, ...]
    change_tracking: bool = True
    # False: a tracked read is refused even with change tracking on, as the docs show none (sandbox/store.py).
    delta_documented: bool = True
    audit: bool = True
    custom: bool = False  # IsCustomEntity: a table a maker created, not one Microsoft ships
    extra: dict[str, object] = field(default_factory=dict)

    @cached_property
    def by_name(self) -> dict[str, Column]:
        return {c.name: c for c in self.columns}

    @cached_property
    def by_api_name(self) -> dict[str, Column]:
        return {c.api_name: c for c in self.columns}

    @cached_property
    def by_number(self) -> dict[int, Column]:
        return {c.number: c for c in self.columns}

    def column(self, api_or_logical_name: str) -> Column | None:
        return self.by_api_name.get(api_or_logical_name) or self.by_name.get(api_or_logical_name)


# --- shared choice sets ---------------------------------------------------------------------------------

LEAD_SOURCES = {
    1: "Advertisement",
    2: "Employee Referral",
    3: "External Referral",
    4: "Partner",
    5: "Public Relations",
    6: "Seminar",
    7: "Trade Show",
    8: "Web",
    9: "Word of Mouth",
    10: "Other",
}
SALES_STAGES = {0: "Qualify", 1: "Develop", 2: "Propose", 3: "Close"}
PAYMENT_TERMS = {1: "Net 30", 2: "2% 10, Net 30", 3: "Net 45", 4: "Net 60"}
# Customised option set (real orgs customise territorycode; the default has only "Default Value").
TERRITORIES = {1: "North America", 2: "EMEA", 3: "APAC", 4: "LATAM"}
INDUSTRIES = {
    1: "Accounting",
    6: "Business Services",
    7: "Consulting",
    12: "Financial",
    17: "Manufacturing",
    27: "Retail",
    33: "Wholesale",
}

STATES = {
    "lead": {0: "Open", 1: "Qualified", 2: "Disqualified"},
    "opportunity": {0: "Open", 1: "Won", 2: "Lost"},
    "quote": {0: "Draft", 1: "Active", 2: "Won", 3: "Closed"},
    "salesorder": {0: "Active", 1: "Submitted", 2: "Canceled", 3: "Fulfilled", 4: "Invoiced"},
    "invoice": {0: "Active", 2: "Paid", 3: "Canceled"},
    "account": {0: "Active", 1: "Inactive"},
    "new_contract": {0: "Active", 1: "Inactive"},
}
STATUSES = {
    "lead": {
        1: "New",
        2: "Contacted",
        3: "Qualified",
        4: "Lost",
        5: "Cannot Contact",
        6: "No Longer Interested",
        7: "Canceled",
    },
    "opportunity": {1: "In Progress", 2: "On Hold", 3: "Won", 4: "Canceled", 5: "Out-Sold"},
    "quote": {1: "In Progress", 2: "In Progress", 3: "Open", 4: "Won", 5: "Lost", 6: "Canceled", 7: "Revised"},
    "salesorder": {1: "New", 2: "Pending", 3: "In Progress", 4: "No Money", 100001: "Complete",
                   100002: "Partial", 100003: "Invoiced"},
    "invoice": {1: "New", 2: "Partially Shipped", 4: "Billed", 5: "Booked (applies to services)",
                6: "Installed (applies to product based)", 100001: "Complete", 100002: "Partial",
                100003: "Canceled"},
    "account": {1: "Active", 2: "Inactive"},
    "new_contract": {1: "Active", 2: "Inactive", 100_000_000: "Signed"},
}
# statuscode -> the statecode it belongs to (Dataverse rejects other pairs).
STATUS_STATE = {
    "lead": {1: 0, 2: 0, 3: 1, 4: 2, 5: 2, 6: 2, 7: 2},
    "opportunity": {1: 0, 2: 0, 3: 1, 4: 2, 5: 2},
    "quote": {1: 0, 2: 1, 3: 1, 4: 2, 5: 3, 6: 3, 7: 3},
    "salesorder": {1: 0, 2: 0, 3: 1, 4: 2, 100001: 3, 100002: 3, 100003: 4},
    "invoice": {1: 0, 2: 0, 4: 0, 5: 0, 6: 0, 100001: 2, 100002: 2, 100003: 3},
    "account": {1: 0, 2: 1},
    "new_contract": {1: 0, 2: 1, 100_000_000: 0},
}

# audit.action ([PD] reference/entities/audit.md, action choices) and audit.operation.
AUDIT_ACTIONS = {
    0: "Unknown", 1: "Create", 2: "Update", 3: "Delete", 4: "Activate", 5: "Deactivate", 11: "Cascade",
    12: "Merge", 13: "Assign", 14: "Share", 15: "Retrieve", 16: "Close", 17: "Cancel", 18: "Complete",
    20: "Resolve", 21: "Reopen", 22: "Fulfill", 23: "Paid", 24: "Qualify", 25: "Disqualify", 26: "Submit",
    27: "Reject", 28: "Approve", 29: "Invoice", 30: "Hold", 31: "Add Member", 32: "Remove Member",
    33: "Associate Entities", 34: "Disassociate Entities", 35: "Add Members", 36: "Remove Members",
    37: "Add Item", 38: "Remove Item", 39: "Add Substitute", 40: "Remove Substitute", 41: "Set State",
    42: "Renew", 43: "Revise", 44: "Win", 45: "Lose", 46: "Internal Processing", 47: "Reschedule",
    48: "Modify Share", 49: "Unshare", 50: "Book", 51: "Generate Quote From Opportunity",
    52: "Add To Queue", 53: "Assign Role To Team", 54: "Remove Role From Team",
    55: "Assign Role To User", 56: "Remove Role From User", 57: "Add Privileges to Role",
    58: "Remove Privileges From Role", 59: "Replace Privileges In Role", 60: "Import Mappings",
}
AUDIT_OPERATIONS = {1: "Create", 2: "Update", 3: "Delete", 4: "Access", 5: "Upsert", 115: "Archive",
                    116: "Retain", 117: "UnRetain", 118: "Restore"}


def _state_cols(table: str, first: int) -> tuple[Column, Column]:
    return (
        Column("statecode", "State", first, options=STATES[table]),
        Column("statuscode", "Status", first + 1, options=STATUSES[table]),
    )


def _system_cols(first: int) -> tuple[Column, ...]:
    return (
        Column("createdon", "DateTime", first),
        Column("modifiedon", "DateTime", first + 1),
        Column("createdby", "Lookup", first + 2, targets=("systemuser",)),
        Column("modifiedby", "Lookup", first + 3, targets=("systemuser",)),
        Column("ownerid", "Owner", first + 4, targets=("systemuser",)),
        Column("versionnumber", "BigInt", first + 5, audited=False),
    )


def _currency(number: int) -> Column:
    return Column("transactioncurrencyid", "Lookup", number, targets=("transactioncurrency",))


TABLES: dict[str, Table] = {}


def _add(table: Table) -> None:
    numbers = [c.number for c in table.columns]
    assert len(numbers) == len(set(numbers)), f"duplicate ColumnNumber in {table.logical_name}"
    TABLES[table.logical_name] = table


_add(Table("systemuser", "systemusers", "systemuserid", "fullname", 8, (
    Column("systemuserid", "Uniqueidentifier", 1),
    Column("fullname", "String", 2),
    Column("firstname", "String", 3),
    Column("lastname", "String", 4),
    Column("internalemailaddress", "String", 5),
    Column("title", "String", 6),
    Column("isdisabled", "Boolean", 7),
    Column("applicationid", "Uniqueidentifier", 8),
    Column("businessunitid", "Lookup", 9, targets=("businessunit",)),
    # Not a real systemuser column name clash: real orgs read the zone from usersettings; we keep it on the
    # row so the simulator and tests can see why a UserLocal date shifted.
    Column("address1_utcoffset", "Integer", 10),
    Column("createdon", "DateTime", 30),
    Column("modifiedon", "DateTime", 31),
    Column("versionnumber", "BigInt", 35, audited=False),
), audit=False))

_add(Table("transactioncurrency", "transactioncurrencies", "transactioncurrencyid", "currencyname", 9105, (
    Column("transactioncurrencyid", "Uniqueidentifier", 1),
    Column("currencyname", "String", 2),
    Column("isocurrencycode", "String", 3),
    Column("currencysymbol", "String", 4),
    Column("exchangerate", "Decimal", 5),
    Column("createdon", "DateTime", 30),
    Column("modifiedon", "DateTime", 31),
    Column("versionnumber", "BigInt", 35, audited=False),
), audit=False))

_add(Table("account", "accounts", "accountid", "name", 1, (
    Column("accountid", "Uniqueidentifier", 1),
    Column("name", "String", 2),
    Column("accountnumber", "String", 3),
    Column("territorycode", "Picklist", 4, options=TERRITORIES),
    Column("industrycode", "Picklist", 5, options=INDUSTRIES),
    Column("numberofemployees", "Integer", 6),
    Column("revenue", "Money", 7),
    Column("address1_city", "String", 8),
    Column("address1_country", "String", 9),
    *_state_cols("account", 10),
    _currency(12),
    *_system_cols(30),
)))

_add(Table("lead", "leads", "leadid", "fullname", 4, (
    Column("leadid", "Uniqueidentifier", 1),
    Column("subject", "String", 2),
    Column("fullname", "String", 3),
    Column("firstname", "String", 4),
    Column("lastname", "String", 5),
    Column("companyname", "String", 6),
    Column("emailaddress1", "String", 7),
    Column("leadsourcecode", "Picklist", 8, options=LEAD_SOURCES),
    *_state_cols("lead", 9),
    Column("estimatedamount", "Money", 11),
    _currency(12),
    Column("parentaccountid", "Lookup", 13, targets=("account",)),
    Column("qualifyingopportunityid", "Lookup", 14, targets=("opportunity",)),
    Column("qualificationcomments", "Memo", 15),
    *_system_cols(30),
)))

_add(Table("opportunity", "opportunities", "opportunityid", "name", 3, (
    Column("opportunityid", "Uniqueidentifier", 1),
    Column("name", "String", 2),
    Column("customerid", "Customer", 3, targets=("account",)),
    Column("parentaccountid", "Lookup", 4, targets=("account",)),
    Column("originatingleadid", "Lookup", 5, targets=("lead",)),
    *_state_cols("opportunity", 6),
    Column("salesstage", "Picklist", 8, options=SALES_STAGES),
    Column("stepname", "String", 9),
    Column("estimatedvalue", "Money", 10),
    Column("actualvalue", "Money", 11),
    # opportunity.md@57fe25c7: both DateTimeBehavior DateOnly, Format DateOnly.
    Column("estimatedclosedate", "DateTime", 12, date_only=True, behavior="DateOnly"),
    Column("actualclosedate", "DateTime", 13, date_only=True, behavior="DateOnly"),
    Column("closeprobability", "Integer", 14),
    Column("discountpercentage", "Decimal", 15),
    _currency(16),
    *_system_cols(30),
)))

_add(Table("quote", "quotes", "quoteid", "name", 1084, (
    Column("quoteid", "Uniqueidentifier", 1),
    Column("name", "String", 2),
    Column("quotenumber", "String", 3),
    Column("revisionnumber", "Integer", 4),
    Column("opportunityid", "Lookup", 5, targets=("opportunity",)),
    Column("customerid", "Customer", 6, targets=("account",)),
    *_state_cols("quote", 7),
    Column("totallineitemamount", "Money", 9),
    Column("discountpercentage", "Decimal", 10),
    Column("discountamount", "Money", 11),
    Column("totalamount", "Money", 12),
    # quote.md@a336f096: effectivefrom/effectiveto UserLocal with Format DateOnly; closedon DateOnly, DateOnly.
    Column("effectivefrom", "DateTime", 13, date_only=True, behavior="UserLocal"),
    Column("effectiveto", "DateTime", 14, date_only=True, behavior="UserLocal"),
    Column("closedon", "DateTime", 15, date_only=True, behavior="DateOnly"),
    _currency(16),
    *_system_cols(30),
)))

_add(Table("salesorder", "salesorders", "salesorderid", "name", 1088, (
    Column("salesorderid", "Uniqueidentifier", 1),
    Column("name", "String", 2),
    Column("ordernumber", "String", 3),
    Column("opportunityid", "Lookup", 4, targets=("opportunity",)),
    Column("quoteid", "Lookup", 5, targets=("quote",)),
    Column("customerid", "Customer", 6, targets=("account",)),
    *_state_cols("salesorder", 7),
    Column("totalamount", "Money", 9),
    Column("discountpercentage", "Decimal", 10),
    # salesorder.md@61927d87: both UserLocal with Format DateOnly.
    Column("submitdate", "DateTime", 11, date_only=True, behavior="UserLocal"),
    Column("datefulfilled", "DateTime", 12, date_only=True, behavior="UserLocal"),
    _currency(13),
    *_system_cols(30),
)))

_add(Table("invoice", "invoices", "invoiceid", "name", 1090, (
    Column("invoiceid", "Uniqueidentifier", 1),
    Column("name", "String", 2),
    Column("invoicenumber", "String", 3),
    Column("opportunityid", "Lookup", 4, targets=("opportunity",)),
    Column("salesorderid", "Lookup", 5, targets=("salesorder",)),
    Column("customerid", "Customer", 6, targets=("account",)),
    *_state_cols("invoice", 7),
    Column("totalamount", "Money", 9),
    Column("paymenttermscode", "Picklist", 10, options=PAYMENT_TERMS),
    # invoice.md@f7ae5d03: duedate DateOnly, DateOnly; datedelivered UserLocal with Format DateOnly.
    Column("duedate", "DateTime", 11, date_only=True, behavior="DateOnly"),
    Column("datedelivered", "DateTime", 12, date_only=True, behavior="UserLocal"),
    _currency(13),
    *_system_cols(30),
)))

# A custom table as a maker creates it in a solution of the default publisher (prefix "new_", as for the doc's
# new_bankaccount, [PD] webapi/create-update-entity-definitions-using-web-api.md: IsCustomEntity true, key
# <name>id, ObjectTypeCode the org's next from 10000 up, EntitySetName the plural: "automatically generated by changing
# the EntityName to the plural of that name", [PD] entity-metadata.md "Table names"). States are "the default for
# custom tables", 0 Active (1 Active) / 1 Inactive (2 Inactive), and a maker "can add additional StatusCode choices for
# a corresponding StateCode" (ibid., "Table states"; maker/data-platform/define-status-reason-transitions.md).
# "Signed" is an Active reason (a signed contract is in force; Inactive is for retired rows), so signing is a plain
# Update. Its value is what the portal generates from the publisher's option value prefix ("used when you add options
# to choices", maker/data-platform/create-solution.md; 10000-99999, [PD] reference/entities/publisher.md): prefix *
# 10000 + n (72700 gives 727000000, 727000001, ... in webapi/create-update-column-definitions-using-web-api.md), and
# the default publisher's prefix is 10000 (inferred from forum answers), so 100000000. new_signedon is DateOnly in
# Format and behaviour, a "YYYY-MM-DD" ([PD] behavior-format-date-time-attribute.md). The maker's columns are
# IsCustomAttribute (as the doc's new_boolean); key, state and system columns are the platform's (inferred: solution
# exports give the primary key IsCustomField 0).
_add(Table("new_contract", "new_contracts", "new_contractid", "new_name", 10_473, (
    Column("new_contractid", "Uniqueidentifier", 1),
    Column("new_name", "String", 2, custom=True),
    Column("new_opportunityid", "Lookup", 3, targets=("opportunity",), custom=True),
    *_state_cols("new_contract", 4),
    Column("new_signedon", "DateTime", 6, date_only=True, behavior="DateOnly", custom=True),
    *_system_cols(30),
), custom=True))

_add(Table("audit", "audits", "auditid", None, 4567, (
    Column("auditid", "Uniqueidentifier", 1),
    Column("createdon", "DateTime", 2),
    Column("operation", "Picklist", 3, options=AUDIT_OPERATIONS),
    Column("action", "Picklist", 4, options=AUDIT_ACTIONS),
    Column("objecttypecode", "EntityName", 5),
    # [PD] reference/entities/audit.md: the audit table's only many-to-one relationships are lk_audit_userid and
    # lk_audit_callinguserid (objectid and regardingobjectid list no Targets), so those two lookups have no
    # navigation property.
    Column("objectid", "Lookup", 6, targets=("lead", "opportunity", "quote", "salesorder", "invoice",
                                              "account", "systemuser", "new_contract"), navigations=()),
    Column("userid", "Lookup", 7, targets=("systemuser",)),
    Column("callinguserid", "Lookup", 8, targets=("systemuser",)),
    Column("regardingobjectid", "Lookup", 9, targets=("lead", "opportunity", "quote", "salesorder",
                                                       "invoice", "account", "new_contract"), navigations=()),
    Column("attributemask", "Memo", 10),
    Column("transactionid", "Uniqueidentifier", 11),
    Column("useradditionalinfo", "String", 12),
# "There are system tables with change tracking enabled, for example Auditing (Audit)" ([PD]
# use-change-tracking-synchronize-data-external-systems.md, "Enable change tracking for a table"); what a tracked
# read of `audits` answers is documented nowhere, hence delta_documented=False.
), change_tracking=True, delta_documented=False, audit=False))

# DisplayName of each table: what an EntityName column's FormattedValue shows, e.g. audit.objecttypecode
# "Contact" for contact ([PD] auditing/retrieve-audit-data.md; names from reference/entities/*.md titles).
DISPLAY_NAMES = {"systemuser": "User", "transactioncurrency": "Currency", "account": "Account",
                 "lead": "Lead", "opportunity": "Opportunity", "quote": "Quote", "salesorder": "Order",
                 "invoice": "Invoice", "audit": "Auditing", "new_contract": "Contract"}

# Tables the simulator fills and the Web API serves as entity sets (audit last: it is derived).
DATA_TABLES = ("systemuser", "transactioncurrency", "account", "lead", "opportunity", "quote", "salesorder",
               "invoice", "new_contract")
ENTITY_SETS = {t.entity_set: t for t in TABLES.values()}
