"""Rendering the comparison report in memory: markdown, text, self-contained HTML, report.json."""

from __future__ import annotations

import base64
import re

import pytest

from trainkit.compare import CompareError, build_report, default_output, run_result_from
from trainkit.compare.report import REPORT_HTML, REPORT_MD, report_json

MIXES = {
    "m-a": (0.5, 0.3, 0.2),
    "m-b": (0.2, 0.3, 0.5),
    "m-c": (0.1, 0.1, 0.8),
    "m-d": (0.6, 0.2, 0.2),
    "m-e": (0.3, 0.4, 0.3),
    "m-f": (0.2, 0.6, 0.2),
}


def result(name, w, with_eval=True, uri=None):
    doc = {"data": {"sources": [{"name": s, "weight": x} for s, x in zip(("manuals", "web", "edu"), w)]}}
    avg = 34 * w[0] + 37 * w[1] + 41 * w[2]
    loss = 3.3 * w[0] + 3.15 * w[1] + 2.95 * w[2]
    metrics = "".join(f'{{"step": {s}, "loss": {loss + 5.0 / s}}}\n' for s in range(10, 201, 10))
    ev = {"step": 200, "average": avg, "tasks": {"piqa": avg + 18, "mmlu": avg - 12}} if with_eval else None
    return run_result_from(
        uri or f"s3://b/sweep/{name}", doc, {"step": 200, "totalSteps": 200, "loss": loss}, metrics, ev
    )


@pytest.fixture(scope="module")
def report():
    results = [result(n, w) for n, w in MIXES.items()] + [result("m-noeval", (0.05, 0.05, 0.9), with_eval=False)]
    return build_report(results, "eval.average")


def test_markdown_table_is_in_rank_order_with_every_column(report):
    md = report.files[REPORT_MD].decode()
    header = next(line for line in md.splitlines() if line.startswith("| rank"))
    assert header == "| rank | run | weights | final loss | mmlu | piqa | average | status |"
    runs = [line.split("|")[2].strip() for line in md.splitlines() if re.match(r"^\| (\d+|-) \| m-", line)]
    assert runs == ["m-c", "m-b", "m-e", "m-f", "m-a", "m-d", "m-noeval"]
    assert "| - | m-noeval |" in md and "not ranked: no eval summary" in md
    assert "The run the data favours: m-c" in md


def test_html_is_self_contained_with_decodable_pngs(report):
    html = report.files[REPORT_HTML].decode()
    assert "<link" not in html and not re.search(r"""(src|href)\s*=\s*["'](?!data:)""", html)
    imgs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(imgs) == 2
    for b64 in imgs:
        png = base64.b64decode(b64)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
        assert png == report.files["loss_curves.png"] or png == report.files["weights_vs_eval.png"]
    rows = re.findall(r'<tr class="[^"]*" data-rank="([^"]+)" data-run="([^"]+)"', html)
    assert rows[0] == ("1", "m-c") and rows[-1] == ("-", "m-noeval")
    assert 'id="recommendation"' in html and "Trusted" in html


def test_text_output_and_report_json(report):
    assert report.text.startswith("Leaderboard by eval.average (higher is better)")
    assert "Recommended mixture by eval.average" in report.text
    doc = report_json(report, ["report.json"])
    assert [r["rank"] for r in doc["leaderboard"]] == [1, 2, 3, 4, 5, 6, None]
    assert doc["favoured"] == ["m-c"] and doc["recommendation"]["weights"]["edu"] > 0.9


def test_names_are_escaped_in_html_and_markdown():
    evil = result("x", (0.5, 0.5, 0.0), uri="s3://b/sweep/<img src=x onerror=alert(1)>|pipe")
    rep = build_report([evil, result("ok", (0.2, 0.3, 0.5))], "loss")
    html = rep.files[REPORT_HTML].decode()
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;|pipe" in html
    assert "\\|pipe" in rep.files[REPORT_MD].decode()


def test_bad_input_raises_before_rendering():
    with pytest.raises(CompareError, match="no runs to compare"):
        build_report([], "loss")
    with pytest.raises(CompareError, match="unknown metric 'eval.bogus'"):
        build_report([result("a", (0.5, 0.3, 0.2))], "eval.bogus")


def test_default_output_is_next_to_the_first_run():
    assert default_output(["s3://b/sweeps/g1/run-a", "s3://b/other/run-b"]) == "s3://b/sweeps/g1/compare"
    assert default_output(["/data/sweep/run-a/"]) == "/data/sweep/compare"
    assert default_output(["run-a"]) == "./compare"
    assert default_output(["s3://bucket"]) == "s3://bucket/compare"


def test_fractional_scores_are_shown_in_percent_but_kept_raw_in_json():
    def frac(name, w):
        r = result(name, w)
        from dataclasses import replace

        return replace(r, eval_average=r.eval_average / 100, eval_tasks={t: v / 100 for t, v in r.eval_tasks.items()})

    rep = build_report([frac(n, w) for n, w in MIXES.items()], "eval.average")
    md = rep.files[REPORT_MD].decode()
    assert "| average (%) |" in md and "| 1 | m-c |" in md
    top = 34 * 0.1 + 37 * 0.1 + 41 * 0.8
    assert f"{top:.2f}" in md and "eval average 39.90" in rep.text
    # The prediction is in percent too: above the best run (39.90) and at most the best vertex (41).
    predicted = float(re.search(r"predicted eval.average: ([0-9.]+)", rep.text).group(1))
    assert 39.9 < predicted <= 41.0
    doc = report_json(rep, [])
    assert doc["evalDisplayScale"] == 100.0 and doc["leaderboard"][0]["eval"]["average"] == pytest.approx(top / 100)


HOSTILE = "$\\badmacro$<script>alert(1)</script>|x"


def test_hostile_names_from_storage_neither_crash_the_report_nor_inject_html():
    """Issue 13 hole 11: a run name (spec.json's metadata.name, written by whoever can write the prefix) like
    `$\\badmacro$` crashed the report in matplotlib's mathtext; names reached report.md as raw HTML."""
    doc = {"metadata": {"name": HOSTILE}, "spec": {"data": {"sources": [
        {"name": s, "weight": w} for s, w in zip(("manuals", "web", "edu"), (0.3, 0.3, 0.4))]}}}  # fmt: skip
    summary = {"step": 200, "average": 0.4, "tasks": {"piqa": 0.5, "mmlu": 0.3, "<img src=x>$\\frac$": 0.1}}
    evil = run_result_from("s3://b/sweep/evil`<b>", doc, {"step": 200, "totalSteps": 200, "loss": 3.0},
                           '{"step": 10, "loss": 3.1}\n', summary)  # fmt: skip
    report = build_report([result(n, w) for n, w in MIXES.items()] + [evil], "eval.average")
    md, page = report.files[REPORT_MD].decode(), report.files[REPORT_HTML].decode()
    for text in (md, page):
        assert "<script>alert" not in text and "<img src=x>" not in text and "`<b>" not in text
    header = next(line for line in md.splitlines() if line.startswith("| rank"))
    row = next(line for line in md.splitlines() if "badmacro" in line and line.startswith("| ") and line != header)
    assert "$\\badmacro$&lt;script&gt;alert(1)&lt;/script&gt;\\|x" in row  # escaped...
    cells = lambda line: re.split(r"(?<!\\)\|", line)  # noqa: E731
    assert len(cells(row)) == len(cells(header))  # ...and the table keeps its columns
    assert report.files["loss_curves.png"][:8] == b"\x89PNG\r\n\x1a\n"  # the hostile legend entry drew as text
