"""`l2c doctor`: check configuration, sign-in, WhoAmI, metadata, change tracking and audit access.

Each check prints one line: ok / warn / FAIL, what was found, and what to do about it. Warnings are
things a run works around (no change tracking: watermark; no audit: snapshot differences); failures stop
a run. The exit code is that of the first failure (2 config, 3 auth/permission, 4 unavailable), else 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from config.settings import Settings
from config.tables import load_tables
from connector import metadata
from connector.http import DataverseClient
from connector.state import StateStore
from ground.errors import L2CError, PermissionDenied, RequestRejected


@dataclass
class Check:
    status: str  # "ok", "warn", "FAIL"
    what: str
    todo: str = ""

    def line(self) -> str:
        return f"{self.status:<4} {self.what}" + (f" -> {self.todo}" if self.todo else "")


def doctor(settings: Settings, emit: Callable[[Check], None] = lambda c: print(c.line(), flush=True)) -> int:
    failure: L2CError | None = None

    def report(check: Check) -> None:
        emit(check)

    try:
        tables = load_tables(settings.tables_file)
        report(Check("ok", f"configuration: {len(tables.table)} tables declared, data in {settings.data_dir}"))
        client = DataverseClient(settings)
        client.tokens.token()
        report(Check("ok", f"sign-in: token for {client.tokens.scope} from {client.tokens.authority}"))
        who = client.get("WhoAmI", kind="metadata").json
        report(Check("ok", f"WhoAmI: application user {who['UserId']}, organization {who['OrganizationId']}"))
        metas = metadata.load(client, tables, StateStore(settings.data_dir).directory)
    except L2CError as exc:
        report(Check("FAIL", str(exc)))
        return exc.exit_code
    for table in tables.table:
        meta = metas[table.name]
        if meta.change_tracking:
            report(Check("ok", f"{table.name}: change tracking on ({meta.entity_set}); deletions are seen"))
        else:
            report(Check("warn", f"{table.name}: change tracking off: read by modifiedon watermark, deletions only "
                                 "from the audit history",
                         "enable 'Track changes' in the table's properties for exact deletions"))
        if table.audit and not meta.audit_enabled:
            report(Check("warn", f"{table.name}: auditing is off for this table: its history is not recorded",
                         "turn on auditing for the table (and the environment) in the Power Platform admin center"))
    failure = _audit_access(client, metas, report)
    return failure.exit_code if failure else 0


def _audit_access(client: DataverseClient, metas: dict[str, metadata.TableMeta],
                  report: Callable[[Check], None]) -> L2CError | None:
    if "audit" not in metas:
        report(Check("warn", "audit: the audit table is not visible to this user"))
        return None
    try:
        rows = client.get("audits?$select=auditid&$top=1", kind="metadata").json.get("value", [])
    except PermissionDenied:
        report(Check("warn", "audit: prvReadAuditSummary missing: runs continue without audit (events from "
                             "snapshot differences and record dates)",
                     "give the application user a security role with 'View Audit Summary'"))
        return None
    except (RequestRejected, L2CError) as exc:
        report(Check("FAIL", f"audit: {exc}"))
        return exc
    report(Check("ok", "audit: audit rows readable (prvReadAuditSummary)"))
    if not rows:
        report(Check("warn", "audit: no audit rows yet: is auditing on for the environment?"))
        return None
    try:
        client.get(f"audits({rows[0]['auditid']})/Microsoft.Dynamics.CRM.RetrieveAuditDetails", kind="metadata")
    except PermissionDenied:
        report(Check("warn", "audit details: prvReadRecordAuditHistory missing: old/new values of changes cannot "
                             "be read",
                     "give the application user a security role with 'View Audit History'"))
        return None
    report(Check("ok", "audit details: RetrieveAuditDetails readable (prvReadRecordAuditHistory)"))
    return None
