"""How the emulator's OData layer fails: one ODataError with the status, code and message a real org answers.

The query options (sandbox/odata.py), the $filter parser (sandbox/odata_parse.py) and its binder
(sandbox/odata_filter.py) all raise through the helpers here, so the texts match ODataLib's and Dataverse's
and positions are counted in UTF-16 code units as .NET counts them.
"""

from __future__ import annotations

from typing import NoReturn

from sandbox.schema import Table

ODATA_CODE = "0x0"  # ODataLib / ASP.NET OData exceptions pass through as 0x0 ([SUP] web-api-client-errors.md)
CRM_CODE = "0x80060888"  # Dataverse's own Web API errors ("Skip Clause is not supported in CRM", real)


class ODataError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def body(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


def _fail(message: str, code: str = ODATA_CODE) -> NoReturn:
    raise ODataError(400, code, message)


def _sandbox(what: str) -> NoReturn:
    _fail(f"{what} is not supported by the sandbox.", CRM_CODE)


def _at(text: str, pos: int) -> str:  # .NET strings count UTF-16 code units
    return f"at position {len(text[:pos].encode('utf-16-le')) // 2} in '{text}'."


def _no_property(table: Table, name: str) -> NoReturn:
    _fail(f"Could not find a property named '{name}' on type 'Microsoft.Dynamics.CRM.{table.logical_name}'.")

