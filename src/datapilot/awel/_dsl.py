"""The text DSL, parsed with Lark and compiled to the same DAG as ``>>`` and the fluent frame.

    CREATE WORKFLOW RAG AS
    BEGIN
      DATA requestData = RECEIVE REQUEST FROM http_source("/examples/rags", method = "post");
      DATA processedData = TRANSFORM requestData USING embedding(model = "text2vec");
      DATA retrievedData = RETRIEVE DATA FROM vstore(database = "chromadb", key = processedData) ON ERROR FAIL;
      DATA modelResult = APPLY LLM "vicuna-13b" WITH DATA retrievedData AND PARAMETERS (temperature = 0.7)
        ON ERROR RETRY 2 TIMES;
      RESPOND TO http_source WITH modelResult ON ERROR LOG "Failed to respond to request";
    END;

``ON RAY`` (optionally with Ray's task options, ``ON RAY (num_cpus = 1)``) after a statement's
expression runs that node as a Ray task, and ``ON LOCAL`` keeps it in-process; after the workflow's
name (``CREATE WORKFLOW RAG ON RAY AS``) it is the flow's default for every node that can run on Ray.

Each ``DATA`` variable becomes a node of that name. Operator names (``http_source``, ``embedding``,
``vstore``...) resolve only through the operator registry. Keywords are case-insensitive; ``--``
starts a comment. Errors report the line and column and what was expected there.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from datapilot.awel._dag import DAG, BaseOperator
from datapilot.awel._errors import DAGError, DSLError, RegistryError, SerializationError
from datapilot.awel._library import RespondOperator
from datapilot.awel._policy import ErrorPolicy, Fail, Fallback, Retry, Skip
from datapilot.awel._registry import OPERATORS
from datapilot.awel._remote import check_executor, local_only_reason

_KEYWORDS = (
    "CREATE WORKFLOW AS BEGIN END DATA RECEIVE REQUEST FROM TRANSFORM USING RETRIEVE APPLY LLM WITH AND "
    "PARAMETERS RESPOND TO ON ERROR FAIL RETRY TIMES LOG FALLBACK TRUE FALSE NULL RAY LOCAL"
).split()

GRAMMAR = r"""
start: workflow+

workflow: _CREATE _WORKFLOW NAME [run_on] _AS _BEGIN statement* _END ";"

?statement: data_stmt | respond_stmt

data_stmt: _DATA NAME "=" expr [run_on] [on_error] ";"
respond_stmt: _RESPOND _TO NAME _WITH NAME [on_error] ";"

?expr: receive | transform | retrieve | apply_llm
receive: _RECEIVE _REQUEST _FROM call
transform: _TRANSFORM NAME _USING call
retrieve: _RETRIEVE _DATA _FROM call
apply_llm: _APPLY _LLM STRING _WITH _DATA NAME [_AND _PARAMETERS "(" [kwarg ("," kwarg)*] ")"]

call: NAME "(" [argument ("," argument)*] ")"
?argument: value | kwarg
kwarg: NAME "=" value

?value: STRING -> string
      | SIGNED_NUMBER -> number
      | _TRUE -> true
      | _FALSE -> false
      | _NULL -> null
      | NAME -> ref
      | "[" [value ("," value)*] "]" -> array

?run_on: on_ray | on_local
on_ray: _ON _RAY ["(" [kwarg ("," kwarg)*] ")"]
on_local: _ON _LOCAL

on_error: _ON _ERROR (fail | retry | log | fallback)
fail: _FAIL
retry: _RETRY INT _TIMES
log: _LOG STRING
fallback: _FALLBACK value

NAME: /[A-Za-z_][A-Za-z0-9_]*/
STRING: /"(?:[^"\\\n]|\\.)*"/ | /'(?:[^'\\\n]|\\.)*'/
COMMENT: /--[^\n]*/

