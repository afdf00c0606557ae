"""The mutation runner's own decisions: which mutants a source gives, that applying one changes
behaviour, that live functions (imported elsewhere by name) run the mutant, and the config."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import mutation

SOURCE = '''\
"""Module doc."""
LIMIT = 3


def clamp(x: int, hi: int = 10) -> int:
    """Doc with 1 < 2."""
    if x < 0 or x >= hi:
        raise ValueError(f"x {x + 1} out of range")
    return x * 2


class Box:
    size: int = 4

    def grow(self, n: int) -> bool:
        self.size += n
        return not self.size == 0
'''
TARGET = mutation.TargetModule("pkg/mod.py", ("tests/x.py",))


def test_mutants_of_a_small_module():
    got = [(m.function, m.line, m.mutation) for m in mutation.generate_mutants(TARGET, SOURCE)]
    assert got == [
        ("clamp", 7, "or -> and"),
        ("clamp", 7, "< -> <="),
        ("clamp", 7, "0 -> 1"),
        ("clamp", 7, ">= -> >"),
        ("clamp", 9, "return x -> return None"),
        ("clamp", 9, "* -> /"),
        ("clamp", 9, "2 -> 3"),
        ("Box.grow", 16, "+= -> -="),
        ("Box.grow", 17, "return x -> return None"),
        ("Box.grow", 17, "not x -> x"),
        ("Box.grow", 17, "== -> !="),
        ("Box.grow", 17, "0 -> 1"),
    ]  # nothing from the docstrings, the f-string, LIMIT, the default 10, or the class attribute


def test_functions_filter_limits_mutation_to_named_top_level_names():
    only_box = mutation.TargetModule("pkg/mod.py", (), functions=("Box",))
    assert {m.function for m in mutation.generate_mutants(only_box, SOURCE)} == {"Box.grow"}


def load(tree_or_source: object) -> types.ModuleType:
    module = types.ModuleType("mod")
    exec(compile(tree_or_source, "<mod>", "exec"), module.__dict__)  # type: ignore[arg-type]
    return module


def test_applying_a_mutant_changes_only_that_behaviour():
    mutants = mutation.generate_mutants(TARGET, SOURCE)
    original = load(SOURCE)
    assert original.clamp(4) == 8
    boundary = next(m for m in mutants if m.mutation == ">= -> >")
    mutated = load(mutation.mutated_tree(SOURCE, boundary))
    assert mutated.clamp(4) == 8
    with pytest.raises(ValueError):
        original.clamp(10)
    assert mutated.clamp(10) == 20  # the boundary moved
    no_return = next(m for m in mutants if m.mutation == "return x -> return None" and m.function == "clamp")
    assert load(mutation.mutated_tree(SOURCE, no_return)).clamp(4) is None


def test_swapping_code_reaches_functions_imported_by_name(tmp_path):
    path = tmp_path / "swapme.py"
    path.write_text(SOURCE)
    module = types.ModuleType("swapme")
    exec(compile(SOURCE, str(path), "exec"), module.__dict__)
    clamp, grow = module.clamp, module.Box.grow  # as `from swapme import clamp` would hold them
    m = next(x for x in mutation.generate_mutants(TARGET, SOURCE) if x.mutation == "* -> /")
    mutation._swap_code(str(path), compile(mutation.mutated_tree(SOURCE, m), str(path), "exec"))
    assert clamp(4) == 2.0 and module.clamp is clamp
    assert grow is module.Box.grow


def test_equivalents_match_by_function_mutation_and_line_text():
    m = next(
        x for x in mutation.generate_mutants(TARGET, SOURCE) if x.mutation == "0 -> 1" and x.function == "Box.grow"
    )
    eq = mutation.Equivalent("pkg/mod.py", "Box.grow", "0 -> 1", "return not self.size == 0", "why")
    assert mutation.is_equivalent(m, [eq]) is eq
    assert mutation.is_equivalent(m, [mutation.Equivalent("pkg/mod.py", "clamp", "0 -> 1", eq.line, "why")]) is None


def test_the_project_config_names_existing_modules_and_reasons():
    modules, equivalents = mutation.load_config()
    assert modules, "no module to mutate"
    for t in modules:
        assert (mutation.REPO / t.path).is_file(), t.path
    paths = {t.path for t in modules}
    for e in equivalents:
        assert e.module in paths and e.reason.strip()
        source = (mutation.REPO / e.module).read_text()
        assert any(
            mutation.is_equivalent(m, [e])
            for m in mutation.generate_mutants(next(t for t in modules if t.path == e.module), source)
        ), f"stale equivalent: {e}"


def test_score_counts_equivalents_out():
    r = mutation.ModuleResult("m", mutants=10, killed=8, equivalent=[{}], survived=[{}])
    assert r.counted == 9 and r.score == pytest.approx(800 / 9)
    assert mutation.ModuleResult("empty").score == 100.0
