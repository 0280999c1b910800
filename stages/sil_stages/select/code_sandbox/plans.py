"""A prompt's tests as plans the trusted parent judges: what runs in the sandbox is only expressions, never a verdict.

Integrity rule: a test passes only when the harness itself saw every expression of it evaluated and the comparison,
done here in the stage on plain data, holds. The expected values never enter the process that runs the completion.

How a test becomes a plan:

- `assert A == B` (any comparison, chained or not: `==`, `!=`, `<`, `<=`, `>`, `>=`, `in`, `not in`, `is`, `is not`),
  `assert not X`, `assert X and Y`, `assert X or Y` are taken apart with `ast` down to their leaves; the operators
  are applied here, to the leaves' values. `assert X` of any other form is a single leaf whose truthiness is
  taken here. An assert's message is ignored.
- A leaf is one of three kinds: a **literal** (`3`, `[1, 2]`, `-0.5`, `None`: read here with `ast.literal_eval`, it
  never leaves the stage); a **reference** expression that names nothing the solution defines (only builtins and
  the names the tests import, e.g. `sorted([2, 1])`, `math.pi`): evaluated in a separate clean sandbox run that
  holds no completion, once per prompt; or a **candidate** expression (it names something else, e.g. `add(1, 2)`):
  evaluated in the completion's sandbox run. So a computed expected value is computed without the completion;
  a comparison of two candidate expressions (`assert f(1) == f(2) - 1`) is only as strong as the program's own
  consistency, which is what such a test asks.
- A test must have at least one candidate leaf: one that uses only literals, builtins and imports would pass
  whatever the completion does, and is rejected as bad input.
- The other statements allowed in tests are imports (`import math`, `from math import isclose`): they run in both
  sandboxes after the completion. Anything else (a helper `def`, an assignment) is rejected as bad input: it
  could carry expected values into the completion's process.
- Input/output pairs (`{"input": [args], "output": value}` with the record's `entryPoint`) become the candidate
  leaf `entryPoint(*args)` compared here with `output` after JSON's own conversions (a tuple equals a list).

A value comes back as tagged JSON of exact basic types (see `worker.encode`); anything else (an object with its
own `__eq__`, a subclass of int) is an error, and an error in a leaf fails the test only where the test's logic
reaches it (`assert x is None or x > 0` short-circuits as Python would).
"""

from __future__ import annotations

import ast
import builtins
import json
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sil_stages.core.errors import StageInputError

LeafKind = Literal["literal", "reference", "candidate"]

_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}
_BUILTIN_NAMES = frozenset(dir(builtins))


@dataclass(frozen=True)
class Leaf:
    kind: LeafKind
    source: str
    index: int = -1
    """Position among the plan's candidate (or reference) expressions; -1 for a literal."""
    literal: Any = None


@dataclass(frozen=True)
class Not:
    operand: Node


@dataclass(frozen=True)
class BoolOp:
    conjunction: bool
    """True: `and`; False: `or`."""
    operands: tuple[Node, ...]


@dataclass(frozen=True)
class Compare:
    left: Node
    ops: tuple[Callable[[Any, Any], Any], ...]
    rights: tuple[Node, ...]
    as_json: bool = False
    """Compare after JSON's conversions (input/output pairs: a returned tuple equals the expected list)."""


Node = Leaf | Not | BoolOp | Compare


@dataclass(frozen=True)
class TestPlan:
    """A prompt's tests: one node per test; the expressions to evaluate with and without the completion."""

    tests: tuple[Node, ...]
    setup: tuple[str, ...]
    candidate: tuple[str, ...]
    reference: tuple[str, ...]


class LeafError(Exception):
    """A leaf whose value is unknown: it raised, it timed out, or it did not come back as plain data."""


