"""GBNF, llama.cpp's grammar format: a parser that says where a grammar is wrong.

llama.cpp reports a bad grammar on stderr and hands back nothing, so a user's ``grammar`` is parsed
here first: a syntax error names its line and column, an undefined rule names where it is used, and
left recursion and over-large repetitions (which llama.cpp refuses) are named too. The parser
accepts no more than llama.cpp does, so a grammar that passes here also loads there. The parsed
form is what ``matches`` runs and what tests walk to generate strings a grammar admits.
"""

from __future__ import annotations

from dataclasses import dataclass

from datapilot.core.errors import InvalidRequestError


class GrammarError(InvalidRequestError):
    """A 400 for a bad grammar; ``line`` and ``column`` (1-based) say where, when there is a where."""

    def __init__(
        self,
        message: str,
        *,
        param: str,
        line: int | None = None,
        column: int | None = None,
        syntax: bool = False,
    ) -> None:
        what = "grammar syntax error" if syntax else "grammar error"
        where = f" at line {line}, column {column}" if line is not None else ""
        super().__init__(f"{what}{where}: {message}", param=param, code="invalid_grammar")
        self.line, self.column = line, column


@dataclass(frozen=True, slots=True)
class Lit:
    text: str


@dataclass(frozen=True, slots=True)
class Cls:
    ranges: tuple[tuple[str, str], ...]
    negated: bool = False

    def admits(self, c: str) -> bool:
        return any(lo <= c <= hi for lo, hi in self.ranges) != self.negated


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

# Exactly llama.cpp's escapes: it refuses any other (``\/``, ``\^`` ...), so this parser does too.
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "[": "[", "]": "]", "-": "-"}
_HEX = {"x": 2, "u": 4, "U": 8}
# llama.cpp expands ``x{m,n}`` into rules and refuses a minimum above this, or a repetition whose
# expansion (rules inside the repeated item times the count) reaches it; a maximum above it silently
# becomes "no maximum" there, and so it does here.
MAX_REPEAT = 2000


def _is_word(c: str) -> bool:
    return c.isascii() and (c.isalnum() or c == "-")


