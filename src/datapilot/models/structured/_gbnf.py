"""GBNF, llama.cpp's grammar format: a parser that says where a grammar is wrong.

llama.cpp reports a bad grammar on stderr and hands back nothing, so a user's ``grammar`` is parsed
here first: a syntax error names its line and column, an undefined rule names where it is used, and
left recursion (which llama.cpp refuses) names its rules. The parsed form is also what tests walk to
generate strings a grammar admits.
"""

from __future__ import annotations

from dataclasses import dataclass

from datapilot.core.errors import InvalidRequestError


class GrammarError(InvalidRequestError):
    def __init__(self, message: str, *, line: int | None = None, column: int | None = None, param: str) -> None:
        where = f" at line {line}, column {column}" if line is not None else ""
        super().__init__(f"grammar error{where}: {message}", param=param, code="invalid_grammar")
        self.line, self.column = line, column


@dataclass(frozen=True, slots=True)
class Lit:
    text: str


@dataclass(frozen=True, slots=True)
class Cls:
    ranges: tuple[tuple[str, str], ...]
    negated: bool = False


@dataclass(frozen=True, slots=True)
class AnyChar:
    pass


@dataclass(frozen=True, slots=True)
class Ref:
    name: str
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class Seq:
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Alt:
    options: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Rep:
    item: Expr
    min: int
    max: int | None


Expr = Lit | Cls | AnyChar | Ref | Seq | Alt | Rep

_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "[": "[", "]": "]", "-": "-", "^": "^", "/": "/"}
_HEX = {"x": 2, "u": 4, "U": 8}
MAX_REPEAT = 10_000


def _is_word(c: str) -> bool:
    return c.isascii() and (c.isalnum() or c == "-")


