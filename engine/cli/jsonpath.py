"""kubectl's JSONPath templates (``-o jsonpath=``, ``custom-columns``, ``--sort-by``), parsed once and
run on the objects ``-o json`` prints (docs/output.md).

The subset is kubectl's: text outside braces printed as it is; inside braces a path (``$`` or ``@``
root, ``.field``, ``['field']``, ``..field`` recursive descent, ``*``, ``[N]`` with negative
indices, ``[start:end:step]``, unions ``[0,1]`` / ``['a','b']``, filters ``[?(@.type=="Ready")]``
with ``== != < <= > >=`` or bare existence), a quoted string with ``\\n``/``\\t`` escapes,
``range PATH`` … ``end``. As with kubectl's default ``--allow-missing-template-keys``, a path that
finds nothing prints nothing; several results of one path print space-separated; maps and lists print
as JSON. A template that does not parse is one ``InvalidInput`` naming the template and the position.

Why our own: the format is small, the grammar is kubectl's own rather than any JSONPath standard's,
and the project adds no dependency for it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import msgspec

from events.errors import InvalidInput

#: a value a path found: one node of the object tree
Value = Any


# --- the parsed form -------------------------------------------------------------------------------------


class Field(msgspec.Struct, frozen=True):
    name: str


class Recursive(msgspec.Struct, frozen=True):
    """``..name`` (or ``..*``, ``..[0]``): the step applied to the node and to every node below it."""

    step: Step


class Wildcard(msgspec.Struct, frozen=True):
    pass


class Index(msgspec.Struct, frozen=True):
    index: int


class Slice(msgspec.Struct, frozen=True):
    start: int | None
    end: int | None
    step: int | None


class Union(msgspec.Struct, frozen=True):
    """``[0,2]`` or ``['a','b']``: each part's results in the order written."""

    parts: tuple[Step, ...]


class Fields(msgspec.Struct, frozen=True):
    """``['metadata.name']``: kubectl reads a quoted subscript as a dotted path (``\\.`` keeps a dot)."""

    names: tuple[str, ...]


class Filter(msgspec.Struct, frozen=True):
    """``[?(@.path OP literal)]``, or ``[?(@.path)]`` (exists) when ``op`` is empty."""

    left: Operand
    op: str
    right: Operand | None


class Path(msgspec.Struct, frozen=True):
    """A path from the current node (``@``, or a leading ``.``: inside ``range`` that is the item, as in
    kubectl) or from the root (``$``)."""

    steps: tuple[Step, ...]
    absolute: bool = False


class Literal(msgspec.Struct, frozen=True):
    value: Any


class Text(msgspec.Struct, frozen=True):
    text: str


class Range(msgspec.Struct, frozen=True):
    path: Path
    body: tuple[Node, ...]


Step = Field | Fields | Recursive | Wildcard | Index | Slice | Union | Filter
Operand = Path | Literal
Node = Text | Path | Range


class Template(msgspec.Struct, frozen=True):
    source: str
    nodes: tuple[Node, ...]


# --- parsing -------------------------------------------------------------------------------------------


class _Error(Exception):
    def __init__(self, message: str, position: int) -> None:
        super().__init__(message)
        self.message = message
        self.position = position


_OPERATORS = ("==", "!=", "<=", ">=", "<", ">")
_NAME_END = set(".[]{}()=!<>, \t\n\"'@$")


