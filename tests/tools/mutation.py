"""Mutation testing of the pure modules: does some unit test fail when one operator of the code changes?

Run it as `scripts/mutation.sh` (see the README's development section). For each module listed in
tests/tools/mutation.toml:
1. the module's unit tests run once, in this process, with a line tracer: which test executes which
   line of the module (and how long each test takes);
2. every classic mutation inside a function body is generated from the AST (comparison, arithmetic,
   constant, boolean and return-value changes; strings, f-strings, docstrings, annotations and default
   values are left alone);
3. each mutant runs in a forked child: the child swaps the mutated code objects into the live
   functions (so `from x import f` elsewhere sees the mutant too), clears lru caches, and runs only the
   tests that executed the mutated line, under a timeout. A failing test kills the mutant.

Why our own runner: mutmut 3 copies one source tree into mutants/ and cosmic-ray runs the whole test
command per mutant; neither fits two source roots (python/, operator/) plus per-line test selection
in a few minutes on two cores. Forking after one import keeps a mutant at ~0.3 s.

Equivalent mutants (no behaviour can tell them apart) are listed in mutation.toml with the reason;
they are reported but not counted. Score = killed / (mutants - equivalent).
"""

from __future__ import annotations

import argparse
import ast
import functools
import gc
import glob
import json
import os
import signal
import sys
import time
import tomllib
import types
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CONFIG = Path(__file__).with_name("mutation.toml")

# ------------------------------------------------------------------------------------ the config


@dataclass(frozen=True)
class TargetModule:
    path: str  # relative to REPO
    tests: tuple[str, ...]  # globs relative to REPO
    functions: tuple[str, ...] = ()  # top-level names to mutate; () = all


@dataclass(frozen=True)
class Equivalent:
    module: str
    function: str
    mutation: str
    line: str
    reason: str


def load_config(path: Path = CONFIG) -> tuple[list[TargetModule], list[Equivalent]]:
    raw = tomllib.loads(path.read_text())
    modules = [TargetModule(m["path"], tuple(m["tests"]), tuple(m.get("functions", ()))) for m in raw.get("module", [])]
    equivalents = [
        Equivalent(e["module"], e["function"], e["mutation"], e["line"], e["reason"]) for e in raw.get("equivalent", [])
    ]
    for e in equivalents:
        if not e.reason.strip():
            raise SystemExit(f"{path}: equivalent mutant {e.module} {e.function} {e.mutation!r} has no reason")
    return modules, equivalents


# ------------------------------------------------------------------------------------ mutations

COMPARE_SWAPS: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
}
BINOP_SWAPS: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Div,
    ast.Mod: ast.FloorDiv,
    ast.Pow: ast.Mult,
    ast.LShift: ast.RShift,
    ast.RShift: ast.LShift,
    ast.BitAnd: ast.BitOr,
    ast.BitOr: ast.BitAnd,
}
SYMBOLS: dict[type[ast.AST], str] = {
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Is: "is",
    ast.IsNot: "is not",
    ast.In: "in",
    ast.NotIn: "not in",
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.And: "and",
    ast.Or: "or",
}


@dataclass(frozen=True)
class Mutant:
    module: str  # TargetModule.path
    index: int  # position in the module's mutant list (stable for one source text)
    function: str  # enclosing qualified name
    line: int
    lines: tuple[int, int]  # the statement lines whose execution selects the tests
    mutation: str  # e.g. "<= -> <"
    text: str  # the source line, stripped
    node_key: tuple[int, int, int, int, str]  # where to apply it in a fresh parse
    variant: int  # which op of a Compare (ops[variant]); 0 otherwise


def _pos(node: ast.AST) -> tuple[int, int, int, int, str]:
    return (
        node.lineno,
        node.col_offset,
        node.end_lineno or node.lineno,
        node.end_col_offset or 0,  # type: ignore[attr-defined]
        type(node).__name__,
    )


def _describe(node: ast.AST, variant: int) -> str | None:
    """The mutation applied to `node`, as printed; None if there is none for this node."""
    if isinstance(node, ast.Compare):
        op = type(node.ops[variant])
        return f"{SYMBOLS[op]} -> {SYMBOLS[COMPARE_SWAPS[op]]}"
    if isinstance(node, (ast.BinOp, ast.AugAssign)):
        op2 = type(node.op)
        if op2 not in BINOP_SWAPS:
            return None
        eq = "=" if isinstance(node, ast.AugAssign) else ""
        return f"{SYMBOLS[op2]}{eq} -> {SYMBOLS[BINOP_SWAPS[op2]]}{eq}"
    if isinstance(node, ast.BoolOp):
        return "and -> or" if isinstance(node.op, ast.And) else "or -> and"
    if isinstance(node, ast.UnaryOp):
        if isinstance(node.op, ast.Not):
            return "not x -> x"
        if isinstance(node.op, ast.USub):
            return "-x -> x"
        return None
    if isinstance(node, ast.Constant):
        v = node.value
        if isinstance(v, bool):
            return f"{v} -> {not v}"
        if isinstance(v, (int, float)):
            return f"{v!r} -> {v + 1!r}"
        return None
    if isinstance(node, ast.Return):
        if node.value is None or (isinstance(node.value, ast.Constant) and node.value.value is None):
            return None
        return "return x -> return None"
    return None