class _Builder:
    def __init__(self, imported: frozenset[str]) -> None:
        self.known = _BUILTIN_NAMES | imported
        self.candidate: list[str] = []
        self.reference: list[str] = []

    def leaf(self, node: ast.expr) -> Leaf:
        source = ast.unparse(node)
        try:
            return Leaf("literal", source, literal=ast.literal_eval(node))
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            pass
        names = {sub.id for sub in ast.walk(node) if isinstance(sub, ast.Name)}
        if names <= self.known:
            self.reference.append(source)
            return Leaf("reference", source, len(self.reference) - 1)
        self.candidate.append(source)
        return Leaf("candidate", source, len(self.candidate) - 1)

    def node(self, expr: ast.expr) -> Node:
        if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.Not):
            return Not(self.node(expr.operand))
        if isinstance(expr, ast.BoolOp):
            return BoolOp(isinstance(expr.op, ast.And), tuple(self.node(value) for value in expr.values))
        if isinstance(expr, ast.Compare):
            return Compare(
                self.node(expr.left),
                tuple(_COMPARE[type(op)] for op in expr.ops),
                tuple(self.node(value) for value in expr.comparators),
            )
        return self.leaf(expr)


def _imported_names(statement: ast.Import | ast.ImportFrom) -> set[str]:
    return {(alias.asname or alias.name).split(".")[0] for alias in statement.names}


def plan_asserts(sources: Sequence[str], *, where: str) -> TestPlan:
    """The plan of Python test source (assert and import statements); `where` names the record in errors."""
    statements: list[ast.stmt] = []
    for source in sources:
        try:
            statements.extend(ast.parse(source).body)
        except SyntaxError as error:
            raise StageInputError(f"{where}: a test is not valid Python ({error.msg}, line {error.lineno})") from error
    setup = [statement for statement in statements if isinstance(statement, ast.Import | ast.ImportFrom)]
    for statement in statements:
        if not isinstance(statement, ast.Assert | ast.Import | ast.ImportFrom):
            raise StageInputError(
                f"{where}: tests may hold only assert and import statements, not {ast.unparse(statement)!r} (a "
                "helper or variable would run beside the completion and could carry expected values to it)"
            )
    if not any(isinstance(statement, ast.Assert) for statement in statements):
        raise StageInputError(f"{where}: the tests hold no assert statement")
    imported = frozenset(name for statement in setup for name in _imported_names(statement))
    builder = _Builder(imported)
    tests: list[Node] = []
    for statement in statements:
        if isinstance(statement, ast.Assert):
            before = len(builder.candidate)
            tests.append(builder.node(statement.test))
            if len(builder.candidate) == before:
                raise StageInputError(
                    f"{where}: the test {ast.unparse(statement)!r} uses nothing the solution defines (only literals, "
                    "builtins and imports), so it would pass whatever the completion does"
                )
    return TestPlan(
        tuple(tests),
        tuple(ast.unparse(statement) for statement in setup),
        tuple(builder.candidate),
        tuple(builder.reference),
    )


def plan_pairs(pairs: Sequence[Any], entry_point: Any, *, where: str) -> TestPlan:
    """The plan of input/output pairs calling `entry_point(*input)`."""
    if not isinstance(entry_point, str) or not entry_point.isidentifier():
        raise StageInputError(
            f"{where}: input/output tests need the record's `entryPoint`, the name of the function to call "
            f"(got {entry_point!r})"
        )
    builder = _Builder(frozenset())
    tests: list[Node] = []
    for number, pair in enumerate(pairs):
        if not isinstance(pair, Mapping) or set(pair) != {"input", "output"} or not isinstance(pair["input"], list):
            raise StageInputError(
                f'{where}: test {number} must be {{"input": [arguments], "output": value}}, got {pair!r}'
            )
        call = ast.parse(f"{entry_point}(*{json.dumps(pair['input'])})", mode="eval").body
        candidate = builder.leaf(call)
        tests.append(Compare(candidate, (operator.eq,), (Leaf("literal", "", literal=pair["output"]),), as_json=True))
    return TestPlan(tuple(tests), (), tuple(builder.candidate), ())