class _Parser:
    def __init__(self, text: str, base: int) -> None:
        self.text = text
        self.i = 0
        self.base = base  # position of ``text`` inside the whole template, for errors

    def fail(self, message: str, at: int | None = None) -> _Error:
        return _Error(message, self.base + (self.i if at is None else at))

    def peek(self, k: int = 0) -> str:
        j = self.i + k
        return self.text[j] if j < len(self.text) else ""

    def skip_space(self) -> None:
        while self.peek() in (" ", "\t"):
            self.i += 1

    def done(self) -> bool:
        self.skip_space()
        return self.i >= len(self.text)

    def path(self) -> Path:
        self.skip_space()
        absolute = self.peek() == "$"
        if self.peek() in ("$", "@"):
            self.i += 1
        steps: list[Step] = []
        while True:
            c = self.peek()
            if c == "." and self.peek(1) == ".":
                self.i += 2
                steps.append(Recursive(self._after_descent()))
            elif c == ".":
                self.i += 1
                if self.peek() == "*":
                    self.i += 1
                    steps.append(Wildcard())
                elif self.peek() in ("", " ", "}"):
                    continue  # ``{.}``: the node itself
                else:
                    steps.append(Field(self.name()))
            elif c == "[":
                steps.append(self.bracket())
            elif c.isalpha() or c == "_":
                steps.append(Field(self.name()))  # kubectl takes ``{kind}`` for ``{.kind}``
            else:
                break
        return Path(tuple(steps), absolute)

    def _after_descent(self) -> Step:
        if self.peek() == "*":
            self.i += 1
            return Wildcard()
        if self.peek() == "[":
            return self.bracket()
        if not self.peek() or self.peek() in _NAME_END:
            raise self.fail("expected a field name after '..'")
        return Field(self.name())

    def name(self) -> str:
        start = self.i
        out = []
        while (c := self.peek()) and c not in _NAME_END:
            if c == "\\" and self.peek(1):  # ``labels.app\.kubernetes\.io/name``: an escaped dot
                out.append(self.peek(1))
                self.i += 2
                continue
            out.append(c)
            self.i += 1
        if not out:
            raise self.fail("expected a field name", start)
        return "".join(out)

    def bracket(self) -> Step:
        self.i += 1  # the [
        self.skip_space()
        if self.peek() == "?":
            step: Step = self.filter()
        elif self.peek() == "*":
            self.i += 1
            step = Wildcard()
        else:
            parts = [self.subscript()]
            self.skip_space()
            while self.peek() == ",":
                self.i += 1
                parts.append(self.subscript())
                self.skip_space()
            step = parts[0] if len(parts) == 1 else Union(tuple(parts))
        self.skip_space()
        if self.peek() != "]":
            raise self.fail("unclosed '[' (expected ']')" if not self.peek() else "expected ']'", None)
        self.i += 1
        return step

    def subscript(self) -> Step:
        self.skip_space()
        c = self.peek()
        if not c:
            raise self.fail("unclosed '[' (expected ']')")
        if c in ("'", '"'):
            names = _dotted(self.string(raw=True))
            return Field(names[0]) if len(names) == 1 else Fields(tuple(names))
        numbers: list[int | None] = []
        colons = 0
        while True:
            self.skip_space()
            numbers.append(self.maybe_int())
            self.skip_space()
            if self.peek() == ":":
                colons += 1
                if colons > 2:
                    raise self.fail("a slice has at most start:end:step")
                self.i += 1
                continue
            break
        if colons == 0:
            if numbers[0] is None:
                raise self.fail("expected an index, a slice, a quoted name, '*' or a filter '?(...)'")
            return Index(numbers[0])
        while len(numbers) < 3:
            numbers.append(None)
        if numbers[2] == 0:
            raise self.fail("a slice step cannot be 0")
        return Slice(numbers[0], numbers[1], numbers[2])

    def maybe_int(self) -> int | None:
        start = self.i
        if self.peek() == "-":
            self.i += 1
        while self.peek().isdigit():
            self.i += 1
        token = self.text[start : self.i]
        if token in ("", "-"):
            self.i = start
            return None
        return int(token)

    def string(self, *, raw: bool = False) -> str:
        """A quoted string with its escapes applied (``raw``: backslashes kept, for ``_dotted``)."""
        quote = self.peek()
        start = self.i
        self.i += 1
        out: list[str] = []
        while True:
            c = self.peek()
            if not c:
                raise self.fail(f"unterminated string (expected {quote})", start)
            self.i += 1
            if c == quote:
                return "".join(out)
            if c == "\\":
                e = self.peek()
                self.i += 1
                if raw:
                    out.append(c + e)
                else:
                    out.append({"n": "\n", "t": "\t", "r": "\r", "": "\\"}.get(e, e))
            else:
                out.append(c)

    def filter(self) -> Filter:
        self.i += 1  # the ?
        self.skip_space()
        if self.peek() != "(":
            raise self.fail("expected '(' after '?'")
        self.i += 1
        left = self.operand()
        self.skip_space()
        op = next((o for o in _OPERATORS if self.text.startswith(o, self.i)), "")
        right: Operand | None = None
        if op:
            self.i += len(op)
            right = self.operand()
            self.skip_space()
        elif self.text.startswith("=~", self.i):
            raise self.fail("regular expressions (=~) are not supported, as in kubectl")
        if self.peek() != ")":
            raise self.fail("expected ')' to close the filter, or one of == != < <= > >=")
        self.i += 1
        return Filter(left, op, right)

    def operand(self) -> Operand:
        self.skip_space()
        c = self.peek()
        if c in ("@", "$"):
            return self.path()
        if c in ("'", '"'):
            return Literal(self.string())
        start = self.i
        while self.peek() and (self.peek().isalnum() or self.peek() in "-+."):
            self.i += 1
        token = self.text[start : self.i]
        if token in ("true", "false"):
            return Literal(token == "true")
        if token in ("nil", "null"):
            return Literal(None)
        try:
            return Literal(int(token))
        except ValueError:
            pass
        try:
            return Literal(float(token))
        except ValueError:
            raise self.fail("expected @.path, a quoted string, a number, true, false or nil", start) from None


