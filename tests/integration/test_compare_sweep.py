"""`trainkit compare` against a real S3 server (moto) holding run folders written exactly as the
trainer and eval write them, and the HTML report rendered by a real headless Chromium."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from support.browser import chromium, find_chromium, layout_problems
from trainkit import storage
from trainkit.compare import CompareError, compare_runs, discover_runs
from trainkit.spec import TrainingRunSpec, load_run

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("manuals", "web", "edu")
TASKS = ("tk_arc_challenge", "tk_hellaswag", "tk_mmlu", "tk_piqa", "tk_truthfulqa_mc2", "tk_winogrande")
# The truth the data is generated from: each source's contribution to the eval average (edu best)
# and to the final loss (edu lowest). Known, so the report's ranking and recommendation can be checked.
EVAL_BY_SOURCE = np.array([0.34, 0.37, 0.41])  # fractions, as trainkit.eval writes summary.json
LOSS_BY_SOURCE = np.array([3.30, 3.15, 2.95])
MIXTURES = {
    "mix-a": (0.5, 0.3, 0.2),
    "mix-b": (0.2, 0.3, 0.5),
    "mix-c": (0.6, 0.2, 0.2),
    "mix-d": (0.1, 0.1, 0.8),
    "mix-e": (1.0, 1.0, 1.0),  # unnormalised on purpose: 1/3 each
    "mix-f": (0.2, 0.6, 0.2),
    "mix-g": (0.7, 0.1, 0.2),
}
NO_EVAL = "mix-h"  # finished, but its eval never ran
TOTAL_STEPS = 200


def spec_document(weights, output_uri: str) -> dict:
    """The quickstart's validated spec with other weights, as the trainer writes spec.json."""
    doc = load_run(REPO / "jobs" / "quickstart.yaml").spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    for src, w in zip(doc["data"]["sources"], weights):
        src["weight"] = w
    doc["output"]["uri"] = output_uri
    return TrainingRunSpec.model_validate(doc).model_dump(mode="json", by_alias=True, exclude_none=True)


def true_eval(weights) -> float:
    w = np.asarray(weights, float) / sum(weights)
    return float(w @ EVAL_BY_SOURCE)


def true_loss(weights) -> float:
    w = np.asarray(weights, float) / sum(weights)
    return float(w @ LOSS_BY_SOURCE)


def write_run(uri: str, weights, seed: int, with_eval: bool = True) -> None:
    rng = np.random.default_rng(seed)
    storage.write_json(storage.join(uri, "spec.json"), spec_document(weights, uri))
    w = np.asarray(weights, float) / sum(weights)
    final = true_loss(weights)
    lines = []
    for step in range(10, TOTAL_STEPS + 1, 10):
        loss = final + 7.8 * (step / 10) ** -1.1 + (rng.normal(0, 0.01) if step < TOTAL_STEPS else 0.0)
        lr = 3e-4 + 0.5 * (3e-3 - 3e-4) * (1 + math.cos(math.pi * step / TOTAL_STEPS))
        lines.append(
            {
                "step": step,
                "loss": loss,
                "lr": lr,
                "gradNorm": float(1.5 * (step / 10) ** -0.3),
                "tokensPerSecond": 4100.0 + rng.normal(0, 50),
                "mfu": None,
                "sourceSequences": {s: int(round(step * 8 * x)) for s, x in zip(SOURCES, w)},
            }
        )
    storage.write_bytes(
        storage.join(uri, "metrics.jsonl"), "".join(json.dumps(m, sort_keys=True) + "\n" for m in lines).encode()
    )
    storage.write_json(
        storage.join(uri, "progress.json"),
        {
            "step": TOTAL_STEPS,
            "totalSteps": TOTAL_STEPS,
            "tokens": TOTAL_STEPS * 1024,
            "loss": lines[-1]["loss"],
            "tokensPerSecond": 4100.0,
            "mfu": None,
            "etaSeconds": 0.0,
            "updatedAt": "2026-11-27T08:00:00Z",
            "finished": True,
        },
    )
    if not with_eval:  # its eval started but never wrote summary.json: there is no eval to read
        storage.write_json(storage.join(uri, f"eval/step-{TOTAL_STEPS:08d}/results.json"), {"results": {}})
        return
    avg = true_eval(weights)
    tasks = {t: avg + d for t, d in zip(TASKS, (-0.14, -0.10, -0.12, 0.18, 0.08, 0.10))}  # mean of offsets is 0
    for step, shift in ((100, -0.03), (TOTAL_STEPS, 0.0)):  # an older, worse eval: the latest must win
        ts = {t: v + shift for t, v in tasks.items()}
        storage.write_json(
            storage.join(uri, f"eval/step-{step:08d}/summary.json"),
            {
                "step": step,
                "average": sum(ts.values()) / len(ts),
                "tasks": ts,
                "metrics": {t: {"acc": v, "acc_norm": v} for t, v in ts.items()},
                "headlineMetric": {t: "acc" for t in ts},
            },
        )
        storage.write_json(storage.join(uri, f"eval/step-{step:08d}/results.json"), {"results": {}, "versions": {}})