class _Parser:
    def __init__(self, text: str, param: str) -> None:
        self.s, self.i, self.param = text, 0, param
        self.rules: dict[str, Expr] = {}
        self.defined_at: dict[str, tuple[int, int]] = {}
        self.refs: list[Ref] = []
        # llama.cpp's symbol table (names, plus one per group and per repetition rule), whose growth
        # inside a group is what its repetition limit multiplies.
        self.names: set[str] = set()
        self.generated = 0

    # -- positions and errors -------------------------------------------------------------------

    def where(self, i: int | None = None) -> tuple[int, int]:
        i = self.i if i is None else i
        line = self.s.count("\n", 0, i) + 1
        return line, i - (self.s.rfind("\n", 0, i) + 1) + 1

    def fail(self, message: str, i: int | None = None) -> GrammarError:
        line, col = self.where(i)
        return GrammarError(message, line=line, column=col, param=self.param, syntax=True)

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

    def symbols(self) -> int:
        return len(self.names) + self.generated

    # -- grammar ----------------------------------------------------------------------------------

    def grammar(self) -> dict[str, Expr]:
        self.space(True)
        if self.i >= len(self.s):
            raise GrammarError("the grammar is empty; it needs at least a rule named root", param=self.param)
        while self.i < len(self.s):
            self.rule()
            self.space(True)
        return self.rules

    def name(self) -> str:
        start = self.i
        while self.i < len(self.s) and _is_word(self.s[self.i]):
            self.i += 1
        if self.i == start:
            found = repr(self.peek()) if self.peek() else "the end"
            raise self.fail(f"expected a rule name (letters, digits, '-'), found {found}")
        self.names.add(self.s[start : self.i])
        return self.s[start : self.i]

    def rule(self) -> None:
        start = self.i
        name = self.name()
        self.space(False)
        if not self.s.startswith("::=", self.i):
            raise self.fail(f"expected '::=' after the rule name {name!r}")
        if name in self.defined_at:
            # llama.cpp keeps the last definition without a word; a second one is almost surely a slip.
            line, col = self.defined_at[name]
            raise self.fail(f"rule {name!r} is defined twice (first at line {line}, column {col})", start)
        self.defined_at[name] = self.where(start)
        self.i += 3
        self.space(True)
        self.rules[name] = self.alternatives(nested=False)
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
        """Items up to ``|``, ``)`` or (outside parentheses) the end of the line; spaces already skipped."""
        items: list[Expr] = []
        while True:
            c = self.peek()
            if c == "" or c in "|)\r\n":
                break
            start = self.i
            before = self.symbols()
            if c == '"':
                item: Expr = Lit(self.literal())
            elif c == "[":
                item = self.char_class()
            elif c == ".":
                self.i += 1
                item = AnyChar()
            elif c == "(":
                self.i += 1
                self.generated += 1
                self.space(True)
                item = self.alternatives(nested=True)
                if self.peek() != ")":
                    raise self.fail("expected ')' to close the group opened here", start)
                self.i += 1
            elif _is_word(c):
                line, col = self.where()
                ref = Ref(self.name(), line, col)
                after = self.i
                self.space(nested)
                if self.s.startswith("::=", self.i):
                    raise self.fail(f"the rule {ref.name!r} starts before the previous one ended", start)
                self.i = after
                self.refs.append(ref)
                item = ref
            elif c in "*+?{":
                raise self.fail(f"{c!r} repeats nothing; put it after an item")
            else:
                raise self.fail(f"unexpected {c!r}")
            self.space(nested)
            item = self.repetitions(item, max(1, self.symbols() - before), nested)
            items.append(item)
        if len(items) == 1:
            return items[0]
        return Seq(tuple(items))

    def repetitions(self, item: Expr, rules_inside: int, nested: bool) -> Expr:
        """``*``, ``+``, ``?`` and ``{...}`` after an item (spaces allowed before each, as in llama.cpp)."""
        while (c := self.peek()) and c in "*+?{":
            start = self.i
            self.i += 1
            lo: int
            hi: int | None
            if c == "*":
                lo, hi = 0, None
            elif c == "+":
                lo, hi = 1, None
            elif c == "?":
                lo, hi = 0, 1
            else:
                lo, hi = self.counts(start, nested)
            if hi is not None and hi > MAX_REPEAT:
                hi = None
            expanded = (hi if hi else lo) or 1
            if rules_inside * expanded >= MAX_REPEAT:
                raise self.fail(
                    f"this repetition expands to {rules_inside * expanded} rules in llama.cpp, which allows "
                    f"fewer than {MAX_REPEAT}; repeat a smaller item or fewer times",
                    start,
                )
            self.generated += 1 if hi is None else hi - lo
            rules_inside *= expanded
            item = Rep(item, lo, hi)
            self.space(nested)
        return item

    def counts(self, start: int, nested: bool) -> tuple[int, int | None]:
        self.space(nested)
        lo = self.integer("after '{' (llama.cpp has no {,n}: write {0,n})")
        self.space(nested)
        hi: int | None = lo
        if self.peek() == ",":
            self.i += 1
            self.space(nested)
            hi = self.integer("") if self.peek().isdigit() else None
            self.space(nested)
        if self.peek() != "}":
            raise self.fail("expected '}' to close the repetition", start)
        self.i += 1
        if hi is not None and hi < lo:
            raise self.fail(f"repetition {{{lo},{hi}}} has its maximum below its minimum", start)
        if lo > MAX_REPEAT:
            raise self.fail(f"a repetition minimum above {MAX_REPEAT} is refused by llama.cpp", start)
        return lo, hi

    def integer(self, context: str) -> int:
        start = self.i
        while self.peek().isdigit():
            self.i += 1
        if self.i == start:
            raise self.fail(f"expected a number {context}".rstrip())
        return int(self.s[start : self.i])

    def char(self) -> str:
        """One character of a literal or class, escapes decoded; the caller checked it is not the end."""
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
        # llama.cpp would read on across a line break; stopping there points at the missing quote.
        start = self.i
        self.i += 1
        out: list[str] = []
        while True:
            if self.i >= len(self.s) or self.s[self.i] in "\r\n":
                raise self.fail("unterminated string literal", start)
            if self.s[self.i] == '"':
                self.i += 1
                return "".join(out)
            out.append(self.char())

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
            lo = self.char()
            hi = lo
            if self.peek() == "-" and self.s[self.i + 1 : self.i + 2] not in ("]", "", "\n", "\r"):
                self.i += 1
                hi = self.char()
                if hi < lo:
                    raise self.fail(f"range {lo!r}-{hi!r} is reversed", start)
            ranges.append((lo, hi))


