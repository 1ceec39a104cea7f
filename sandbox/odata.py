"""The emulator's OData query options, parsed and validated against a schema.Table as a real org does.

`parse_query` turns the decoded query parameters and the Prefer header into a ParsedQuery (selected Web API
names, a polars predicate for $filter, $orderby keys, paging and change-tracking preferences) or raises
ODataError with the status, code and message a real org answers. The $filter lexer and parser follow
Microsoft.OData.Core (OData/odata.net src/Microsoft.OData.Core/UriParser/ExpressionLexer.cs and
Parsers/UriQueryExpressionParser.cs), so syntax errors carry its texts and (UTF-16) positions. Binding follows
Dataverse: string comparisons are case-insensitive and contains/startswith/endswith keep SQL LIKE wildcards
([PD] webapi/query/filter-rows.md); `ne` also matches nulls (FetchXML `ne` does, MarkMpn/Sql4Cds issues #167
and #530), other conditions never do; `not` is pushed down onto inverted conditions (eq<->ne, gt<->le,
like<->not-like), as QueryExpression has no NOT. Every predicate is two-valued, so frames filter directly.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import NoReturn

import polars as pl

from sandbox.schema import Column, Table

ODATA_CODE = "0x0"  # ODataLib / ASP.NET OData exceptions pass through as 0x0 ([SUP] web-api-client-errors.md)
CRM_CODE = "0x80060888"  # Dataverse's own Web API errors ("Skip Clause is not supported in CRM", real)
MAX_PAGE_SIZE = 5000  # [PD] webapi/query/page-results.md
CT_OPTIONS = ("$filter", "$orderby", "$expand", "$top")  # [PD] use-change-tracking-synchronize-data-...md
UNSUPPORTED_OPTIONS = ("$expand", "$apply", "fetchXml", "savedQuery", "userQuery")
KNOWN_OPTIONS = frozenset({"$select", "$filter", "$orderby", "$top", "$skip", "$count", "$skiptoken",
                           "$deltatoken", *UNSUPPORTED_OPTIONS})
ANNOTATIONS = ("OData.Community.Display.V1.FormattedValue", *(f"Microsoft.Dynamics.CRM.{name}" for name in (
    "lookuplogicalname", "associatednavigationproperty", "totalrecordcount", "totalrecordcountlimitexceeded",
    "fetchxmlpagingcookie", "morerecords")))


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


# --- value semantics shared with paging ------------------------------------------------------------------

_KINDS = {"Uniqueidentifier": "guid", "Lookup": "guid", "Owner": "guid", "Customer": "guid",
          "String": "string", "Memo": "string", "EntityName": "string", "Integer": "int32",
          "Picklist": "int32", "State": "int32", "Status": "int32", "BigInt": "int64", "Money": "decimal",
          "Decimal": "decimal", "Boolean": "bool"}
_EDM = {"guid": "Edm.Guid", "string": "Edm.String", "int32": "Edm.Int32", "int64": "Edm.Int64",
        "decimal": "Edm.Decimal", "bool": "Edm.Boolean", "date": "Edm.Date", "datetime": "Edm.DateTimeOffset",
        "str": "Edm.String", "int": "Edm.Int32", "num": "Edm.Decimal", "dto": "Edm.DateTimeOffset",
        "null": "null", "typed": "Edm.String", "bracket": "Collection(Edm.String)"}
GUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
_DATE_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})\Z", re.A)
_DTO_RE = re.compile(
    r"(\d{4}-\d{2}-\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,7}))?)?(Z|[+-]\d{2}:\d{2})?\Z", re.I | re.A)
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


def parse_date(text: str) -> date | None:
    m = _DATE_RE.match(text)
    try:
        return date(int(m[1]), int(m[2]), int(m[3])) if m else None
    except ValueError:
        return None


def parse_datetime(text: str) -> datetime | None:
    """An OData DateTimeOffset literal as an aware UTC datetime (no offset: UTC; 7th fraction digit cut)."""
    m = _DTO_RE.match(text)
    d = parse_date(m[1]) if m else None
    if m is None or d is None:
        return None
    off = (m[6] or "Z").upper()
    iso = f"{d.isoformat()}T{m[2]}:{m[3]}:{m[4] or '00'}.{(m[5] or '0')[:6].ljust(6, '0')}"
    try:
        value = datetime.fromisoformat(iso + ("+00:00" if off == "Z" else off))
    except ValueError:
        return None
    return value.astimezone(UTC)


# --- $filter lexer (ExpressionLexer.cs) ------------------------------------------------------------------

@dataclass(frozen=True)
class _Tok:
    kind: str  # ident str int num guid date dto bool null typed bracket brace alias end, or the punctuation
    text: str
    pos: int
    end: int


def _ident_char(c: str) -> bool:
    return c.isalnum() or c == "_" or unicodedata.category(c) in ("Mn", "Mc", "Pc", "Cf")


class _Lexer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tok = self.lex(0)

    def lex(self, p: int) -> _Tok:
        t, n = self.text, len(self.text)
        while p < n and t[p].isspace():
            p += 1
        if p >= n:
            return _Tok("end", "", n, n)
        c = t[p]
        if c in "(),=/.*:;?":
            return _Tok(c, c, p, p + 1)
        if c == "'":
            q = p
            while True:
                q = t.find("'", q + 1)
                if q < 0:
                    _fail(f"There is an unterminated string literal {_at(t, n)}")
                q += 1
                if q >= n or t[q] != "'":
                    return _Tok("str", t[p:q], p, q)
        if c in "[{":
            return self._balanced(p, c, "]" if c == "[" else "}")
        if c == "-" and p + 1 < n and t[p + 1].isdecimal():
            tok = self._number(p)
            return tok if tok.kind in ("int", "num") else _Tok("-", "-", p, p + 1)
        if c == "-":
            return _Tok("-", "-", p, p + 1)
        if c == "@":
            if p + 1 >= n:
                _fail(f"Syntax error {_at(t, n)}")
            if not (t[p + 1].isalpha() or t[p + 1] in "_$"):
                _fail(f"Syntax error: character '{t[p + 1]}' is not valid {_at(t, p + 1)}")
            q = p + 2
            while q < n and (_ident_char(t[q]) or t[q] == "."):
                q += 1
            return _Tok("ident" if "." in t[p:q] else "alias", t[p:q], p, q)
        if c.isalpha() or c in "_$":
            return self._identifier(p)
        if c.isdecimal():
            return self._number(p)
        _fail(f"Syntax error: character '{c}' is not valid {_at(t, p)}")

    def _balanced(self, p: int, open_: str, close: str) -> _Tok:
        t, n = self.text, len(self.text)
        depth, q, dq = 1, p + 1, False
        while depth:
            ch = t[q] if q < n else None
            if ch == '"' and t[q - 1] != "\\":
                dq = not dq
            if ch == "'" and not dq:
                q = t.find("'", q + 1)
                q, ch = (n, None) if q < 0 else (q, "'")
            depth += 1 if ch == open_ else -1 if ch == close else 0
            if ch is None:
                _fail("Found an unbalanced bracket expression.")
            q += 1
        return _Tok("bracket" if open_ == "[" else "brace", t[p:q], p, q)

    def _literal_end(self, q: int) -> int:
        while q < len(self.text) and self.text[q] not in ", )":
            q += 1
        return q

    def _identifier(self, p: int) -> _Tok:
        t, n = self.text, len(self.text)
        q = p + 1
        while q < n and _ident_char(t[q]):
            q += 1
        if q < n and t[q] == "-" and GUID_RE.match(t[p:self._literal_end(q)]):
            return _Tok("guid", t[p:self._literal_end(q)], p, self._literal_end(q))
        word = t[p:q]
        if q < n and t[q] == "'":  # a type-prefixed literal such as duration'P1D' (HandleQuotedValues)
            if word.lower() == "null":
                _fail(f"Syntax error {_at(t, q)}")
            r = q
            while True:
                r += 1
                while r < n and t[r] != "'":
                    r += 1
                if r >= n:
                    _fail(f"There is an unterminated literal {_at(t, n)}")
                r += 1
                if r >= n or t[r] != "'":
                    return _Tok("typed", t[p:r], p, r)
        kind = {"true": "bool", "false": "bool", "null": "null", "INF": "num", "NaN": "num"}.get(word)
        return _Tok(kind or "ident", word, p, q)

    def _number(self, p: int) -> _Tok:
        t, n = self.text, len(self.text)
        q = p + 1
        if t[p] == "0" and q < n and t[q] in "xX":
            q += 1
            while q < n and t[q] in "0123456789abcdefABCDEF":
                q += 1
            return _Tok("typed", t[p:q], p, q)
        while q < n and t[q].isdecimal():
            q += 1
        if q < n and (t[q] == "-" or t[q].isalpha()):  # dates, DateTimeOffsets and GUIDs (ParseFromDigit)
            span = t[p:self._literal_end(q)]
            dashed = t[q] == "-"
            kind = ("date" if dashed and parse_date(span) else "dto" if dashed and parse_datetime(span)
                    else "guid" if GUID_RE.match(span) else "")
            if kind:
                return _Tok(kind, span, p, p + len(span))
        if q < n and t[q] == ":" and re.match(r"\d{2}:\d{2}(:\d{2}(\.\d+)?)?\Z", t[p:self._literal_end(q)]):
            return _Tok("typed", t[p:self._literal_end(q)], p, self._literal_end(q))
        kind = "int"
        for marks in (".", "eE"):
            if q < n and t[q] in marks:
                kind, q = "num", q + 1
                if marks == "eE" and q < n and t[q] in "+-":
                    q += 1
                if not (q < n and t[q].isdecimal()):
                    _fail(f"A digit was expected {_at(t, q)}")
                while q < n and t[q].isdecimal():
                    q += 1
        if q < n and t[q] in "mMdDfFlL":
            kind, q = ("int" if t[q] in "lL" else "num"), q + 1
        return _Tok(kind, t[p:q], p, q)


# --- $filter / $orderby parser (UriQueryExpressionParser.cs, FunctionCallParser.cs) ---------------------

@dataclass(frozen=True)
class _Node:
    kind: str  # lit prop call not neg bin alias
    op: str = ""  # literal kind, operator, function, property or alias name
    text: str = ""  # a literal's source text
    args: tuple[_Node, ...] = ()
    names: tuple[str | None, ...] = ()  # a call's parameter names


_CMP = ("eq", "ne", "gt", "ge", "lt", "le")
_LEVELS = (("or",), ("and",), _CMP, ("add", "sub"), ("mul", "div", "mod"))  # loosest first; then `not`
_LITERALS = ("str", "int", "num", "guid", "date", "dto", "bool", "null", "typed", "bracket", "brace")
_FUNC_RE = re.compile(r"(?:[^\W\d]|\$)\w*(?:\.(?:[^\W\d]|\$)\w*)*(?=\()")
_MAX_DEPTH = 100  # nested parentheses, calls and `not`s; ODataLib's own limit is of this order (inferred)


class _Parser:
    def __init__(self, text: str) -> None:
        self.lexer = _Lexer(text)
        self.depth = 0

    def enter(self) -> None:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            _fail("Recursion depth exceeded allowed limit.")  # UriQueryExpressionParser_TooDeep

    @property
    def tok(self) -> _Tok:
        return self.lexer.tok

    def advance(self) -> None:
        self.lexer.tok = self.lexer.lex(self.tok.end)

    def word(self, *words: str) -> bool:
        return self.tok.kind == "ident" and self.tok.text in words

    def syntax_error(self) -> NoReturn:  # ValidateToken reports the lexer position: the current token's end
        _fail(f"Syntax error {_at(self.lexer.text, self.tok.end)}")

    def expect_end(self) -> None:
        if self.tok.kind != "end":
            self.syntax_error()

    def expression(self, level: int = 0) -> _Node:
        if level == 0:
            self.enter()
        if level == len(_LEVELS):
            return self.unary()
        left = self.expression(level + 1)
        while self.word(*_LEVELS[level]):
            op = self.tok.text
            self.advance()
            left = _Node("bin", op, args=(left, self.expression(level + 1)))
        self.depth -= level == 0
        return left

    def unary(self) -> _Node:
        if self.tok.kind == "-" or self.word("not"):
            op = self.tok
            self.advance()
            if op.kind == "-" and self.tok.kind in ("int", "num"):
                self.lexer.tok = _Tok(self.tok.kind, "-" + self.tok.text, op.pos, self.tok.end)
                return self.primary()
            self.enter()
            node = _Node("not" if op.kind == "ident" else "neg", args=(self.unary(),))
            self.depth -= 1
            return node
        return self.primary()

    def primary(self) -> _Node:
        if self.lexer.lex(self.tok.end).kind == "/":  # ParsePrimary peeks first
            _sandbox("A property path or lambda operator ('/') in $filter")
        node = self.primary_start()
        if self.tok.kind == "/":
            _sandbox("A property path or lambda operator ('/') in $filter")
        return node

    def primary_start(self) -> _Node:
        tok, text = self.tok, self.lexer.text
        if tok.kind == "alias":
            self.advance()
            return _Node("alias", tok.text)
        if tok.kind == "ident":
            m = _FUNC_RE.match(text, tok.pos)  # ExpandIdentifierAsFunction: no whitespace before '('
            if m:
                self.lexer.tok = self.lexer.lex(m.end())
                return self.call(m.group())
            if self.lexer.lex(tok.end).kind == ".":
                _sandbox(f"The qualified name '{tok.text}.…' in $filter")
            self.advance()
            return _Node("prop", tok.text)
        if tok.kind == "(":
            self.advance()
            node = self.expression()
            if self.tok.kind != ")":
                _fail(f"')' or operator expected {_at(text, self.tok.pos)}")
            self.advance()
            return node
        if tok.kind in _LITERALS:
            self.advance()
            return _Node("lit", tok.kind, tok.text)
        if tok.kind == "*":
            _sandbox("'*' in $filter")
        _fail(f"Expression expected {_at(text, tok.pos)}")

    def call(self, name: str) -> _Node:
        self.advance()  # the '('
        args: list[_Node] = []
        names: list[str | None] = []
        if self.tok.kind != ")" and self.tok.kind == "ident" and self.lexer.lex(self.tok.end).kind == "=":
            while self.tok.kind != ")":  # named parameters: Name=value[,Name=value]
                if self.tok.kind != "ident":
                    self.syntax_error()
                names.append(self.tok.text)
                self.advance()
                if self.tok.kind != "=":
                    self.syntax_error()
                self.advance()
                args.append(self.expression())
                if self.tok.kind == ",":
                    self.advance()
                    if self.tok.kind == ")":
                        _fail(f"Syntax error {_at(self.lexer.text, self.tok.pos)}")
        elif self.tok.kind != ")":
            while True:
                names.append(None)
                args.append(self.expression())
                if self.tok.kind != ",":
                    break
                self.advance()
        if self.tok.kind != ")":
            _fail(f"')' or ',' expected {_at(self.lexer.text, self.tok.pos)}")
        self.advance()
        return _Node("call", name, args=tuple(args), names=tuple(names))


def parse_filter(text: str) -> _Node:
    """The syntax tree of a $filter value (syntax errors only; names are checked by `filter_expr`)."""
    parser = _Parser(text)
    node = parser.expression()
    parser.expect_end()
    return node


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
    converted = _convert(kind, lit, f"'{text}'" if lit == "str" else text) if value is not None else None
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


# --- $select, $orderby, $top, $count ---------------------------------------------------------------------

def parse_select(table: Table, text: str) -> tuple[str, ...] | None:
    """The selected Web API names in request order (None: every column)."""
    names: list[str] = []
    pos = 0
    for raw in text.split(",") if text.strip() else []:
        item = raw.strip()
        if item == "*":
            return None
        if not item:
            _fail(f"Syntax error {_at(text, pos)}")
        if "/" in item or "(" in item:
            _sandbox(f"The $select item '{item}'")
        if item not in table.by_api_name:
            _no_property(table, item)
        names += [item] if item not in names else []
        pos += len(raw) + 1
    return tuple(names) or None


def parse_orderby(table: Table, text: str) -> tuple[tuple[str, bool], ...]:
    """$orderby as (Web API name, descending) pairs, parsed as ODataLib's ParseOrderBy does."""
    parser, out = _Parser(text), []
    while True:
        node = parser.expression()
        descending = parser.word("desc")
        if descending or parser.word("asc"):
            parser.advance()
        if node.kind != "prop":
            _sandbox("Ordering by anything but a column")
        if node.op not in table.by_api_name:
            _no_property(table, node.op)
        out.append((node.op, descending))
        if parser.tok.kind != ",":
            break
        parser.advance()
    parser.expect_end()
    return tuple(out)