def _dotted(raw: str) -> list[str]:
    names, part, i = [], [], 0
    while i < len(raw):
        if raw[i] == "\\" and i + 1 < len(raw):
            part.append(raw[i + 1])
            i += 2
            continue
        if raw[i] == ".":
            names.append("".join(part))
            part = []
        else:
            part.append(raw[i])
        i += 1
    names.append("".join(part))
    return names


def parse(source: str) -> Template:
    """A template (``{.items[*].metadata.name}``, text around braces kept); InvalidInput when it does
    not parse, naming the template and the (0-based) position."""
    try:
        nodes, i = _nodes(source, 0, top=True)
    except _Error as e:
        raise InvalidInput(f"jsonpath template {source!r}: {e.message} at position {e.position}") from None
    del i
    return Template(source, tuple(nodes))


def _nodes(source: str, i: int, *, top: bool) -> tuple[list[Node], int]:
    """Nodes from ``i`` up to the matching ``{end}`` (or the end of ``source`` at the top)."""
    out: list[Node] = []
    while i < len(source):
        brace = source.find("{", i)
        closing = source.find("}", i)
        if closing != -1 and (brace == -1 or closing < brace):
            raise _Error("'}' without '{'", closing)
        if brace == -1:
            out.append(Text(source[i:]))
            return _closed(out, len(source), top)
        if brace > i:
            out.append(Text(source[i:brace]))
        end = _action_end(source, brace)
        body = source[brace + 1 : end]
        word = body.strip()
        if word == "end":
            if top:
                raise _Error("{end} without {range}", brace)
            return out, end + 1
        if word.startswith("range ") or word == "range":
            p = _Parser(body, brace + 1)
            p.skip_space()
            p.i += len("range")
            path = p.path()
            if not p.done():
                raise p.fail(f"unexpected {p.peek()!r} in range")
            if not path.steps:
                raise p.fail("range needs a path")
            inner, after = _nodes(source, end + 1, top=False)
            out.append(Range(path, tuple(inner)))
            i = after
            continue
        out.extend(_action(body, brace + 1))
        i = end + 1
    return _closed(out, i, top)


def _closed(out: list[Node], i: int, top: bool) -> tuple[list[Node], int]:
    if not top:
        raise _Error("{range} without {end}", i)
    return out, i