%import common.SIGNED_NUMBER
%import common.INT
%import common.WS
%ignore WS
%ignore COMMENT
""" + "\n".join(f"_{k}.2: /{k}\\b/i" for k in _KEYWORDS)

_PUNCT = {
    "SEMICOLON": "';'",
    "EQUAL": "'='",
    "LPAR": "'('",
    "RPAR": "')'",
    "COMMA": "','",
    "LSQB": "'['",
    "RSQB": "']'",
    "NAME": "a name",
    "STRING": "a string",
    "SIGNED_NUMBER": "a number",
    "INT": "a whole number",
    "$END": "the end of the text",
}


def _describe_terminal(name: str) -> str:
    if name.startswith("_") and name[1:] in _KEYWORDS:
        return name[1:]
    return _PUNCT.get(name, name)


@lru_cache(maxsize=1)
def _parser() -> Lark:
    return Lark(GRAMMAR, parser="lalr", propagate_positions=True, maybe_placeholders=True)


def _syntax_error(text: str, e: UnexpectedInput) -> DSLError:
    expected: list[str] = []
    if isinstance(e, UnexpectedToken | UnexpectedEOF):
        expected = sorted({_describe_terminal(t) for t in e.expected})
    elif isinstance(e, UnexpectedCharacters):
        expected = sorted({_describe_terminal(t) for t in e.allowed or ()})
    if isinstance(e, UnexpectedToken) and e.token.type != "$END":
        found = f"unexpected {e.token.value!r}"
    elif isinstance(e, UnexpectedCharacters):
        found = f"unexpected character {text[e.pos_in_stream] if e.pos_in_stream is not None else '?'!r}"
    else:
        found = "unexpected end of text"
    line = getattr(e, "line", 0) or 1
    column = getattr(e, "column", 0) or 1
    at_end = isinstance(e, UnexpectedEOF) or (isinstance(e, UnexpectedToken) and e.token.type == "$END")
    if at_end or line < 0 or column < 0:  # point just past the last character
        lines = text.rstrip().splitlines() or [""]
        line, column = len(lines), len(lines[-1]) + 1
    want = f"; expected {', '.join(expected)}" if expected else ""
    return DSLError(found + want, line, column, expected)


class _Ref:
    """A DATA variable named as an argument value."""

    def __init__(self, token: Any) -> None:
        self.name, self.token = str(token), token


def _pos(node: Tree[Any] | Token) -> tuple[int, int]:
    if isinstance(node, Token):
        return node.line or 0, node.column or 0
    return node.meta.line, node.meta.column


class _Compiler:
    def __init__(self, resources: Any) -> None:
        self.resources = resources
        self.placement: dict[str, Any] = {}  # the executor keywords of the statement being compiled

    def workflow(self, tree: Tree[Any]) -> DAG:
        name_tok, run_on = tree.children[:2]
        self.dag = DAG(str(name_tok), resources=self.resources, **self.run_on(run_on, f"workflow {name_tok}"))
        self.vars: dict[str, tuple[BaseOperator, int]] = {}
        self.calls: dict[str, str] = {}  # the registry name a trigger was made with -> its variable
        for stmt in tree.children[2:]:
            if isinstance(stmt, Tree):
                getattr(self, stmt.data)(stmt)
        try:
            self.dag.validate()
        except DAGError as e:
            line, col = _pos(tree)
            raise DSLError(f"workflow {self.dag.name!r}: {e.message}", line, col) from None
        return self.dag

    # statements ----------------------------------------------------------------------------------
    def data_stmt(self, tree: Tree[Any]) -> None:
        name_tok, expr, run_on, on_error = tree.children
        name = str(name_tok)
        if name in self.vars:
            raise DSLError(f"DATA {name} is already defined at line {self.vars[name][1]}", *_pos(name_tok))
        policy = self.on_error(on_error) if on_error is not None else None
        self.placement = self.run_on(run_on, f"DATA {name}")
        try:
            op = getattr(self, f"expr_{expr.data}")(expr, name, policy)
        finally:
            self.placement = {}
        if op.executor == "ray":
            reason = local_only_reason(op)
            if reason is not None:
                at = run_on if run_on is not None else expr
                raise DSLError(f"DATA {name} cannot run ON RAY: {reason}; remove ON RAY", *_pos(at))
        self.vars[name] = (op, _pos(name_tok)[0])

    def respond_stmt(self, tree: Tree[Any]) -> None:
        to_tok, data_tok, on_error = tree.children
        to = str(to_tok)
        trigger = self.vars.get(to, (None, 0))[0] if to in self.vars else None
        target = trigger.name if trigger is not None and trigger.is_source else self.calls.get(to)
        if target is None:
            known = ", ".join([*self.calls, *(n for n, (op, _) in self.vars.items() if op.is_source)]) or "none"
            raise DSLError(f"RESPOND TO {to}: no request source of that name (sources: {known})", *_pos(to_tok))
        source = self.lookup(data_tok)
        policy = self.on_error(on_error) if on_error is not None else None
        op = RespondOperator(to=target, on_error=policy, dag=self.dag)
        self.connect(source, op, tree)

    # expressions ---------------------------------------------------------------------------------
    def expr_receive(self, tree: Tree[Any], name: str, policy: ErrorPolicy | None) -> BaseOperator:
        call = tree.children[0]
        fn_tok = call.children[0]
        op = self.make(call, name, policy, allow_refs=False)
        if not op.is_source:
            raise DSLError(f"RECEIVE REQUEST FROM needs a request source; {str(fn_tok)!r} is not one", *_pos(fn_tok))
        self.calls.setdefault(str(fn_tok), name)
        return op

    def expr_transform(self, tree: Tree[Any], name: str, policy: ErrorPolicy | None) -> BaseOperator:
        src_tok, call = tree.children
        source = self.lookup(src_tok)
        op = self.make(call, name, policy, allow_refs=False)
        self.connect(source, op, call)
        return op

    def expr_retrieve(self, tree: Tree[Any], name: str, policy: ErrorPolicy | None) -> BaseOperator:
        call = tree.children[0]
        refs: list[_Ref] = []
        op = self.make(call, name, policy, allow_refs=True, refs=refs)
        if len(refs) != 1:
            raise DSLError(
                "RETRIEVE DATA FROM needs exactly one DATA input, e.g. key = processedData", *_pos(call.children[0])
            )
        self.connect(self.lookup(refs[0].token), op, call)
        return op

    def expr_apply_llm(self, tree: Tree[Any], name: str, policy: ErrorPolicy | None) -> BaseOperator:
        model_tok, data_tok, *kwargs = tree.children
        params = {str(k.children[0]): self.value(k.children[1], False) for k in kwargs if k is not None}
        op = self.build("llm", model_tok, [], {"model": self.string(model_tok), **params}, name, policy)
        self.connect(self.lookup(data_tok), op, tree)
        return op

    # helpers -------------------------------------------------------------------------------------
    def make(
        self, call: Tree[Any], name: str, policy: ErrorPolicy | None, allow_refs: bool, refs: list[_Ref] | None = None
    ) -> BaseOperator:
        fn_tok, *args = call.children
        positional: list[Any] = []
        keywords: dict[str, Any] = {}
        for arg in args:
            if arg is None:
                continue
            if isinstance(arg, Tree) and arg.data == "kwarg":
                key = str(arg.children[0])
                if key in keywords:
                    raise DSLError(f"argument {key!r} given twice", *_pos(arg.children[0]))
                value = self.value(arg.children[1], allow_refs)
                if isinstance(value, _Ref):
                    assert refs is not None
                    refs.append(value)
                    continue
                keywords[key] = value
            else:
                if keywords:
                    raise DSLError("a positional argument cannot follow a keyword argument", *_pos(arg))
                value = self.value(arg, allow_refs)
                if isinstance(value, _Ref):
                    assert refs is not None
                    refs.append(value)
                    continue
                positional.append(value)
        return self.build(str(fn_tok), fn_tok, positional, keywords, name, policy)

    def build(
        self,
        kind: str,
        at: Any,
        args: list[Any],
        kwargs: dict[str, Any],
        name: str,
        policy: ErrorPolicy | None,
    ) -> BaseOperator:
        try:
            cls = OPERATORS.get(kind)
        except RegistryError as e:
            raise DSLError(e.message, *_pos(at)) from None
        try:
            op: BaseOperator = cls(*args, **kwargs, **self.placement, name=name, on_error=policy, dag=self.dag)
            return op
        except TypeError as e:
            raise DSLError(f"bad arguments for {kind}(): {e}", *_pos(at)) from None
        except (DAGError, ValueError) as e:
            raise DSLError(f"{kind}(): {getattr(e, 'message', e)}", *_pos(at)) from None

    def connect(self, up: BaseOperator, down: BaseOperator, at: Tree[Any] | Token) -> None:
        try:
            self.dag.connect(up, down)
        except DAGError as e:
            raise DSLError(e.message, *_pos(at)) from None

    def lookup(self, tok: Any) -> BaseOperator:
        name = str(tok)
        if name not in self.vars:
            known = ", ".join(self.vars) or "none yet"
            raise DSLError(f"DATA {name} is not defined (defined so far: {known})", *_pos(tok))
        return self.vars[name][0]

    def string(self, tok: Any) -> str:
        raw = str(tok)
        if raw.startswith("'"):
            raw = '"' + raw[1:-1].replace('\\"', '"').replace('"', '\\"') + '"'
        try:
            out = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DSLError(f"bad string escape: {e.msg}", *_pos(tok)) from None
        assert isinstance(out, str)
        return out

    def value(self, node: Tree[Any] | Token, allow_refs: bool) -> Any:
        assert isinstance(node, Tree)
        kind = node.data
        if kind == "string":
            return self.string(node.children[0])
        if kind == "number":
            text = str(node.children[0])
            return float(text) if any(c in text for c in ".eE") else int(text)
        if kind in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[kind]
        if kind == "array":
            return [self.value(c, False) for c in node.children if c is not None]
        tok = node.children[0]
        if not allow_refs:
            raise DSLError(
                f"{str(tok)!r} is a bare name here; quote it to pass a string (only RETRIEVE's key names DATA)",
                *_pos(tok),
            )
        self.lookup(tok)
        return _Ref(tok)

    def run_on(self, tree: Tree[Any] | None, where: str) -> dict[str, Any]:
        """``ON RAY [(options)]`` / ``ON LOCAL`` as the executor keywords of a node or a DAG."""
        if tree is None:
            return {}
        if tree.data == "on_local":
            return {"executor": "local"}
        options: dict[str, Any] = {}
        for kwarg in tree.children:
            if kwarg is None:
                continue
            key = str(kwarg.children[0])
            if key in options:
                raise DSLError(f"Ray option {key!r} given twice", *_pos(kwarg.children[0]))
            options[key] = self.value(kwarg.children[1], False)
        try:
            check_executor("ray", options, where)
        except ValueError as e:
            raise DSLError(str(e), *_pos(tree)) from None
        return {"executor": "ray", "ray_options": options} if options else {"executor": "ray"}

    def on_error(self, tree: Tree[Any]) -> ErrorPolicy:
        action = tree.children[0]
        if action.data == "fail":
            return Fail()
        if action.data == "retry":
            return Retry(int(str(action.children[0])))
        if action.data == "log":
            return Skip(self.string(action.children[0]))
        return Fallback(self.value(action.children[0], False))


def compile_dsl(text: str, resources: Any = None) -> list[DAG]:
    """Parse and compile every workflow in ``text``; raises ``DSLError`` with line and column."""
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as e:
        raise _syntax_error(text, e) from None
    compiler = _Compiler(resources)
    dags = [compiler.workflow(w) for w in tree.children if isinstance(w, Tree)]
    names = [d.name for d in dags]
    for n in names:
        if names.count(n) > 1:
            raise DSLError(f"workflow {n!r} is defined twice", 1, 1)
    return dags


def parse_workflow(text: str, resources: Any = None) -> DAG:
    """Compile a text that holds exactly one workflow."""
    dags = compile_dsl(text, resources)
    if len(dags) != 1:
        raise DSLError(f"expected one workflow, found {len(dags)}", 1, 1)
    return dags[0]


def _dsl_value(value: Any, where: str) -> str:
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_dsl_value(v, where) for v in value) + "]"
    raise SerializationError(f"{where}: the DSL has no way to write {type(value).__name__} values; use JSON")


def _dsl_policy(op: BaseOperator) -> str:
    policy = op.on_error
    if policy.is_default:
        return ""
    if policy.action == "retry" and policy.to_dict().keys() <= {"action", "retries"}:
        return f" ON ERROR RETRY {policy.retries} TIMES"
    if policy.action == "skip":
        return f" ON ERROR LOG {json.dumps(policy.message or 'node failed; skipping', ensure_ascii=False)}"
    if policy.action == "fallback":
        return f" ON ERROR FALLBACK {_dsl_value(policy.fallback, op.name)}"
    raise SerializationError(f"node {op.name!r}: its error policy has settings the DSL cannot write; use JSON")


def _dsl_run_on(executor: str | None, options: dict[str, Any] | None, where: str) -> str:
    if executor is None:
        return ""
    if executor == "local":
        return " ON LOCAL"
    if not options:
        return " ON RAY"
    return " ON RAY (" + ", ".join(f"{k} = {_dsl_value(v, where)}" for k, v in options.items()) + ")"


def to_dsl(dag: DAG) -> str:
    """The DAG as DSL text that ``compile_dsl`` turns back into the same graph.

    The DSL writes chains: each node has at most one input. A DAG with joins, timeouts, dict
    parameters or dict Ray options is refused with a ``SerializationError`` naming the node (use JSON
    for those). The workflow's name keeps only the characters a DSL name may hold (``scene:data`` ->
    ``scene_data``). A node's executor is written ``ON RAY [(options)]`` / ``ON LOCAL``.
    """
    dag.validate()
    name = "".join(c if c.isalnum() or c == "_" else "_" for c in dag.name) or "workflow"
    if name[0].isdigit():
        name = "_" + name
    lines = [f"-- {dag.description}"] if dag.description else []
    lines += [f"CREATE WORKFLOW {name}{_dsl_run_on(dag.executor, dag.ray_options, dag.name)} AS", "BEGIN"]
    for op in dag._topological(dag.nodes.values()):
        kind = OPERATORS.name_of(type(op))
        if kind is None:
            raise SerializationError(f"node {op.describe()}: operator class {type(op).__name__} is not registered")
        if len(op.upstream) > 1:
            raise SerializationError(f"node {op.name!r} has {len(op.upstream)} inputs; the DSL writes chains: use JSON")
        if op.timeout is not None:
            raise SerializationError(f"node {op.name!r} has a timeout, which the DSL cannot write: use JSON")
        if not op.name.isidentifier():
            raise SerializationError(f"node name {op.name!r} is not a DSL name: use JSON")
        args = ", ".join(f"{k} = {_dsl_value(v, op.name)}" for k, v in op.params().items())
        call = f"{kind}({args})"
        expr = f"RECEIVE REQUEST FROM {call}" if not op.upstream else f"TRANSFORM {op.upstream[0].name} USING {call}"
        run_on = _dsl_run_on(op.executor, op.ray_options, op.name)
        lines.append(f"  DATA {op.name} = {expr}{run_on}{_dsl_policy(op)};")
    lines.append("END;")
    return "\n".join(lines) + "\n"