def _parse_top(text: str) -> int:
    if not re.fullmatch(r"\s*[+-]?\d+\s*", text) or int(text) < 0:  # ODataQueryOptionParser.ParseTop
        _fail(f"Invalid value '{text}' for $top query option found. The $top query option requires a "
              "non-negative integer value.")
    return int(text)


def _parse_count(text: str) -> bool:
    if text.strip() not in ("true", "false"):  # ODataQueryOptionParser.ParseCount
        _fail(f"'{text}' is not a valid count option.")
    return text.strip() == "true"


# --- Prefer ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AnnotationFilter:
    """odata.include-annotations as ODataLib's AnnotationFilter: the most specific pattern wins, and an
    exclusion ('-ns.name') beats an inclusion of the same specificity."""

    patterns: tuple[str, ...] = ()

    def includes(self, term: str) -> bool:
        best: tuple[int, int, bool] | None = None
        for pattern in self.patterns:
            excluded, body = pattern.startswith("-"), pattern.lstrip("-")
            if body == "*":
                rank = (0, 0)
            elif body.endswith(".*") and term.startswith(body[:-1]):
                rank = (1, len(body))
            elif body == term:
                rank = (2, len(body))
            else:
                continue
            if best is None or (*rank, excluded) > best:
                best = (*rank, excluded)
        return best is not None and not best[2]

    @property
    def wanted(self) -> frozenset[str]:
        """The annotations Dataverse knows that the client asked for."""
        return frozenset(term for term in ANNOTATIONS if self.includes(term))