def _apply(node: ast.AST, variant: int) -> ast.AST:
    """Mutate `node` in place (or return its replacement)."""
    if isinstance(node, ast.Compare):
        node.ops[variant] = COMPARE_SWAPS[type(node.ops[variant])]()
    elif isinstance(node, (ast.BinOp, ast.AugAssign)):
        node.op = BINOP_SWAPS[type(node.op)]()
    elif isinstance(node, ast.BoolOp):
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif isinstance(node, ast.UnaryOp):
        return node.operand
    elif isinstance(node, ast.Constant):
        node.value = (not node.value) if isinstance(node.value, bool) else node.value + 1
    elif isinstance(node, ast.Return):
        node.value = ast.Constant(value=None)
    return node


class _Collector(ast.NodeVisitor):
    """Mutable nodes inside function bodies, with their enclosing function and statement."""

    def __init__(self, functions: tuple[str, ...]) -> None:
        self.functions = functions
        self.scope: list[str] = []
        self.in_function = 0
        self.stmt: ast.stmt | None = None
        self.found: list[tuple[ast.AST, int, str, ast.stmt]] = []

    def _enter(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        if not self.scope and self.functions and node.name not in self.functions:
            return
        self.scope.append(node.name)
        is_function = not isinstance(node, ast.ClassDef)
        self.in_function += is_function
        body = node.body
        if (
            body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            body = body[1:]  # the docstring
        for stmt in body:  # decorators, defaults and annotations are not visited
            self.visit(stmt)
        self.in_function -= is_function
        self.scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _enter

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        return  # f-strings are messages

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self.visit(node.body)

    def generic_visit(self, node: ast.AST) -> None:
        if isinstance(node, ast.stmt):
            outer, self.stmt = self.stmt, node
        if self.in_function and self.stmt is not None:
            variants = len(node.ops) if isinstance(node, ast.Compare) else 1
            for v in range(variants):
                if _describe(node, v) is not None:
                    self.found.append((node, v, ".".join(self.scope), self.stmt))
        super().generic_visit(node)
        if isinstance(node, ast.stmt):
            self.stmt = outer


def _stmt_lines(stmt: ast.stmt, node: ast.AST) -> tuple[int, int]:
    """Lines whose execution means the mutated node may run: a compound statement's header only."""
    end = stmt.end_lineno or stmt.lineno
    if hasattr(stmt, "body"):
        end = max(getattr(node, "end_lineno", None) or stmt.lineno, stmt.lineno)
    return stmt.lineno, end


def generate_mutants(target: TargetModule, source: str) -> list[Mutant]:
    tree = ast.parse(source)
    collector = _Collector(target.functions)
    collector.visit(tree)
    src_lines = source.splitlines()
    out: list[Mutant] = []
    for node, variant, function, stmt in collector.found:
        line = node.lineno  # type: ignore[attr-defined]
        desc = _describe(node, variant)
        assert desc is not None
        out.append(
            Mutant(
                target.path,
                len(out),
                function,
                line,
                _stmt_lines(stmt, node),
                desc,
                src_lines[line - 1].strip(),
                _pos(node),
                variant,
            )
        )
    return out


def mutated_tree(source: str, mutant: Mutant) -> ast.Module:
    tree = ast.parse(source)

    class Replace(ast.NodeTransformer):
        done = False

        def visit(self, node: ast.AST) -> Any:
            if not self.done and hasattr(node, "lineno") and _pos(node) == mutant.node_key:
                self.done = True
                return _apply(node, mutant.variant)
            return super().visit(node)

    replacer = Replace()
    tree = replacer.visit(tree)
    if not replacer.done:
        raise RuntimeError(f"mutant {mutant.index} of {mutant.module} not found in the source")
    return ast.fix_missing_locations(tree)


def is_equivalent(m: Mutant, equivalents: list[Equivalent]) -> Equivalent | None:
    for e in equivalents:
        if (e.module, e.function, e.mutation, e.line) == (m.module, m.function, m.mutation, m.text):
            return e
    return None


# ------------------------------------------------------------------------------- line coverage


class _LineTracer:
    """Pytest plugin: which test executes which line of one file, and each test's duration."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.lines_by_test: dict[str, set[int]] = {}
        self.durations: dict[str, float] = {}
        self.failed: list[str] = []
        self._current: set[int] = set()

    def _local(self, frame: types.FrameType, event: str, arg: object) -> Any:
        if event == "line":
            self._current.add(frame.f_lineno)
        return self._local

    def _global(self, frame: types.FrameType, event: str, arg: object) -> Any:
        if frame.f_code.co_filename == self.filename:
            self._current.add(frame.f_lineno)
            return self._local
        return None

    def pytest_runtest_protocol(self, item: Any, nextitem: Any) -> Iterator[None]:
        import threading

        self._current = set()
        started = time.monotonic()
        sys.settrace(self._global)
        threading.settrace(self._global)
        try:
            yield
        finally:
            sys.settrace(None)
            threading.settrace(None)  # type: ignore[arg-type]
        self.durations[item.nodeid] = time.monotonic() - started
        self.lines_by_test[item.nodeid] = self._current

    pytest_runtest_protocol.hookwrapper = True  # type: ignore[attr-defined]

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.failed:
            self.failed.append(report.nodeid)


PYTEST_ARGS = ["-q", "-p", "no:cacheprovider", "-o", "addopts=", "--no-header", "-W", "ignore"]


def trace_tests(target: TargetModule, test_files: list[str]) -> _LineTracer:
    import pytest

    tracer = _LineTracer(str(REPO / target.path))
    with open(os.devnull, "w") as sink:
        saved = os.dup(1), os.dup(2)
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            rc = pytest.main([*PYTEST_ARGS, "-p", "no:randomly", *test_files], plugins=[tracer])
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
    if rc != 0 or tracer.failed:
        raise SystemExit(
            f"{target.path}: the unmutated tests fail ({', '.join(tracer.failed) or f'pytest exit {rc}'}); "
            "fix them before measuring mutants"
        )
    return tracer


# ------------------------------------------------------------------------------------ one mutant


def _swap_code(filename: str, module_code: types.CodeType) -> None:
    """Give every live function of `filename` the mutated code object of the same name and line."""
    new: dict[tuple[str, int], types.CodeType] = {}

    def walk(code: types.CodeType) -> None:
        for c in code.co_consts:
            if isinstance(c, types.CodeType):
                new[(c.co_qualname, c.co_firstlineno)] = c
                walk(c)

    walk(module_code)
    for obj in gc.get_objects():
        if isinstance(obj, types.FunctionType) and obj.__code__.co_filename == filename:
            replacement = new.get((obj.__code__.co_qualname, obj.__code__.co_firstlineno))
            if replacement is not None and replacement.co_freevars == obj.__code__.co_freevars:
                obj.__code__ = replacement
        elif isinstance(obj, functools._lru_cache_wrapper):
            obj.cache_clear()  # results computed by the unmutated code must not answer for the mutant


def run_mutant(source: str, filename: str, mutant: Mutant | None, tests: list[str], timeout: float) -> str:
    """'killed', 'survived', 'timeout' or 'error' (pytest could not run); mutant None = the unmutated code."""
    import pytest

    pid = os.fork()
    if pid == 0:  # the child: mutate, run the tests, report through the exit status
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            if mutant is not None:
                _swap_code(filename, compile(mutated_tree(source, mutant), filename, "exec"))
            rc = pytest.main([*PYTEST_ARGS, "-x", "-p", "no:randomly", *tests])
            os._exit(min(int(rc), 100))
        except BaseException:  # noqa: BLE001 - the child must never return into the parent's loop
            os._exit(101)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout"
        time.sleep(0.01)
    rc = os.waitstatus_to_exitcode(status)
    return {0: "survived", 1: "killed"}.get(rc, "error")


# ------------------------------------------------------------------------------------ the report


@dataclass
class ModuleResult:
    module: str
    mutants: int = 0
    killed: int = 0
    timeout: int = 0
    errors: int = 0
    equivalent: list[dict[str, Any]] = field(default_factory=list)
    survived: list[dict[str, Any]] = field(default_factory=list)  # includes mutants no test executes
    seconds: float = 0.0

    @property
    def counted(self) -> int:
        return self.mutants - len(self.equivalent)

    @property
    def score(self) -> float:
        return 100.0 * (self.counted - len(self.survived)) / self.counted if self.counted else 100.0


def measure(target: TargetModule, equivalents: list[Equivalent], per_test_slack: float, log: bool) -> ModuleResult:
    started = time.monotonic()
    filename = str(REPO / target.path)
    source = Path(filename).read_text()
    test_files = sorted({f for pattern in target.tests for f in glob.glob(str(REPO / pattern))})
    if not test_files:
        raise SystemExit(f"{target.path}: no test file matches {list(target.tests)}")
    tracer = trace_tests(target, test_files)
    if run_mutant(source, filename, None, test_files, timeout=300) != "survived":
        raise SystemExit(f"{target.path}: the tests fail when forked (the runner cannot measure this module)")
    result = ModuleResult(target.path)
    mutants = generate_mutants(target, source)
    result.mutants = len(mutants)
    for m in mutants:
        entry = {"line": m.line, "function": m.function, "mutation": m.mutation, "text": m.text}
        eq = is_equivalent(m, equivalents)
        if eq is not None:
            result.equivalent.append({**entry, "reason": eq.reason})
            continue
        lo, hi = m.lines
        # Fastest first: with -x the first failing test ends the run.
        tests = sorted(
            (t for t, lines in tracer.lines_by_test.items() if any(lo <= n <= hi for n in lines)),
            key=tracer.durations.__getitem__,
        )
        if not tests:
            result.survived.append({**entry, "why": "no test executes this line"})
            outcome = "uncovered"
        else:
            timeout = 10.0 + per_test_slack * sum(tracer.durations[t] for t in tests)
            outcome = run_mutant(source, filename, m, tests, timeout)
            if outcome == "survived":
                result.survived.append({**entry, "why": f"{len(tests)} test(s) pass"})
            elif outcome == "timeout":
                result.timeout += 1
            elif outcome == "error":
                result.errors += 1
            result.killed += outcome != "survived"
        if log:
            print(f"  {m.line:4d} {m.mutation:<26} {outcome}", file=sys.stderr, flush=True)
    result.seconds = round(time.monotonic() - started, 1)
    return result


def print_report(results: list[ModuleResult]) -> None:
    for r in results:
        if r.survived:
            print(f"\nsurviving mutants of {r.module}:")
            for s in r.survived:
                print(
                    f"  {r.module.rsplit('/', 1)[-1]}:{s['line']} {s['function']}: {s['mutation']}   | {s['text']}"
                    f"   ({s['why']})"
                )
    print(f"\n{'module':<42} {'mutants':>7} {'equiv':>5} {'killed':>6} {'alive':>5} {'score':>7} {'time':>7}")
    for r in results:
        print(
            f"{r.module:<42} {r.mutants:>7} {len(r.equivalent):>5} {r.killed:>6} {len(r.survived):>5} "
            f"{r.score:>6.1f}% {r.seconds:>6.0f}s"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/mutation.sh", description=__doc__.split("\n")[0])
    parser.add_argument("modules", nargs="*", help="only modules whose path contains one of these (default: all)")
    parser.add_argument("--fail-under", type=float, default=90.0, help="exit 1 if a module scores below (default 90)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--slack",
        type=float,
        default=5.0,
        help="per-mutant timeout: 10 s + this x the selected tests' traced duration (default 5)",
    )
    parser.add_argument("--list", action="store_true", help="list the mutants without running them")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each mutant's outcome as it runs")
    args = parser.parse_args(argv)
    modules, equivalents = load_config()
    chosen = [m for m in modules if not args.modules or any(s in m.path for s in args.modules)]
    if not chosen:
        parser.error(f"no module in {CONFIG.name} matches {args.modules}")
    if args.list:
        for t in chosen:
            for m in generate_mutants(t, (REPO / t.path).read_text()):
                print(f"{t.path}:{m.line} {m.function}: {m.mutation}   | {m.text}")
        return 0
    sys.path[:0] = [str(REPO / "python"), str(REPO / "operator"), str(REPO)]
    os.chdir(REPO)
    results = []
    for t in chosen:
        print(f"mutating {t.path} ...", file=sys.stderr, flush=True)
        r = measure(t, equivalents, args.slack, args.verbose)
        results.append(r)  # the module's figure now, so a run cut short still reports what it measured
        print(
            f"  {r.score:.1f}% ({r.killed} killed, {len(r.survived)} alive, {len(r.equivalent)} equivalent, "
            f"{r.seconds:.0f}s)",
            file=sys.stderr,
            flush=True,
        )
    print_report(results)
    if args.json:
        args.json.write_text(json.dumps([{**asdict(r), "score": round(r.score, 2)} for r in results], indent=2) + "\n")
    low = [r.module for r in results if r.score < args.fail_under]
    if low:
        print(f"\nbelow {args.fail_under:g}%: {', '.join(low)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