@pytest.fixture
def sweep(s3_bucket):
    """A sweep's base output URI with 8 runs: 7 evaluated mixtures and one without eval."""
    base = f"{s3_bucket}/sweeps/mix-grid"
    for i, (name, w) in enumerate(MIXTURES.items()):
        write_run(f"{base}/{name}", w, seed=i)
    write_run(f"{base}/{NO_EVAL}", (0.05, 0.05, 0.9), seed=99, with_eval=False)
    return base


def expected_order(key) -> list[str]:
    return [n for n, _ in sorted(MIXTURES.items(), key=lambda kv: key(kv[1]))]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trainkit", "compare", *args], capture_output=True, text=True, timeout=300
    )


def list_keys(uri: str) -> list[str]:
    fs, path = storage.filesystem(uri)
    fs.invalidate_cache()
    return sorted(p[len(path) :].lstrip("/") for p in fs.find(path))


# ---------------------------------------------------------------------------------------- tests
def test_cli_ranks_a_sweep_by_eval_average_and_writes_the_report(sweep):
    proc = run_cli(sweep)
    assert proc.returncode == 0, proc.stderr
    out_uri = f"{sweep}/compare"
    assert set(list_keys(out_uri)) == {
        "loss_curves.png",
        "weights_vs_eval.png",
        "report.md",
        "report.html",
        "report.json",
    }
    doc = storage.read_json(f"{out_uri}/report.json")
    order = expected_order(lambda w: -true_eval(w))
    assert [r["run"] for r in doc["leaderboard"]] == order + [NO_EVAL]
    assert [r["rank"] for r in doc["leaderboard"]] == list(range(1, 8)) + [None]
    assert "no eval summary" in doc["leaderboard"][-1]["note"]
    assert doc["favoured"] == ["mix-d"]
    # The latest eval (step 200) was read, not the older one.
    top = doc["leaderboard"][0]
    assert top["eval"]["step"] == TOTAL_STEPS and top["eval"]["average"] == pytest.approx(true_eval(MIXTURES["mix-d"]))
    assert top["weights"] == pytest.approx(dict(zip(SOURCES, (0.1, 0.1, 0.8))))
    assert doc["leaderboard"][4 if order[4] == "mix-e" else order.index("mix-e")]["weights"]["edu"] == pytest.approx(
        1 / 3
    )
    # The recommendation finds the known best vertex (all edu) from 7 evaluated runs, and trusts it.
    rec = doc["recommendation"]
    assert rec["runsUsed"] == 7 and rec["trusted"], rec
    assert rec["weights"]["edu"] > 0.9
    # Printed: the table in rank order, the favoured run, the recommendation.
    text = proc.stdout
    positions = [text.index(f"  {n}  ") for n in order]
    assert positions == sorted(positions)
    assert "The run the data favours: mix-d" in text and "Recommended mixture" in text
    assert f"{100 * true_eval(MIXTURES['mix-d']):.2f}" in text  # fractions are shown in percent
    md = storage.read_bytes(f"{out_uri}/report.md").decode()
    assert "| 1 | mix-d |" in md and "![loss curves](loss_curves.png)" in md
    for png in ("loss_curves.png", "weights_vs_eval.png"):
        assert storage.read_bytes(f"{out_uri}/{png}")[:8] == b"\x89PNG\r\n\x1a\n"