@dataclass(frozen=True)
class Prefer:
    page_size: int = MAX_PAGE_SIZE  # rows per page actually served
    requested_page_size: int | None = None  # odata.maxpagesize as sent (its presence makes $top ignored)
    track_changes: bool = False
    annotations: AnnotationFilter = field(default_factory=AnnotationFilter)
    applied: tuple[str, ...] = ()  # Preference-Applied values, one per honoured preference


def parse_prefer(header: str | None) -> Prefer:
    """Prefer: odata.maxpagesize=N, odata.track-changes, odata.include-annotations="..." (any name case)."""
    page_size, requested, track, applied = MAX_PAGE_SIZE, None, False, []
    patterns: tuple[str, ...] = ()
    for item in re.findall(r'(?:[^,"]|"[^"]*")+', header or ""):
        name, _, value = item.split(";")[0].strip().partition("=")
        name, value = name.strip().lower(), value.strip().strip('"')
        if name == "odata.maxpagesize":
            if not re.fullmatch(r"\s*[+-]?\d+\s*", value):  # ODataPreferenceHeader.MaxPageSize
                _fail(f"Invalid value '{value}' for odata.maxpagesize preference header found. The "
                      "odata.maxpagesize preference header requires an integer value.")
            requested = int(value)
            if 0 < requested <= MAX_PAGE_SIZE:  # larger requests are ignored ([PD] page-results.md)
                page_size = requested
                applied.append(f"odata.maxpagesize={requested}")
        elif name == "odata.track-changes":
            track = True
            applied.append("odata.track-changes")
        elif name == "odata.include-annotations":
            patterns = tuple(p.strip() for p in value.split(",") if p.strip())
            for pattern in patterns:
                _check_annotation_pattern(pattern)
            applied.append(f'odata.include-annotations="{value}"')
    return Prefer(page_size, requested, track, AnnotationFilter(patterns), tuple(applied))