def _nullable(rules: dict[str, Expr]) -> set[str]:
    """Rules that can match the empty string (fixpoint)."""
    out: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name, body in rules.items():
            if name not in out and _can_be_empty(body, out):
                out.add(name)
                changed = True
    return out


def _can_be_empty(e: Expr, nullable: set[str]) -> bool:
    if isinstance(e, Lit):
        return e.text == ""
    if isinstance(e, Cls | AnyChar):
        return False
    if isinstance(e, Ref):
        return e.name in nullable
    if isinstance(e, Seq):
        return all(_can_be_empty(x, nullable) for x in e.items)
    if isinstance(e, Alt):
        return any(_can_be_empty(x, nullable) for x in e.options)
    return e.min == 0 or _can_be_empty(e.item, nullable)


def _left_refs(e: Expr, nullable: set[str]) -> set[str]:
    """Rules that can start ``e`` (reached without consuming a character)."""
    if isinstance(e, Ref):
        return {e.name}
    if isinstance(e, Rep):
        return _left_refs(e.item, nullable)
    if isinstance(e, Alt):
        return set().union(*(_left_refs(x, nullable) for x in e.options))
    if isinstance(e, Seq):
        refs: set[str] = set()
        for x in e.items:
            refs |= _left_refs(x, nullable)
            if not _can_be_empty(x, nullable):
                break
        return refs
    return set()


def _check_left_recursion(rules: dict[str, Expr], param: str) -> None:
    nullable = _nullable(rules)
    edges = {name: _left_refs(body, nullable) & rules.keys() for name, body in rules.items()}
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for nxt in sorted(edges[name]):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt]
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


def gbnf_literal(text: str) -> str:
    """A GBNF string literal matching exactly ``text``."""
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


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


def matches(rules: dict[str, Expr], text: str, *, start: str = "root") -> bool:
    """Whether the grammar admits all of ``text``: for checking short answers (a test model's replies,
    tests), not for streaming. Every way through the grammar is followed at once as a set of positions,
    memoised per expression and position; left recursion, which could loop, was refused when parsing."""
    memo: dict[tuple[int, int], frozenset[int]] = {}

    def ends(e: Expr, i: int) -> frozenset[int]:
        key = (id(e), i)
        found = memo.get(key)
        if found is None:
            found = memo[key] = frozenset(step(e, i))
        return found

    def after(e: Expr, positions: set[int] | frozenset[int]) -> set[int]:
        return {j for p in positions for j in ends(e, p)}

    def step(e: Expr, i: int) -> set[int]:
        if isinstance(e, Lit):
            return {i + len(e.text)} if text.startswith(e.text, i) else set()
        if isinstance(e, AnyChar):
            return {i + 1} if i < len(text) else set()
        if isinstance(e, Cls):
            return {i + 1} if i < len(text) and e.admits(text[i]) else set()
        if isinstance(e, Ref):
            return set(ends(rules[e.name], i))
        if isinstance(e, Alt):
            return set().union(*(ends(x, i) for x in e.options))
        if isinstance(e, Seq):
            positions: set[int] = {i}
            for x in e.items:
                positions = after(x, positions)
            return positions
        positions = {i}
        for _ in range(e.min):
            positions = after(e.item, positions)
        # Past the minimum, a position reached with fewer repetitions can do all that one reached
        # with more can, so each position needs following only once.
        out, frontier, count = set(positions), positions, e.min
        while frontier and (e.max is None or count < e.max):
            frontier = after(e.item, frontier) - out
            out |= frontier
            count += 1
        return out

    return len(text) in ends(rules[start], 0)