class _Parser:
    def __init__(self, text: str, param: str) -> None:
        self.s, self.i, self.param = text, 0, param
        self.rules: dict[str, Expr] = {}
        self.defined_at: dict[str, tuple[int, int]] = {}
        self.refs: list[Ref] = []

    # -- positions and errors -------------------------------------------------------------------

    def where(self, i: int | None = None) -> tuple[int, int]:
        i = self.i if i is None else i
        line = self.s.count("\n", 0, i) + 1
        return line, i - (self.s.rfind("\n", 0, i) + 1) + 1

    def fail(self, message: str, i: int | None = None) -> GrammarError:
        line, col = self.where(i)
        return GrammarError(message, line=line, column=col, param=self.param)

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def space(self, newlines: bool) -> None:
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if c == "#":
                while self.i < len(s) and s[self.i] not in "\r\n":
                    self.i += 1
            elif c in " \t" or (newlines and c in "\r\n"):
                self.i += 1
            else:
                return

    # -- grammar ----------------------------------------------------------------------------------

    def grammar(self) -> dict[str, Expr]:
        self.space(True)
        if self.i >= len(self.s):
            raise self.fail("the grammar is empty; it needs at least a rule named root")
        while self.i < len(self.s):
            self.rule()
            self.space(True)
        return self.rules

    def name(self) -> str:
        start = self.i
        while self.i < len(self.s) and _is_word(self.s[self.i]):
            self.i += 1
        if self.i == start:
            found = self.peek() or "the end"
            raise self.fail(f"expected a rule name (letters, digits, '-'), found {found!r}")
        return self.s[start : self.i]

    def rule(self) -> None:
        start = self.i
        name = self.name()
        self.space(False)
        if not self.s.startswith("::=", self.i):
            raise self.fail(f"expected '::=' after the rule name {name!r}")
        if name in self.defined_at:
            line, col = self.defined_at[name]
            raise self.fail(f"rule {name!r} is defined twice (first at line {line}, column {col})", start)
        self.defined_at[name] = self.where(start)
        self.i += 3
        self.space(True)
        self.rules[name] = self.alternatives(nested=False)
        self.space(False)
        if self.i < len(self.s) and self.s[self.i] not in "\r\n":
            raise self.fail(f"unexpected {self.s[self.i]!r}; a rule ends at the end of its line")

    def alternatives(self, nested: bool) -> Expr:
        options = [self.sequence(nested)]
        while self.peek() == "|":
            self.i += 1
            self.space(True)
            options.append(self.sequence(nested))
        return options[0] if len(options) == 1 else Alt(tuple(options))

    def sequence(self, nested: bool) -> Expr:
        items: list[Expr] = []
        while True:
            c = self.peek()
            if c == "" or c in "|)\r\n" or (c == "#"):
                break
            start = self.i
            if c == '"':
                item: Expr = Lit(self.literal())
            elif c == "[":
                item = self.char_class()
            elif c == ".":
                self.i += 1
                item = AnyChar()
            elif c == "(":
                self.i += 1
                self.space(True)
                item = self.alternatives(nested=True)
                if self.peek() != ")":
                    raise self.fail("expected ')' to close the group opened here", start)
                self.i += 1
            elif _is_word(c):
                line, col = self.where()
                ref = Ref(self.name(), line, col)
                self.space(nested)
                if self.s.startswith("::=", self.i):
                    raise self.fail(f"the rule {ref.name!r} starts before the previous one ended", start)
                self.i = start + len(ref.name)
                self.refs.append(ref)
                item = ref
            else:
                raise self.fail(f"unexpected {c!r}")
            item = self.repetition(item)
            items.append(item)
            self.space(nested)
        if len(items) == 1:
            return items[0]
        return Seq(tuple(items))

    def repetition(self, item: Expr) -> Expr:
        c = self.peek()
        if c == "*":
            self.i += 1
            return Rep(item, 0, None)
        if c == "+":
            self.i += 1
            return Rep(item, 1, None)
        if c == "?":
            self.i += 1
            return Rep(item, 0, 1)
        if c != "{":
            return item
        start = self.i
        self.i += 1
        lo = self.integer()
        hi: int | None = lo
        if self.peek() == ",":
            self.i += 1
            hi = self.integer() if self.peek().isdigit() else None
        if self.peek() != "}":
            raise self.fail("expected '}' to close the repetition", start)
        self.i += 1
        if hi is not None and hi < lo:
            raise self.fail(f"repetition {{{lo},{hi}}} has its maximum below its minimum", start)
        if (hi if hi is not None else lo) > MAX_REPEAT:
            raise self.fail(f"repetition counts above {MAX_REPEAT} are not allowed", start)
        return Rep(item, lo, hi)

    def integer(self) -> int:
        start = self.i
        while self.peek().isdigit():
            self.i += 1
        if self.i == start:
            raise self.fail("expected a number in the repetition")
        return int(self.s[start : self.i])

    def char(self, closing: str) -> str:
        """One character of a literal or class, escapes decoded."""
        if self.i >= len(self.s) or self.s[self.i] in "\r\n":
            raise self.fail("unterminated string literal" if closing == '"' else "unterminated character class")
        c = self.s[self.i]
        if c != "\\":
            self.i += 1
            return c
        start = self.i
        esc = self.s[self.i + 1 : self.i + 2]
        if esc in _ESCAPES:
            self.i += 2
            return _ESCAPES[esc]
        if esc in _HEX:
            digits = self.s[self.i + 2 : self.i + 2 + _HEX[esc]]
            if len(digits) != _HEX[esc] or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise self.fail(f"\\{esc} needs {_HEX[esc]} hex digits", start)
            self.i += 2 + _HEX[esc]
            code = int(digits, 16)
            if code > 0x10FFFF:
                raise self.fail(f"\\{esc}{digits} is not a Unicode code point", start)
            return chr(code)
        raise self.fail(f"unknown escape '\\{esc}'", start)

    def literal(self) -> str:
        start = self.i
        self.i += 1
        out: list[str] = []
        while True:
            if self.i >= len(self.s) or self.s[self.i] in "\r\n":
                raise self.fail("unterminated string literal", start)
            if self.s[self.i] == '"':
                self.i += 1
                return "".join(out)
            out.append(self.char('"'))

    def char_class(self) -> Cls:
        start = self.i
        self.i += 1
        negated = self.peek() == "^"
        if negated:
            self.i += 1
        ranges: list[tuple[str, str]] = []
        while True:
            if self.i >= len(self.s) or self.s[self.i] in "\r\n":
                raise self.fail("unterminated character class", start)
            if self.s[self.i] == "]":
                self.i += 1
                return Cls(tuple(ranges), negated)
            lo = self.char("]")
            hi = lo
            if self.peek() == "-" and self.s[self.i + 1 : self.i + 2] not in ("]", ""):
                self.i += 1
                hi = self.char("]")
                if hi < lo:
                    raise self.fail(f"range {lo!r}-{hi!r} is reversed", start)
            ranges.append((lo, hi))