def _check_annotation_pattern(pattern: str) -> None:
    body, prefix = pattern.lstrip("-"), "The pattern '" + pattern + "' is not a"  # AnnotationFilterPattern
    if body == "*":
        return
    if "." not in body:
        _fail(f"{prefix} valid pattern to match an annotation. It must contain at least one '.' separating "
              "the namespace and the name segments of an annotation.")
    segments = body.split(".")
    if any(not s for s in segments):
        _fail(f"{prefix} valid pattern to match an annotation. It must not contain a namespace or name "
              "segment that is empty.")
    if any("*" in s and s != "*" for s in segments):
        _fail(f"{prefix} supported pattern to match an annotation. It must not contain '*' as part of a "
              "segment.")
    if "*" in segments[:-1]:
        _fail(f"{prefix} supported pattern to match an annotation. '*' must be the last segment of the "
              "pattern.")


# --- the whole request -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ParsedQuery:
    table: Table
    select: tuple[str, ...] | None = None  # Web API names; None = all columns
    filter: pl.Expr | None = None
    filter_text: str | None = None
    orderby: tuple[tuple[str, bool], ...] = ()  # (Web API name, descending); empty = primary key order
    top: int | None = None  # None if absent, or ignored as odata.maxpagesize is set ([PD] page-results.md)
    count: bool = False
    skiptoken: str | None = None  # raw; decode with sandbox.paging.decode_skiptoken
    deltatoken: str | None = None  # raw; decode with sandbox.paging.decode_deltatoken
    prefer: Prefer = field(default_factory=Prefer)
    aliases: dict[str, str] = field(default_factory=dict)

    @property
    def track_changes(self) -> bool:
        return self.prefer.track_changes or self.deltatoken is not None

    @property
    def page_size(self) -> int:
        return self.prefer.page_size

    @property
    def page_size_requested(self) -> bool:
        return self.prefer.requested_page_size is not None

    @property
    def preference_applied(self) -> tuple[str, ...]:
        return self.prefer.applied

    @property
    def formatted_values(self) -> bool:
        return self.prefer.annotations.includes("OData.Community.Display.V1.FormattedValue")

    @property
    def lookup_annotations(self) -> bool:
        return self.prefer.annotations.includes("Microsoft.Dynamics.CRM.lookuplogicalname")


