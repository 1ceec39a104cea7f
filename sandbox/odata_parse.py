"""The $filter and $orderby syntax: a lexer and parser that follow Microsoft.OData.Core.

They track OData/odata.net src/Microsoft.OData.Core/UriParser/ExpressionLexer.cs and
Parsers/UriQueryExpressionParser.cs, so syntax errors carry its texts and (UTF-16) positions. `parse_filter`
returns a small tree of _Node; names and types are checked when sandbox/odata_filter.py binds it. The GUID,
date and DateTimeOffset literal grammar lives here too, as paging decodes the same literals.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import NoReturn

from sandbox.odata_errors import _at, _fail, _sandbox

# --- literals (shared with the binder and paging) --------------------------------------------------------

GUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
_DATE_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})\Z", re.A)
_DTO_RE = re.compile(
    r"(\d{4}-\d{2}-\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,7}))?)?(Z|[+-]\d{2}:\d{2})?\Z", re.I | re.A)


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
