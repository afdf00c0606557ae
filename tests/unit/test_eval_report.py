"""The card-style table, averages, deltas and the operator summary (pure functions)."""

import re

import pytest

from trainkit.eval.metrics import family, headline, metric_value, preferred_metric, random_baseline
from trainkit.eval.report import build_table, format_percent, markdown, summary, table_from_summary
from trainkit.eval.suite import SEED_SUITE

# The model card's "Our Model" column, as lm-eval would report it (fractions; both metrics present
# where lm-eval reports both, with the non-headline one deliberately different).
CARD = {
    "mmlu": 24.11,
    "hellaswag": 27.03,
    "arc_challenge": 21.67,
    "piqa": 57.29,
    "winogrande": 51.46,
    "truthfulqa_mc2": 47.31,
}


def card_output():
    results = {}
    for t in SEED_SUITE:
        score = CARD[t.name] / 100
        r = {"alias": t.name, f"{t.metric},none": score, f"{t.metric}_stderr,none": 0.01}
        if t.metric == "acc_norm":
            r["acc,none"] = score - 0.015
        elif t.name in ("piqa",):
            r["acc_norm,none"] = score + 0.02
        results[t.name] = r
    return {
        "results": results,
        "n-shot": {t.name: t.num_fewshot for t in SEED_SUITE if t.name != "mmlu"} | {"mmlu_anatomy": 5},
        "group_subtasks": {"mmlu": ["mmlu_anatomy"]},
        "n-samples": {"piqa": {"original": 1838, "effective": 1838}},
    }


def cells(md: str, label: str) -> list[str]:
    line = next(l for l in md.splitlines() if l.startswith(f"| {label}"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_card_numbers_reproduce_the_cards_table():
    table = build_table([t.name for t in SEED_SUITE], card_output(), step=8138)
    md = markdown(table)
    # Card: Average 38.15 | 33.33 | 39.00 | +4.81 | -0.85
    avg = cells(md, "**Average**")
    assert avg[2] == "38.15" and avg[5] == "33.33" and avg[6] == "39.00"
    assert avg[7] == "+4.81" and avg[8] == "-0.85"
    # Card rows: e.g. TruthfulQA MC2 47.31 | 25 | 40 | +22.31 | +7.31, PIQA 57.29 | 50 | 63 | +7.29 | -5.71
    tqa = cells(md, "TruthfulQA MC2 (0-shot)")
    assert tqa[2] == "47.31" and tqa[5] == "25.00" and tqa[6] == "40.00" and tqa[7] == "+22.31" and tqa[8] == "+7.31"
    piqa = cells(md, "PIQA (0-shot)")
    assert piqa[7] == "+7.29" and piqa[8] == "-5.71" and piqa[9] == "1838"
    assert cells(md, "MMLU (5-shot)")[1] == "acc"


def test_headline_follows_the_convention_and_both_metrics_are_reported():
    out = card_output()
    table = build_table([t.name for t in SEED_SUITE], out, step=1)
    by = {r.task: r for r in table.rows}
    assert (
        by["hellaswag"].metric == "acc_norm" and by["hellaswag"].score == out["results"]["hellaswag"]["acc_norm,none"]
    )
    assert by["hellaswag"].acc == out["results"]["hellaswag"]["acc,none"]
    assert by["arc_challenge"].metric == "acc_norm"
    assert by["piqa"].metric == "acc" and by["piqa"].acc_norm == out["results"]["piqa"]["acc_norm,none"]
    assert by["truthfulqa_mc2"].metric == "acc"
    s = summary(table)
    assert s["average"] == pytest.approx(sum(r.score for r in table.rows) / 6)
    assert s["tasks"]["hellaswag"] == out["results"]["hellaswag"]["acc_norm,none"]
    assert s["metrics"]["piqa"] == {
        "acc": out["results"]["piqa"]["acc,none"],
        "acc_norm": out["results"]["piqa"]["acc_norm,none"],
    }
    # the summary rebuilds the same table (what `trainkit report` prints from)
    assert markdown(table_from_summary(s)) == markdown(table)


def test_mirror_tasks_follow_their_familys_convention_but_get_no_reference():
    assert family("tk_hellaswag") == "hellaswag" and preferred_metric("tk_hellaswag") == "acc_norm"
    assert preferred_metric("tk_arc_challenge") == "acc_norm" and preferred_metric("arc_easy") == "acc_norm"
    assert preferred_metric("lambada_openai") == "acc" and family("lambada_openai") is None
    out = {"results": {"tk_hellaswag": {"acc,none": 0.5, "acc_norm,none": 0.25}}}
    row = build_table(["tk_hellaswag"], out, 3).rows[0]
    assert (row.metric, row.score, row.reference, row.random) == ("acc_norm", 0.25, None, 25.0)


def test_random_baseline_of_other_tasks_comes_from_the_choices_seen():
    samples = [
        {"arguments": [("q", " a"), ("q", " b")]},
        {"arguments": [("q", " a"), ("q", " b"), ("q", " c"), ("q", " d")]},
    ]
    assert random_baseline("some_task", samples) == pytest.approx(100 * (0.5 + 0.25) / 2)
    assert random_baseline("some_task", None) is None


def test_headline_falls_back_and_refuses_a_task_without_numbers():
    assert headline("x", {"exact_match,strict": 0.4, "exact_match_stderr,strict": 0.1}) == ("exact_match", 0.4)
    assert metric_value({"acc,custom": 0.3}, "acc") == 0.3
    with pytest.raises(ValueError, match="no numeric metric for task 'x'"):
        headline("x", {"alias": "x"})
    with pytest.raises(ValueError, match="no results for task 'missing'"):
        build_table(["missing"], {"results": {"other": {"acc,none": 1.0}}}, 1)


def test_average_is_the_plain_mean_and_partial_reference_gives_no_reference_average():
    out = {"results": {"piqa": {"acc,none": 0.6}, "my_task": {"acc,none": 0.2}}}
    table = build_table(["piqa", "my_task"], out, 5)
    assert table.average == pytest.approx(0.4)
    assert table.reference_average is None
    assert cells(markdown(table), "**Average**")[6] == "—"
    assert format_percent(0.123456) == "12.35" and re.search(r"\| 40\.00 \|", markdown(table))


def test_hostile_task_names_are_escaped_in_markdown_and_drawn_as_text():
    """Issue 13 hole 11: task names (an lm-eval task folder is the tenant's) reached report.md as HTML, and a `$`
    in one crashed the plots (matplotlib mathtext)."""
    from trainkit.eval.plots import scores_by_step, tasks_bar_chart

    name = "<img src=x onerror=alert(1)>$\\badmacro$|"
    output = {"results": {name: {"alias": name, "acc,none": 0.5}}, "n-shot": {}, "n-samples": {}}
    table = build_table([name], output, step=10)
    md = markdown(table, title="<h1>$\\x$</h1>")
    assert "<img" not in md and "<h1>" not in md and "&lt;img src=x onerror=alert(1)&gt;$\\badmacro$\\|" in md
    assert tasks_bar_chart(table)[:4] == b"\x89PNG"
    assert scores_by_step([{"step": 10, "average": 0.5, "tasks": {name: 0.5}}])[:4] == b"\x89PNG"
