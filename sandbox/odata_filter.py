"""Binding a parsed $filter to a polars predicate with Dataverse's semantics.

String comparisons are case-insensitive and contains/startswith/endswith keep SQL LIKE wildcards ([PD]
webapi/query/filter-rows.md); `ne` also matches nulls (FetchXML `ne` does, MarkMpn/Sql4Cds issues #167 and
#530), other conditions never do; `not` is pushed down onto inverted conditions (eq<->ne, gt<->le,
like<->not-like), as QueryExpression has no NOT. Every predicate is two-valued, so frames filter directly.
Column kinds and SQL Server's uniqueidentifier order are defined here and shared with paging.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import NoReturn

import polars as pl

from sandbox.odata_errors import _fail, _no_property, _sandbox
from sandbox.odata_parse import _CMP, GUID_RE, _Node, _Parser, parse_date, parse_datetime, parse_filter
from sandbox.schema import Column, Table

# --- value semantics shared with paging ------------------------------------------------------------------

_KINDS = {"Uniqueidentifier": "guid", "Lookup": "guid", "Owner": "guid", "Customer": "guid",
          "String": "string", "Memo": "string", "EntityName": "string", "Integer": "int32",
          "Picklist": "int32", "State": "int32", "Status": "int32", "BigInt": "int64", "Money": "decimal",
          "Decimal": "decimal", "Boolean": "bool"}
_EDM = {"guid": "Edm.Guid", "string": "Edm.String", "int32": "Edm.Int32", "int64": "Edm.Int64",
        "decimal": "Edm.Decimal", "bool": "Edm.Boolean", "date": "Edm.Date", "datetime": "Edm.DateTimeOffset",
        "str": "Edm.String", "int": "Edm.Int32", "num": "Edm.Decimal", "dto": "Edm.DateTimeOffset",
        "null": "null", "typed": "Edm.String", "bracket": "Collection(Edm.String)"}
# SQL Server compares uniqueidentifier bytes 10-15, 8-9, 6-7, 4-5, 0-3 of the .NET layout (SqlGuid.CompareTo)
_GUID_ORDER = ((24, 36), (19, 23), (16, 18), (14, 16), (11, 13), (9, 11), (6, 8), (4, 6), (2, 4), (0, 2))


def column_kind(column: Column) -> str:
    if column.type == "DateTime":
        return "date" if column.date_only and column.behavior == "DateOnly" else "datetime"
    return _KINDS.get(column.type, "string")


def sqlserver_guid_key(col: pl.Expr) -> pl.Expr:
    """A string key that sorts lowercase GUID strings the way SQL Server sorts uniqueidentifier."""
    return pl.concat_str([col.str.to_lowercase().str.slice(a, b - a) for a, b in _GUID_ORDER])


def guid_key(value: str) -> str:
    return "".join(value.lower()[a:b] for a, b in _GUID_ORDER)


# --- binding $filter to a polars predicate ---------------------------------------------------------------

_OPS = {"eq": pl.Expr.eq, "ne": pl.Expr.ne, "gt": pl.Expr.gt, "ge": pl.Expr.ge, "lt": pl.Expr.lt,
        "le": pl.Expr.le}
_INVERT = {"eq": "ne", "ne": "eq", "gt": "le", "le": "gt", "ge": "lt", "lt": "ge"}
_FLIP = {"eq": "eq", "ne": "ne", "gt": "lt", "lt": "gt", "ge": "le", "le": "ge"}
_OPNAME = {"eq": "Equal", "ne": "NotEqual", "gt": "GreaterThan", "ge": "GreaterThanOrEqual", "lt": "LessThan",
           "le": "LessThanOrEqual", "and": "And", "or": "Or"}
_NUMERIC = ("int32", "int64", "decimal")
_CRM = "Microsoft.Dynamics.CRM."
_CRM_FUNCTIONS = ("In", "NotIn", "Between", "NotBetween", "On", "OnOrAfter", "OnOrBefore")
_REGEX_META = frozenset("\\.+*?()|[]{}^$#&-~")
_BAD = object()


def _unquote(text: str) -> str:
    return text[1:-1].replace("''", "'")


def _convert(kind: str, lit: str, text: str) -> object:
    """A literal token converted for a column kind, or _BAD when ODataLib would not promote it."""
    if lit == "str" and kind == "string":
        return _unquote(text)
    if lit in ("str", "guid") and kind == "guid":  # Dataverse also takes quoted GUIDs ([PD] filter-rows.md)
        value = _unquote(text) if lit == "str" else text
        return value.lower() if GUID_RE.match(value) else _BAD
    if lit == "int" and kind in ("int32", "int64"):
        return int(text.rstrip("lL"))
    if lit in ("int", "num") and kind in _NUMERIC:
        return float(text.rstrip("mMdDfFlL"))
    if lit == "bool" and kind == "bool":
        return text == "true"
    if lit == "date" and kind in ("date", "datetime"):
        d = parse_date(text)
        return d if kind == "date" or d is None else datetime(d.year, d.month, d.day, tzinfo=UTC)
    if lit == "dto" and kind in ("date", "datetime"):
        return parse_datetime(text)
    return _BAD


def _keyed(col: pl.Expr, kind: str, value: object, ordered: bool) -> tuple[pl.Expr, object]:
    """Column and value as Dataverse compares them: strings case-insensitively, GUIDs in SQL Server order."""
    if kind == "string":
        return col.str.to_lowercase(), str(value).lower()
    if kind == "guid" and ordered:
        return sqlserver_guid_key(col), guid_key(str(value))
    if kind == "date" and isinstance(value, datetime):
        return col.cast(pl.Datetime("us", "UTC")), value
    return col, value


def _condition(col: pl.Expr, kind: str, op: str, value: object) -> pl.Expr:
    if value is None:
        return col.is_null() if op == "eq" else col.is_not_null() if op == "ne" else pl.lit(False)
    c, v = _keyed(col, kind, value, op not in ("eq", "ne"))
    if op == "ne":  # FetchXML `ne` matches null values (MarkMpn/Sql4Cds #167, #530)
        return c.ne(pl.lit(v)).fill_null(True)
    return _OPS[op](c, pl.lit(v)).fill_null(False)


def _re(c: str) -> str:
    return "\\" + c if c in _REGEX_META else c


def _like_regex(pattern: str) -> str:
    """SQL LIKE (%, _, [set], [^set], a-z ranges) as an anchored regex; a '[' without a ']' is literal."""
    out, i = ["(?s)^"], 0
    while i < len(pattern):
        c = pattern[i]
        negate = int(c == "[" and pattern[i + 1:i + 2] == "^")
        close = pattern.find("]", i + 2 + negate) if c == "[" else -1
        if c in "%_":
            out.append(".*" if c == "%" else ".")
        elif close > 0:
            body, items, k = pattern[i + 1 + negate:close], [], 0
            while k < len(body):  # a reversed range matches nothing, as in SQL Server
                if k + 2 < len(body) and body[k + 1] == "-":
                    if body[k] <= body[k + 2]:
                        items.append(f"{_re(body[k])}-{_re(body[k + 2])}")
                    k += 3
                else:
                    items.append(_re(body[k]))
                    k += 1
            nothing = "." if negate else "[^\\s\\S]"  # an empty set matches nothing; its negation anything
            out.append(f"[{'^' if negate else ''}{''.join(items)}]" if items else nothing)
            i = close
        else:
            out.append(_re(c))
        i += 1
    return "".join(out) + "$"


def _chain(node: _Node) -> list[_Node]:
    """The operands of a left-deep run of one operator (`a or b or c`), gathered without recursion."""
    operands: list[_Node] = []
    while node.kind == "bin" and node.args[0].kind == "bin" and node.args[0].op == node.op:
        operands.append(node.args[1])
        node = node.args[0]
    return [*node.args, *reversed(operands)]


class _Binder:
    def __init__(self, table: Table, aliases: dict[str, str]) -> None:
        self.table, self.aliases = table, aliases

    def column(self, name: str) -> tuple[pl.Expr, str]:
        col = self.table.by_api_name.get(name)
        if col is None:
            _no_property(self.table, name)
        return pl.col(name), column_kind(col)

    def resolve(self, node: _Node) -> _Node:
        if node.kind != "alias":
            return node
        text = self.aliases.get(node.op)
        if text is None:  # an alias without a value is null (OData URL conventions, parameter aliases)
            return _Node("lit", "null", "null")
        if text.lstrip()[:1] in ("[", "{"):  # arrays and objects are read as JSON, not lexed
            return _Node("lit", "bracket", text.strip())
        parser = _Parser(text)
        value = parser.expression()
        parser.expect_end()
        return value if value.kind == "lit" else _sandbox(f"The parameter alias value '{text}'")

    def type_of(self, node: _Node) -> str:
        """The node's type, checking operands bottom-up, left to right, as ODataLib's MetadataBinder does."""
        node = self.resolve(node)
        if node.kind == "lit":
            return node.op
        if node.kind == "prop":
            return self.column(node.op)[1]
        if node.kind == "not":
            if (kind := self.type_of(node.args[0])) != "bool":
                _fail("A unary operator with an incompatible type was detected. "
                      f"Found operand type '{_EDM[kind]}' for operator kind 'Not'.")
            return "bool"
        if node.kind == "bin" and node.op in ("and", "or"):
            operands = _chain(node)
            for i, operand in enumerate(operands):
                if self.type_of(operand) != "bool":  # report the operator whose operand is not Boolean
                    self.incompatible(_Node("bin", node.op, args=(operand, operands[1]) if i == 0 else (
                        _Node("lit", "bool", "true"), operand)))
            return "bool"
        if node.kind == "bin" and node.op in _CMP:
            for operand in node.args:
                self.type_of(operand)
            return "bool"
        if node.kind == "call":
            return "bool"
        _sandbox("Arithmetic in $filter")

    def incompatible(self, node: _Node) -> NoReturn:
        left, right = (_EDM.get(self.type_of(a), "Edm.Boolean") for a in node.args)
        _fail(f"A binary operator with incompatible types was detected. Found operand types '{left}' and "
              f"'{right}' for operator kind '{_OPNAME[node.op]}'.")

    def predicate(self, node: _Node, negate: bool) -> pl.Expr:
        node = self.resolve(node)
        if node.kind == "bin" and node.op in ("and", "or"):  # flat, however long a generated chain is
            operands = [self.predicate(a, negate) for a in _chain(node)]
            both = (node.op == "and") != negate
            return pl.all_horizontal(operands) if both else pl.any_horizontal(operands)
        if node.kind == "not":
            return self.predicate(node.args[0], not negate)
        if node.kind == "lit" and node.op == "bool":
            return pl.lit((node.text == "true") != negate)
        if node.kind == "prop":  # a Boolean column on its own means `column eq true`
            return _condition(pl.col(node.op), "bool", "ne" if negate else "eq", True)
        if node.kind == "bin":
            return self.comparison(node, negate)
        return self.call(node, negate)

    def comparison(self, node: _Node, negate: bool) -> pl.Expr:
        (a, b), op = (self.resolve(x) for x in node.args), node.op
        if a.kind != "prop" and b.kind == "prop":
            a, b, op = b, a, _FLIP[op]
        if a.kind != "prop":
            _sandbox("A comparison without a column on either side")
        if b.kind not in ("prop", "lit"):
            self.incompatible(node)
        col, kind = self.column(a.op)
        op = _INVERT[op] if negate else op
        if b.kind == "prop":  # column comparison ([PD] filter-rows.md); nulls never match, as in SQL
            other, other_kind = self.column(b.op)
            if kind != other_kind and not (kind in _NUMERIC and other_kind in _NUMERIC):
                self.incompatible(node)
            if kind == "string":
                col, other = col.str.to_lowercase(), other.str.to_lowercase()
            elif kind == "guid" and op not in ("eq", "ne"):
                col, other = sqlserver_guid_key(col), sqlserver_guid_key(other)
            return _OPS[op](col, other).fill_null(False)
        value = None if b.op == "null" else _convert(kind, b.op, b.text)
        if value is _BAD or b.op != "null" and value is None:
            self.incompatible(node)
        return _condition(col, kind, op, value)

    def call(self, node: _Node, negate: bool) -> pl.Expr:
        name, args = node.op, [self.resolve(a) for a in node.args]
        if name in ("contains", "startswith", "endswith"):
            if len(args) != 2 or any(node.names) or [self.type_of(a) for a in args] not in (
                    [s, t] for s in ("string", "str") for t in ("string", "str")):
                _fail(f"No function signature for the function with name '{name}' matches the specified "
                      f"arguments. The function signatures considered are: {name}(Edm.String Nullable=true, "
                      "Edm.String Nullable=true).")
            if args[0].kind != "prop" or args[1].kind != "lit":
                _sandbox(f"{name}() without a column first and a string literal second")
            text = _unquote(args[1].text).lower()
            like = {"contains": f"%{text}%", "startswith": f"{text}%", "endswith": f"%{text}"}[name]
            match = pl.col(args[0].op).str.to_lowercase().str.contains(_like_regex(like))
            return (~match if negate else match).fill_null(False)
        if not name.startswith(_CRM):
            _fail(f"An unknown function with name '{name}' was found. This may also be a function import or "
                  "a key lookup on a navigation property, which is not allowed.")
        short = name[len(_CRM):]
        if short not in _CRM_FUNCTIONS:
            _sandbox(f"The query function '{name}'")
        values_name = "PropertyValue" if short.startswith("On") else "PropertyValues"
        params = dict(zip(node.names, args, strict=True))
        if set(params) != {"PropertyName", values_name} or params["PropertyName"].op != "str":
            _fail(f"The function '{name}' needs the parameters PropertyName and {values_name}.")
        col, kind = self.column(_unquote(params["PropertyName"].text))
        raw = params[values_name]
        if short.startswith("On"):
            d = parse_date(_unquote(raw.text)) if raw.op == "str" else parse_date(raw.text)
            if d is None or kind not in ("date", "datetime"):
                _fail(f"The function '{name}' needs a Date or DateTime column and a date value.")
            start = datetime(d.year, d.month, d.day, tzinfo=UTC) if kind == "datetime" else d
            end = start + timedelta(days=1) if kind == "datetime" else d
            timed = kind == "datetime"
            match = {"On": (col >= start) & (col < end) if timed else col == d, "OnOrAfter": col >= start,
                     "OnOrBefore": col < end if timed else col <= d}[short]
        else:
            if raw.op != "bracket":
                _fail(f"The function '{name}' needs PropertyValues as a JSON array.")
            values = [_json_value(kind, v, name) for v in _json_array(raw.text)]
            if short.endswith("Between") and len(values) != 2:
                _fail(f"The function '{name}' needs exactly two PropertyValues.")
            keyed = [_keyed(col, kind, v, short.endswith("Between")) for v in values]
            key, keys = (keyed[0][0] if keyed else col), [pl.lit(k) for _, k in keyed]
            match = (pl.any_horizontal([key == k for k in keys]) if short.endswith("In") and keys
                     else (key >= keys[0]) & (key <= keys[1]) if keys else pl.lit(False))
            negate = negate != short.startswith("Not")
        return (~match & col.is_not_null() if negate else match).fill_null(False)


def _json_value(kind: str, value: object, function: str) -> object:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    lits = {"string": "str", "guid": "guid", "bool": "bool", "date": "date", "datetime": "dto"}
    lit = lits.get(kind, "num")
    if kind in ("int32", "int64") and re.fullmatch(r"-?\d+", text):
        return int(text)
    if kind == "string" and isinstance(value, str):
        return value  # a JSON string is already unescaped: a '' in it is two quotes, not an OData escape
    # Other kinds go through the literal rules (a quoted GUID, a date): quoted as an OData literal, escaped.
    quoted = "'" + text.replace("'", "''") + "'"
    converted = _convert(kind, lit, quoted if lit == "str" else text) if value is not None else None
    if converted is _BAD or converted is None and value is not None:
        if kind == "datetime" and parse_date(text):
            return _convert(kind, "date", text)
        _fail(f"The value '{value}' of {function} is not a valid {_EDM[kind]}.")
    return converted


def _json_array(text: str) -> list[object]:
    """A JSON array as Dataverse reads PropertyValues: '' or "" strings, numbers, true, false, null."""
    token = re.compile(r"""\s*(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)"""
                       r"|(true|false|null))\s*")
    if not text.startswith("["):
        _fail("Invalid JSON. An array was expected.")
    out: list[object] = []
    pos = 1 + len(text[1:]) - len(text[1:].lstrip())
    while text[pos:pos + 1] != "]" or out:
        m = token.match(text, pos)
        if m is None:
            _fail(f"Invalid JSON. Unexpected token at position {pos}.")
        dq, sq, num, word = m.groups()
        quoted = dq if dq is not None else sq
        out.append(re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else
                   float(num) if num and re.search(r"[.eE]", num) else int(num) if num else
                   {"true": True, "false": False, "null": None}[word])
        pos = m.end()
        if text[pos:pos + 1] == "]":
            break
        if text[pos:pos + 1] != ",":  # the message Dataverse gives ([PD] webapi/query/filter-rows.md)
            _fail("Invalid JSON. A comma character ',' was expected in scope 'Array'. Every two elements in "
                  "an array and properties of an object must be separated by commas.")
        pos += 1
    if text[pos + 1:].strip():
        _fail(f"Invalid JSON. More than one value found at position {pos + 1}.")
    return out


def filter_expr(table: Table, text: str, aliases: dict[str, str] | None = None) -> pl.Expr:
    """$filter as a two-valued polars predicate over a frame whose columns are the table's Web API names."""
    binder = _Binder(table, aliases or {})
    node = parse_filter(text)
    if binder.type_of(node) != "bool":
        _fail("The $filter expression must evaluate to a single boolean value.")
    return binder.predicate(node, False)