def plan_record(record: Mapping[str, Any], *, where: str) -> TestPlan:
    """A record's `tests`: Python source (a string, or a list of strings), or a list of input/output pairs."""
    tests = record.get("tests")
    if isinstance(tests, str):
        return plan_asserts([tests], where=where)
    if isinstance(tests, list) and tests and all(isinstance(test, str) for test in tests):
        return plan_asserts(tests, where=where)
    if isinstance(tests, list) and tests and all(isinstance(test, Mapping) for test in tests):
        return plan_pairs(tests, record.get("entryPoint"), where=where)
    raise StageInputError(
        f"{where}: code-tests needs `tests` in every record: Python asserts (a string or a list of strings) or a "
        'list of {"input": [arguments], "output": value} with `entryPoint`; got '
        f"{type(tests).__name__ if tests is not None else 'none'}"
    )


def decode(value: Any, depth: int = 0) -> Any:
    """A value the sandbox sent (tagged JSON, see `worker.encode`) as Python data; LeafError when malformed."""
    if depth > 32:
        raise LeafError("too deep")
    if value is None or type(value) in (bool, int, float, str):
        return value
    if type(value) is list:
        return [decode(item, depth + 1) for item in value]
    if type(value) is dict and len(value) == 1:
        ((tag, content),) = value.items()
        try:
            if tag == "$tuple" and type(content) is list:
                return tuple(decode(item, depth + 1) for item in content)
            if tag == "$set" and type(content) is list:
                return {decode(item, depth + 1) for item in content}
            if tag == "$dict" and type(content) is list:
                return {decode(k, depth + 1): decode(v, depth + 1) for k, v in content}
            if tag == "$bytes" and type(content) is str:
                return bytes.fromhex(content)
            if tag == "$float" and content in ("nan", "inf", "-inf"):
                return float(content)
        except (TypeError, ValueError) as error:
            raise LeafError(f"malformed {tag}: {error}") from error
    raise LeafError("not plain data")


def results_by_index(lines: Sequence[str], count: int) -> dict[int, Any]:
    """The values the run reported, by expression index: the first report of an index counts; an error report or a
    line that is not a well-formed report leaves it unknown."""
    values: dict[int, Any] = {}
    seen: set[int] = set()
    for line in lines:
        try:
            report = json.loads(line)
        except ValueError:
            continue
        if type(report) is not dict or type(report.get("i")) is not int or not 0 <= report["i"] < count:
            continue
        index = report["i"]
        if index in seen:
            continue
        seen.add(index)
        if set(report) == {"i", "value"}:
            try:
                values[index] = decode(report["value"])
            except LeafError:
                continue
    return values


def _to_json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=_unjsonable))


def _unjsonable(value: Any) -> Any:
    raise LeafError(f"{type(value).__name__} is not JSON")


@dataclass(frozen=True)
class Values:
    candidate: Mapping[int, Any]
    reference: Mapping[int, Any]


def _value(leaf: Leaf, values: Values) -> Any:
    if leaf.kind == "literal":
        return leaf.literal
    known = values.candidate if leaf.kind == "candidate" else values.reference
    if leaf.index not in known:
        raise LeafError(f"no value for {leaf.source}")
    return known[leaf.index]


def _evaluate(node: Node, values: Values) -> Any:
    if isinstance(node, Leaf):
        return _value(node, values)
    if isinstance(node, Not):
        return not _truth(node.operand, values)
    if isinstance(node, BoolOp):
        if node.conjunction:
            return all(_truth(operand, values) for operand in node.operands)
        return any(_truth(operand, values) for operand in node.operands)
    left = _evaluate(node.left, values)
    for op, right_node in zip(node.ops, node.rights, strict=True):
        right = _evaluate(right_node, values)
        if node.as_json:
            left, right = _to_json(left), _to_json(right)
        if not op(left, right):
            return False
        left = right
    return True


def _truth(node: Node, values: Values) -> bool:
    return bool(_evaluate(node, values))


def passed(test: Node, values: Values) -> bool:
    """Whether a test holds on the values the harness saw; an unknown value it needs, or a comparison that raises
    (`1 < "a"`), fails it. Everything compared here is plain data (no code of the completion runs)."""
    try:
        return _truth(test, values)
    except (LeafError, TypeError, ValueError, OverflowError, RecursionError):
        return False