def test_rank_by_loss_and_by_task_and_explicit_output(sweep, s3_bucket):
    out = f"{s3_bucket}/elsewhere/by-loss"
    report = compare_runs([sweep], rank_by="loss", output=out)
    assert report.output_uri == out
    names = [r.run.name for r in report.rows]
    loss_order = sorted(list(MIXTURES.items()) + [(NO_EVAL, (0.05, 0.05, 0.9))], key=lambda kv: true_loss(kv[1]))
    assert names == [n for n, _ in loss_order]  # every run has a loss, the one without eval too
    assert storage.read_json(f"{out}/report.json")["rankBy"] == "loss"
    assert not storage.exists(f"{sweep}/compare/report.json")

    by_task = compare_runs([f"{sweep}/mix-a", f"{sweep}/mix-d", f"{sweep}/mix-c"], rank_by="eval.tk_piqa")
    assert [r.run.name for r in by_task.rows] == ["mix-d", "mix-a", "mix-c"]
    assert by_task.output_uri == f"{sweep}/compare"  # the first run's parent


@pytest.mark.parametrize("case", ["empty", "no-spec", "unknown-metric", "unknown-task"])
def test_bad_input_fails_clearly_and_writes_nothing(case, sweep, s3_bucket):
    out = f"{s3_bucket}/reports/{case}"
    if case == "empty":
        storage.write_bytes(f"{s3_bucket}/nothing-here/readme.txt", b"not a run\n")
        args, needle = [f"{s3_bucket}/nothing-here"], f"{s3_bucket}/nothing-here: no runs found"
    elif case == "no-spec":
        broken = f"{sweep}/mix-broken"
        storage.write_bytes(f"{broken}/metrics.jsonl", b'{"step": 10, "loss": 5.0}\n')
        args, needle = [sweep], f"{broken}"
    elif case == "unknown-metric":
        args, needle = [sweep, "--rank-by", "accuracy"], "unknown metric 'accuracy'"
    else:
        args, needle = [sweep, "--rank-by", "eval.nosuchtask"], "unknown metric 'eval.nosuchtask'"
    proc = run_cli(*args, "--output", out)
    assert proc.returncode != 0
    assert needle in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert list_keys(out) == []
    assert not storage.exists(f"{out}/report.json") and not storage.exists(f"{out}/report.html")
    assert not storage.exists(f"{sweep}/compare/report.json")


def test_a_run_uri_without_spec_json_is_named(s3_bucket):
    run = f"{s3_bucket}/runs/half-written"
    storage.write_json(f"{run}/progress.json", {"step": 10, "totalSteps": 200, "loss": 5.0})
    with pytest.raises(CompareError, match=re.escape(run) + ".*no spec.json"):
        discover_runs(run)


def test_compare_works_on_local_folders_too(tmp_path):
    base = tmp_path / "sweep"
    for i, name in enumerate(["mix-a", "mix-b", "mix-d"]):
        write_run(str(base / name), MIXTURES[name], seed=i)
    report = compare_runs([str(base)])
    assert [r.run.name for r in report.rows] == ["mix-d", "mix-b", "mix-a"]
    assert (base / "compare" / "report.html").is_file()
    # Three runs for three sources: the recommendation refuses to be trusted.
    assert not report.recommendation.trusted
    assert any("only 3 finished runs" in r for r in report.recommendation.reasons)


# ----------------------------------------------------------------------------- the real browser
class Dom(HTMLParser):
    """Rows of #leaderboard and the body's attributes, from Chromium's dumped DOM."""

    def __init__(self):
        super().__init__()
        self.body: dict = {}
        self.rows: list[dict] = []
        self.imgs: list[dict] = []
        self._in_board = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.body = a
        elif tag == "table":
            self._in_board = a.get("id") == "leaderboard"
        elif tag == "tr" and self._in_board and "data-run" in a:
            self.rows.append(a)
        elif tag == "img":
            self.imgs.append(a)