def _nullable(rules: dict[str, Expr]) -> set[str]:
    """Rules that can match the empty string (fixpoint)."""
    out: set[str] = set()

    def can_be_empty(e: Expr) -> bool:
        if isinstance(e, Lit):
            return e.text == ""
        if isinstance(e, Cls | AnyChar):
            return False
        if isinstance(e, Ref):
            return e.name in out
        if isinstance(e, Seq):
            return all(can_be_empty(x) for x in e.items)
        if isinstance(e, Alt):
            return any(can_be_empty(x) for x in e.options)
        return e.min == 0 or can_be_empty(e.item)

    changed = True
    while changed:
        changed = False
        for name, body in rules.items():
            if name not in out and can_be_empty(body):
                out.add(name)
                changed = True
    return out


def _left_refs(e: Expr, nullable: set[str]) -> tuple[set[str], bool]:
    """Rules that can start ``e``, and whether ``e`` can be empty."""
    if isinstance(e, Lit):
        return set(), e.text == ""
    if isinstance(e, Cls | AnyChar):
        return set(), False
    if isinstance(e, Ref):
        return {e.name}, e.name in nullable
    refs: set[str] = set()
    if isinstance(e, Rep):
        refs, empty = _left_refs(e.item, nullable)
        return refs, empty or e.min == 0
    if isinstance(e, Alt):
        empty = False
        for x in e.options:
            r, n = _left_refs(x, nullable)
            refs |= r
            empty = empty or n
        return refs, empty
    for x in e.items:
        r, n = _left_refs(x, nullable)
        refs |= r
        if not n:
            return refs, False
    return refs, True


def _check_left_recursion(rules: dict[str, Expr], param: str) -> None:
    nullable = _nullable(rules)
    edges = {name: _left_refs(body, nullable)[0] & rules.keys() for name, body in rules.items()}
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for nxt in sorted(edges[name]):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt] if nxt in path else [name, nxt]
                raise GrammarError(
                    f"left recursion ({' -> '.join(cycle)}) is not supported by llama.cpp; "
                    "rewrite it with repetition, e.g. list ::= item (',' item)*",
                    param=param,
                )
            if state.get(nxt) is None:
                visit(nxt, [*path, nxt])
        state[name] = 2

    for name in rules:
        if name not in state:
            visit(name, [name])


def parse_gbnf(text: str, *, param: str = "grammar") -> dict[str, Expr]:
    """The rules of a GBNF grammar by name; raises ``GrammarError`` (a 400) saying where it is wrong."""
    parser = _Parser(text, param)
    rules = parser.grammar()
    for ref in parser.refs:
        if ref.name not in rules:
            raise GrammarError(
                f"rule {ref.name!r} is used but never defined", line=ref.line, column=ref.column, param=param
            )
    if "root" not in rules:
        raise GrammarError("the grammar has no rule named root, where generation starts", param=param)
    _check_left_recursion(rules, param)
    return rules


def check_gbnf(text: str, *, param: str = "grammar") -> None:
    parse_gbnf(text, param=param)


def referenced(e: Expr) -> set[str]:
    """Names of the rules ``e`` refers to."""
    if isinstance(e, Ref):
        return {e.name}
    if isinstance(e, Seq):
        return set().union(*(referenced(x) for x in e.items))
    if isinstance(e, Alt):
        return set().union(*(referenced(x) for x in e.options))
    if isinstance(e, Rep):
        return referenced(e.item)
    return set()


def reachable(rules: dict[str, Expr], start: str = "root") -> set[str]:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(referenced(rules[name]) - seen)
    return seen
