"""The SOQL subset leadflow issues, parsed strictly: anything else is an error, never a guess.

Supported: ``SELECT f1, f2 | COUNT() FROM Object [WHERE cond] [ORDER BY f [ASC|DESC] [NULLS FIRST|LAST], ...]
[LIMIT n] [OFFSET n]``; a field may be a child-to-parent path (``Campaign.Type``, resolved by the
caller's field types) and the field list may hold parent-to-child subqueries
``(SELECT f1, f2 FROM ChildRelationship [WHERE cond] [ORDER BY ...] [LIMIT n])``, one level deep;
``cond`` combines ``f op literal`` (``= != <> < <= > >=``),
``f [NOT] IN (literals)``, the semi-join ``f IN (SELECT Id FROM Object WHERE cond)`` (the caller
runs the inner query: ``semi_joins``), ``f LIKE 'pattern'`` with AND / OR / NOT and parentheses. As in
Salesforce, AND and OR may not be mixed at one level without parentheses. Literals: quoted
strings with SOQL escapes, numbers, ``true``/``false``, ``null``, unquoted datetimes
(``2024-01-01T00:00:00Z``, ``.000Z``, ``+01:00``) and dates (``2024-01-01``).
Errors carry Salesforce's code: ``MALFORMED_QUERY``, ``INVALID_FIELD``, ``INVALID_TYPE`` or
``INVALID_QUERY_FILTER_OPERATOR``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any


class SoqlError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True)
class Token:
    kind: str  # word, string, number, datetime, date, op, punct, eof
    text: str
    value: Any
    pos: int


_TOKEN = re.compile(
    r"""(?P<ws>\s+)
      |(?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:?\d{2}))
      |(?P<date>\d{4}-\d{2}-\d{2}(?![\dT]))
      |(?P<number>-?\d+(?:\.\d+)?(?![\w]))
      |(?P<string>'(?:[^'\\]|\\.)*')
      |(?P<op><=|>=|!=|<>|=|<|>)
      |(?P<punct>[(),])
      |(?P<word>[A-Za-z_][A-Za-z0-9_.]*(?:\(\))?)
    """,
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", '"': '"', "'": "'", "\\": "\\"}
KEYWORDS = frozenset({"select", "from", "where", "and", "or", "not", "in", "like", "order", "by", "asc", "desc",
                      "nulls", "first", "last", "limit", "offset", "true", "false", "null", "includes", "excludes",
                      "group", "having", "with", "for", "using", "scope", "typeof", "update", "view", "reference"})


def tokenize(soql: str) -> list[Token]:
    tokens, pos = [], 0
    while pos < len(soql):
        match = _TOKEN.match(soql, pos)
        if not match:
            raise _malformed(soql, pos, f"unexpected token: '{soql[pos:pos + 10].split()[0] if soql[pos:].split() else soql[pos]}'")
        kind = match.lastgroup or ""
        text = match.group()
        if kind != "ws":
            tokens.append(Token(kind, text, _literal_value(kind, text, soql, pos), pos))
        pos = match.end()
    tokens.append(Token("eof", "", None, len(soql)))
    return tokens


def _literal_value(kind: str, text: str, soql: str, pos: int) -> Any:
    if kind == "string":
        return _unescape(text[1:-1], soql, pos)
    if kind == "number":
        return float(text) if "." in text else int(text)
    if kind == "datetime":
        normalized = text.replace("Z", "+00:00")
        if re.search(r"[+-]\d{4}$", normalized):
            normalized = normalized[:-2] + ":" + normalized[-2:]
        return int(datetime.fromisoformat(normalized).timestamp() * 1000)
    if kind == "date":
        try:
            return date.fromisoformat(text)
        except ValueError:
            raise _malformed(soql, pos, f"invalid date: {text}") from None
    return None


def _unescape(body: str, soql: str, pos: int) -> str:
    out, i = [], 0
    while i < len(body):
        char = body[i]
        if char != "\\":
            out.append(char)
            i += 1
            continue
        nxt = body[i + 1] if i + 1 < len(body) else ""
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", body[i + 2:i + 6] or ""):
            out.append(chr(int(body[i + 2:i + 6], 16)))
            i += 6
        elif nxt in "_%":
            out.append("\\" + nxt)
            i += 2
        else:
            raise _malformed(soql, pos + i + 1, "Invalid string literal: invalid escape sequence")
    return "".join(out)


def _malformed(soql: str, pos: int, message: str) -> SoqlError:
    return SoqlError("MALFORMED_QUERY", _located(soql, pos, message))


def _located(soql: str, pos: int, message: str) -> str:
    line = soql.replace("\n", " ")
    return f"\n{line}\n{' ' * pos}^\nERROR at Row:1:Column:{pos + 1}\n{message}"


# ---- the parsed query -----------------------------------------------------------------------------


@dataclass
class Comparison:
    field: str
    op: str  # = != < <= > >= IN NOT_IN LIKE
    value: Any
    pos: int


@dataclass
class BoolOp:
    op: str  # AND OR NOT
    items: list[Any]


@dataclass
class OrderItem:
    field: str
    descending: bool = False
    nulls_last: bool | None = None


@dataclass
class Query:
    soql: str
    fields: list[str]
    field_pos: list[int]
    sobject: str
    where: Any = None
    order_by: list[OrderItem] = field(default_factory=list)
    limit: int | None = None
    offset: int | None = None
    count_only: bool = False
    subqueries: list["Query"] = field(default_factory=list)  # parent-to-child: sobject is the relationship
    sobject_pos: int = 0


class _Parser:
    def __init__(self, soql: str):
        self.soql = soql
        self.tokens = tokenize(soql)
        self.i = 0

    def peek(self) -> Token:
        return self.tokens[self.i]

    def next(self) -> Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def keyword(self, word: str) -> bool:
        token = self.peek()
        if token.kind == "word" and token.text.lower() == word:
            self.i += 1
            return True
        return False

    def expect_keyword(self, word: str) -> None:
        if not self.keyword(word):
            self.fail(f"expecting '{word.upper()}'")

    def fail(self, expectation: str | None = None, token: Token | None = None) -> None:
        token = token or self.peek()
        shown = "<EOF>" if token.kind == "eof" else token.text
        message = f"unexpected token: '{shown}'" if token.kind != "eof" else "unexpected token: <EOF>"
        if expectation and token.kind != "eof":
            message = f"{message}, {expectation}"
        raise _malformed(self.soql, token.pos, message)

    def parse(self, nested: bool = False) -> Query:
        self.expect_keyword("select")
        fields, positions, count_only, subqueries = self.field_list(nested)
        self.expect_keyword("from")
        obj = self.next()
        if obj.kind != "word" or obj.text.lower() in KEYWORDS:
            self.fail(token=obj)
        query = Query(self.soql, fields, positions, obj.text, count_only=count_only, subqueries=subqueries,
                      sobject_pos=obj.pos)
        if self.keyword("where"):
            query.where = self.condition()
        if self.keyword("order"):
            self.expect_keyword("by")
            query.order_by = self.order_list()
        if self.keyword("limit"):
            query.limit = self.integer()
        if self.keyword("offset"):
            query.offset = self.integer()
        if nested:
            if self.peek().text != ")":
                self.fail()
            self.next()
        elif self.peek().kind != "eof":
            self.fail()
        return query

    def field_list(self, nested: bool = False) -> tuple[list[str], list[int], bool, list[Query]]:
        fields, positions, subqueries = [], [], []
        first = self.peek()
        if first.kind == "word" and first.text.lower() == "count()":
            self.next()
            return [], [], True, []
        while True:
            if self.peek().text == "(" and not nested:
                self.next()
                subqueries.append(self.parse(nested=True))
                if self.peek().text != ",":
                    return fields, positions, False, subqueries
                self.next()
                continue
            token = self.next()
            if token.kind != "word" or token.text.lower() in KEYWORDS:
                self.fail(token=token)
            if token.text.endswith("()") or "(" in token.text:
                raise _malformed(self.soql, token.pos, f"unsupported in the sandbox: {token.text}")
            fields.append(token.text)
            positions.append(token.pos)
            if self.peek().text != ",":
                return fields, positions, False, subqueries
            self.next()

    def integer(self) -> int:
        token = self.next()
        if token.kind != "number" or not isinstance(token.value, int) or token.value < 0:
            self.fail(token=token)
        return token.value

    def order_list(self) -> list[OrderItem]:
        items = []
        while True:
            token = self.next()
            if token.kind != "word" or token.text.lower() in KEYWORDS:
                self.fail(token=token)
            item = OrderItem(token.text)
            if self.keyword("desc"):
                item.descending = True
            else:
                self.keyword("asc")
            if self.keyword("nulls"):
                if self.keyword("last"):
                    item.nulls_last = True
                else:
                    self.expect_keyword("first")
                    item.nulls_last = False
            items.append(item)
            if self.peek().text != ",":
                return items
            self.next()

    def condition(self) -> Any:
        items = [self.unary()]
        joiner: str | None = None
        while True:
            token = self.peek()
            word = token.text.lower() if token.kind == "word" else ""
            if word not in ("and", "or"):
                break
            if joiner and word != joiner:
                self.fail(token=token)
            joiner = word
            self.next()
            items.append(self.unary())
        return items[0] if len(items) == 1 else BoolOp(joiner.upper(), items)  # type: ignore[union-attr]

    def unary(self) -> Any:
        if self.keyword("not"):
            return BoolOp("NOT", [self.unary()])
        if self.peek().text == "(":
            self.next()
            inner = self.condition()
            if self.next().text != ")":
                self.fail(token=self.tokens[self.i - 1])
            return inner
        return self.comparison()

    def comparison(self) -> Comparison:
        name = self.next()
        if name.kind != "word" or name.text.lower() in KEYWORDS:
            self.fail(token=name)
        negate = self.keyword("not")
        if self.keyword("in"):
            if not negate and self.peek().text == "(" and self.tokens[self.i + 1].text.lower() == "select":
                self.next()
                return Comparison(name.text, "IN_SELECT", self.parse(nested=True), name.pos)
            return Comparison(name.text, "NOT_IN" if negate else "IN", self.value_list(), name.pos)
        if negate:
            self.fail()
        if self.keyword("like"):
            value = self.next()
            if value.kind != "string":
                self.fail(token=value)
            return Comparison(name.text, "LIKE", value.value, name.pos)
        op = self.next()
        if op.kind != "op":
            self.fail(token=op)
        return Comparison(name.text, "!=" if op.text == "<>" else op.text, self.literal(), name.pos)

    def value_list(self) -> list[Any]:
        if self.next().text != "(":
            self.fail(token=self.tokens[self.i - 1])
        values = [self.literal()]
        while self.peek().text == ",":
            self.next()
            values.append(self.literal())
        if self.next().text != ")":
            self.fail(token=self.tokens[self.i - 1])
        return values

    def literal(self) -> Any:
        token = self.next()
        if token.kind in ("string", "number", "datetime", "date"):
            return _Literal(token.kind, token.value, token.pos)
        if token.kind == "word" and token.text.lower() in ("true", "false"):
            return _Literal("bool", token.text.lower() == "true", token.pos)
        if token.kind == "word" and token.text.lower() == "null":
            return _Literal("null", None, token.pos)
        if token.kind == "word" and re.fullmatch(r"[A-Z_]+(:\d+)?", token.text):
            raise _malformed(self.soql, token.pos, f"unsupported in the sandbox: date literal {token.text}")
        self.fail(token=token)
        raise AssertionError


@dataclass(frozen=True)
class _Literal:
    kind: str
    value: Any
    pos: int


def parse(soql: str) -> Query:
    return _Parser(soql).parse()


# ---- evaluation -----------------------------------------------------------------------------------

FieldTypes = dict[str, str]  # lower-case field name -> Salesforce type


def check_and_bind(query: Query, types: dict[str, tuple[str, str]]) -> None:
    """Resolve field names (case-insensitively) to their API names and check literal types.

    ``types`` maps lower-case name -> (API name, Salesforce field type)."""
    resolved = []
    for name, pos in zip(query.fields, query.field_pos):
        resolved.append(_resolve(query, name, pos, types)[0])
    query.fields = resolved
    for item in query.order_by:
        item.field = _resolve(query, item.field, query.soql.find(item.field), types)[0]
    if query.where is not None:
        _bind_condition(query, query.where, types)


def _resolve(query: Query, name: str, pos: int, types: dict[str, tuple[str, str]]) -> tuple[str, str]:
    if "." in name and name.lower() not in types:
        raise SoqlError("INVALID_FIELD", _located(
            query.soql, pos, f"Didn't understand relationship '{name.split('.')[0]}' in field path. "
            "The sandbox knows only the relationships leadflow reads."))
    found = types.get(name.lower())
    if found is None:
        raise SoqlError("INVALID_FIELD", _located(
            query.soql, pos,
            f"No such column '{name}' on entity '{query.sobject}'. If you are attempting to use a custom field, "
            "be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe "
            "call for the appropriate names."))
    return found


def _bind_condition(query: Query, node: Any, types: dict[str, tuple[str, str]]) -> None:
    if isinstance(node, BoolOp):
        for item in node.items:
            _bind_condition(query, item, types)
        return
    api_name, sf_type = _resolve(query, node.field, node.pos, types)
    node.field = api_name
    if node.op == "IN_SELECT":
        return  # the inner query is bound and run by the caller (semi_joins)
    literals = node.value if isinstance(node.value, list) else [node.value]
    converted = []
    for literal in literals:
        if node.op == "LIKE":
            converted.append(literal)
            continue
        converted.append(_coerce(query, node, literal, sf_type))
    node.value = converted if isinstance(node.value, list) else converted[0]
    if node.op == "LIKE":
        node.value = _like_regex(node.value)


def _coerce(query: Query, node: Comparison, literal: _Literal, sf_type: str) -> Any:
    if literal.kind == "null":
        if node.op not in ("=", "!=", "IN", "NOT_IN"):
            raise SoqlError("INVALID_QUERY_FILTER_OPERATOR", _located(
                query.soql, literal.pos, f"invalid operator on null: {node.op}"))
        return None
    expected = {"datetime": "datetime", "date": "date", "boolean": "bool", "double": "number", "int": "number",
                "currency": "number", "percent": "number"}.get(sf_type, "string")
    if expected == "datetime" and literal.kind == "datetime":
        return literal.value
    if expected == "date" and literal.kind == "date":
        return literal.value
    if expected == "bool" and literal.kind == "bool":
        return literal.value
    if expected == "number" and literal.kind == "number":
        return float(literal.value)
    if expected == "string" and literal.kind == "string":
        value = literal.value.replace("\\_", "_").replace("\\%", "%")
        if sf_type in ("id", "reference") and len(value) == 15 and value.isalnum():
            value += id_suffix(value)
        return value
    shown = {"datetime": "dateTime", "date": "date", "bool": "boolean", "number": "number", "string": "string"}[expected]
    quote = " and should not be enclosed in quotes" if literal.kind == "string" else ""
    raise SoqlError("INVALID_QUERY_FILTER_OPERATOR", _located(
        query.soql, literal.pos,
        f"value of filter criterion for field '{node.field}' must be of type {shown}{quote}"))


_SUFFIX_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


def id_suffix(base15: str) -> str:
    """The 3-character case-safe suffix that turns a 15-character Salesforce id into 18."""
    out = ""
    for chunk in (base15[0:5], base15[5:10], base15[10:15]):
        out += _SUFFIX_CHARS[sum(1 << i for i, char in enumerate(chunk) if "A" <= char <= "Z")]
    return out


def _like_regex(pattern: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern) and pattern[i + 1] in "_%":
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if char == "%" else "." if char == "_" else re.escape(char))
        i += 1
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


def matches(node: Any, record: dict[str, Any], text_fields: frozenset[str]) -> bool:
    """Evaluate a bound condition against a stored record (datetimes as epoch ms, dates as ISO text)."""
    if isinstance(node, BoolOp):
        if node.op == "AND":
            return all(matches(item, record, text_fields) for item in node.items)
        if node.op == "OR":
            return any(matches(item, record, text_fields) for item in node.items)
        return not matches(node.items[0], record, text_fields)
    actual = record.get(node.field)
    is_text = node.field in text_fields
    if isinstance(actual, str) and not is_text and isinstance(node.value, (date,)):
        actual = date.fromisoformat(actual[:10])
    op = node.op
    if op in ("IN", "NOT_IN"):
        hit = any(_equal(actual, value, is_text) for value in node.value)
        return hit if op == "IN" else not hit
    if op == "LIKE":
        return isinstance(actual, str) and node.value.fullmatch(actual) is not None
    if op == "=":
        return _equal(actual, node.value, is_text)
    if op == "!=":
        return not _equal(actual, node.value, is_text)
    if actual is None or node.value is None:
        return False
    if is_text:
        actual, value = actual.lower(), node.value.lower()
    else:
        value = node.value
        if isinstance(actual, bool) or isinstance(value, bool):
            return False
    try:
        return {"<": actual < value, "<=": actual <= value, ">": actual > value, ">=": actual >= value}[op]
    except TypeError:
        return False


def _equal(actual: Any, value: Any, is_text: bool) -> bool:
    if value is None:
        return actual is None or actual == ""
    if actual is None:
        return False
    if is_text and isinstance(actual, str) and isinstance(value, str):
        return actual.lower() == value.lower()
    if isinstance(value, date) and isinstance(actual, str):
        return actual[:10] == value.isoformat()
    return actual == value


def semi_joins(node: Any) -> list[Comparison]:
    """The ``f IN (SELECT ...)`` comparisons of a condition (the caller replaces each by ``IN``)."""
    if node is None:
        return []
    if isinstance(node, BoolOp):
        return [found for item in node.items for found in semi_joins(item)]
    return [node] if node.op == "IN_SELECT" else []


def modstamp_range(node: Any, field_name: str) -> tuple[int | None, bool, int | None, bool]:
    """The ``field_name`` bounds implied by top-level ANDed comparisons (for an index lookup)."""
    low, low_inc, high, high_inc = None, True, None, False
    for part in _anded(node):
        if not isinstance(part, Comparison) or part.field != field_name or not isinstance(part.value, int):
            continue
        value = part.value
        if part.op in (">", ">=") and (low is None or value >= low):
            low, low_inc = value, part.op == ">="
        elif part.op in ("<", "<=") and (high is None or value <= high):
            high, high_inc = value, part.op == "<="
        elif part.op == "=":
            low, low_inc, high, high_inc = value, True, value, True
    return low, low_inc, high, high_inc


def _anded(node: Any) -> list[Any]:
    if node is None:
        return []
    if isinstance(node, BoolOp) and node.op == "AND":
        return [leaf for item in node.items for leaf in _anded(item)]
    return [node]