def test_html_report_renders_in_headless_chromium(sweep, tmp_path):
    browser = find_chromium()
    if browser is None:
        pytest.skip("Chromium not found (scripts/install.sh installs Debian's `chromium` when run as root)")
    report = compare_runs([sweep])
    page = tmp_path / "report.html"
    page.write_bytes(storage.read_bytes(f"{report.output_uri}/report.html"))
    html = page.read_text()
    # Self-contained: no external asset of any kind.
    assert not re.search(r"""(src|href)\s*=\s*["'](https?:|//|file:)""", html)
    assert html.count('src="data:image/png;base64,') == 2

    proc = chromium(browser, tmp_path / "profile", "--dump-dom", page.as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = Dom()
    dom.feed(proc.stdout)
    # The page's own script ran after load and found both images decoded with a real size.
    assert dom.body.get("data-images-loaded") == "2/2", dom.body
    order = expected_order(lambda w: -true_eval(w))
    assert [r["data-run"] for r in dom.rows] == order + [NO_EVAL]
    assert [r["data-rank"] for r in dom.rows] == [str(i) for i in range(1, 8)] + ["-"]
    assert "The run the data favours: mix-d" in proc.stdout
    # Labels readable and apart, from the boxes Chromium laid out (a wide and a narrow window).
    for width in (1280, 800):
        labels, problems = layout_problems(browser, html, tmp_path, width)
        assert labels > 50 and problems == [], (width, problems)
    # The check sees what it must: headings pulled onto the text below them; fonts too small to read.
    _, broken = layout_problems(browser, html.replace("</style>", "h2{margin-bottom:-2em}</style>"), tmp_path)
    assert any(p.startswith("overlap:") for p in broken), broken
    _, broken = layout_problems(browser, html.replace("</style>", "td{font-size:9px}</style>"), tmp_path)
    assert any(p.startswith("font 9px") for p in broken), broken

    shot = tmp_path / "shot.png"
    proc = chromium(browser, tmp_path / "profile2", f"--screenshot={shot}", "--window-size=1280,2400", page.as_uri())
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3]
    assert pixels.shape[0] >= 2000 and pixels.shape[1] >= 1200
    # Not blank: many distinct colours (text, table shading, the plots' lines).
    assert len(np.unique((pixels.reshape(-1, 3) * 255).astype(np.uint8), axis=0)) > 50


def test_recommender_options_and_a_confirmation_run_by_name(sweep, s3_bucket, capsys):
    from trainkit.cli import main

    out = f"{s3_bucket}/reports/options"
    assert (
        main(["compare", sweep, "--output", out, "--model", "linear", "--max-distance", "1", "--target", "mix-a"]) == 0
    )
    doc = storage.read_json(f"{out}/report.json")
    rec = doc["recommendation"]
    assert rec["model"] == "linear" and [c["model"] for c in rec["crossValidation"]] == ["linear"]
    assert rec["maxDistance"] == 1.0 and rec["runsUsed"] == 6  # mix-a is the target, not a proxy
    conf = doc["confirmation"]
    order = expected_order(lambda w: -true_eval(w))
    assert conf["run"] == "mix-a" and "mix-a" not in [r["run"] for r in doc["leaderboard"]]
    assert conf["value"] == pytest.approx(true_eval(MIXTURES["mix-a"]), abs=1e-9)
    others = [true_eval(MIXTURES[n]) for n in order if n != "mix-a"]
    assert conf["rankAmongProxies"] == 1 + sum(v > conf["value"] for v in others) and conf["proxies"] == 6
    assert "Confirmation run mix-a" in capsys.readouterr().out
    for args, needle in (
        (["--max-distance", "0"], "--max-distance 0.0: must be in (0, 1]"),
        (["--target", "nope"], "--target nope: no such run"),
    ):
        assert main(["compare", sweep, "--output", f"{s3_bucket}/reports/bad", *args]) == 1
        assert needle in capsys.readouterr().err