def _action_end(source: str, brace: int) -> int:
    """The index of the ``}`` closing the action at ``brace`` (quotes may hold braces)."""
    i = brace + 1
    quote, opened = "", 0
    while i < len(source):
        c = source[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = ""
        elif c in ("'", '"'):
            quote, opened = c, i
        elif c == "{":
            raise _Error("'{' inside an action", i)
        elif c == "}":
            return i
        i += 1
    if quote:
        raise _Error(f"unterminated string (expected {quote})", opened)
    raise _Error("unclosed '{' (expected '}')", brace)


def _action(body: str, base: int) -> list[Node]:
    """One ``{...}``: quoted strings and paths, one after another (``{.a}`` and ``{"\\n"}`` alike)."""
    p = _Parser(body, base)
    out: list[Node] = []
    while not p.done():
        if p.peek() in ("'", '"'):
            out.append(Text(p.string()))
            continue
        start = p.i
        path = p.path()
        if p.i == start:
            raise p.fail(f"unexpected {p.peek()!r}")
        out.append(path)
    return out


def relaxed(expression: str) -> str:
    """kubectl's relaxed form for custom-columns and --sort-by: ``.a.b``, ``a.b`` and ``{.a.b}`` alike."""
    text = expression.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    if text and text[0] not in ".[$@":
        text = "." + text
    return "{" + text + "}"


# --- running -----------------------------------------------------------------------------------------------


def find(path: Path, root: Value, current: Value) -> list[Value]:
    values: list[Value] = [root if path.absolute else current]
    for step in path.steps:
        values = [found for v in values for found in _step(step, v, root)]
        if not values:
            break
    return values


def _step(step: Step, v: Value, root: Value) -> Iterator[Value]:
    match step:
        case Field(name):
            if isinstance(v, dict) and name in v:
                yield v[name]
        case Fields(names):
            for name in names:
                if not isinstance(v, dict) or name not in v:
                    return
                v = v[name]
            yield v
        case Wildcard():
            if isinstance(v, dict):
                yield from (v[k] for k in sorted(v))
            elif isinstance(v, list):
                yield from v
        case Index(index):
            if isinstance(v, list) and -len(v) <= index < len(v):
                yield v[index]
        case Slice(start, end, stride):
            if isinstance(v, list):
                yield from v[slice(start, end, stride)]
        case Union(parts):
            for part in parts:
                yield from _step(part, v, root)
        case Filter():
            if isinstance(v, list):
                yield from (item for item in v if _holds(step, item, root))
            elif isinstance(v, dict):
                yield from (v[k] for k in sorted(v) if _holds(step, v[k], root))
        case Recursive(inner):
            for node in _descend(v):
                yield from _step(inner, node, root)


def _descend(v: Value) -> Iterator[Value]:
    yield v
    if isinstance(v, dict):
        for k in sorted(v):
            yield from _descend(v[k])
    elif isinstance(v, list):
        for item in v:
            yield from _descend(item)


def _operand(o: Operand, item: Value, root: Value) -> list[Value]:
    if isinstance(o, Literal):
        return [o.value]
    return find(o, root, item)


def _holds(f: Filter, item: Value, root: Value) -> bool:
    left = _operand(f.left, item, root)
    if f.right is None:
        return bool(left)
    right = _operand(f.right, item, root)
    return any(_compare(a, f.op, b) for a in left for b in right)


def _compare(a: Value, op: str, b: Value) -> bool:
    """Numbers as numbers, strings as strings; anything else equal or not, else compared as text."""
    if not (_number(a) and _number(b)) and not (isinstance(a, str) and isinstance(b, str)):
        if op in ("==", "!="):
            return bool(a == b) == (op == "==")
        a, b = text(a), text(b)
    if op == "==":
        return bool(a == b)
    if op == "!=":
        return bool(a != b)
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)


def _number(v: Value) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def text(v: Value) -> str:
    """One value as kubectl prints it: strings raw, booleans lower-case, maps and lists as JSON."""
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, int | float):
        return json.dumps(v)
    return json.dumps(v, separators=(",", ":"), sort_keys=True)


def execute(template: Template, root: Value) -> str:
    out: list[str] = []
    _run(template.nodes, root, root, out)
    return "".join(out)


def _run(nodes: tuple[Node, ...], root: Value, current: Value, out: list[str]) -> None:
    for node in nodes:
        if isinstance(node, Text):
            out.append(node.text)
        elif isinstance(node, Path):
            out.append(" ".join(text(v) for v in find(node, root, current)))
        else:
            found = find(node.path, root, current)
            items = found[0] if len(found) == 1 and isinstance(found[0], list) else found
            for item in items:
                _run(node.body, root, item, out)


def values(template: Template, root: Value) -> list[Value]:
    """What the template's paths find in ``root`` (custom-columns cells, --sort-by keys)."""
    found: list[Value] = []
    for node in template.nodes:
        if isinstance(node, Path):
            found.extend(find(node, root, root))
    return found