def parse_query(table: Table, query_params: list[tuple[str, str]], prefer_header: str | None) -> ParsedQuery:
    """Validate a collection GET the way a real org does, in this order: unknown or repeated parameters,
    $skip, the Prefer header, change-tracking rules, options the sandbox lacks, then each option's value."""
    options: dict[str, str] = {}
    aliases: dict[str, str] = {}
    for name, value in query_params:
        if name.startswith("@"):
            aliases[name] = value
        elif name not in KNOWN_OPTIONS:  # real, for utm_source: rappen/FetchXMLBuilder issue #437
            _fail(f"The query parameter {name} is not supported")
        elif name in options:
            _fail(f"Query option '{name}' was specified more than once, but it must be specified at most "
                  "once.")
        else:
            options[name] = value
    if "$skip" in options:
        _fail("Skip Clause is not supported in CRM", CRM_CODE)
    prefer = parse_prefer(prefer_header)
    if prefer.track_changes or "$deltatoken" in options:
        if not table.change_tracking:
            _fail(f"Entity {table.logical_name} isn't enabled for change tracking.", "0x80072491")
        for name in CT_OPTIONS:  # code inferred: the docs give only the message
            if name in options:
                _fail(f'The "{name}" query parameter isn\'t supported when Change Tracking is enabled.',
                      CRM_CODE)
    for name in UNSUPPORTED_OPTIONS:
        if name in options:
            _sandbox(f"The query option {name}")
    text = options.get("$filter")
    return ParsedQuery(
        table=table,
        select=parse_select(table, options["$select"]) if "$select" in options else None,
        filter=filter_expr(table, text, aliases) if text is not None else None,
        filter_text=text,
        orderby=parse_orderby(table, options["$orderby"]) if "$orderby" in options else (),
        top=_parse_top(options["$top"]) if "$top" in options and prefer.requested_page_size is None else None,
        count=_parse_count(options["$count"]) if "$count" in options else False,
        skiptoken=options.get("$skiptoken"),
        deltatoken=options.get("$deltatoken"),
        prefer=prefer,
        aliases=aliases,
    )
