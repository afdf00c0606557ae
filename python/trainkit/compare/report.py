"""The comparison report: leaderboard, plots, the run the data favours and a recommended mixture,
as report.md + PNGs + a self-contained report.html (+ report.json, written last), and a terminal text.

`build_report` renders everything in memory (nothing is written if any input is bad);
`write_report` then writes the files, report.json last as the report's commit marker.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from datetime import datetime, timezone

from trainkit import storage
from trainkit.compare.leaderboard import DEFAULT_METRIC, Metric, Row, favoured, leaderboard, parse_metric
from trainkit.compare.plots import loss_curves_png, weights_scatter_png
from trainkit.compare.recommend import Recommendation, fmt, recommend, sweep_recommender
from trainkit.compare.results import CompareError, RunResult, collect_runs
from trainkit.mixture.prior import Blend, Prior
from trainkit.mixture.models import model_label
from trainkit.mixture.recommend import Settings
from trainkit.spec.ranking import rank_among
from trainkit.storage import StorageOptions
from trainkit.untrusted_text import markdown_code, markdown_text

LOSS_PNG = "loss_curves.png"
WEIGHTS_PNG = "weights_vs_eval.png"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
REPORT_JSON = "report.json"


@dataclass(frozen=True)
class Confirmation:
    """A sweep's confirmation run (the full-scale target trained on the recommended mixture) against its
    proxies: what it measured, what the proxies' model predicted at its mixture, and where each lands
    among the proxies' values. The target is a bigger model trained longer, so its values are on another
    scale than the proxies': the ranks are the comparison that means something (RegMix's premise)."""

    run: RunResult
    value: float | None
    predicted: float | None
    rank_among_proxies: int | None
    predicted_rank: int | None
    proxies: int


@dataclass
class Report:
    metric: Metric
    rows: list[Row]
    recommendation: Recommendation
    sources: list[str]
    tasks: list[str]
    scale: float = 1.0  # eval scores shown x this (100: fractions as percent)
    confirmation: Confirmation | None = None
    files: dict[str, bytes] = field(default_factory=dict)  # name -> content, in write order
    text: str = ""  # for the terminal
    output_uri: str | None = None

    @property
    def favoured(self) -> list[Row]:
        return favoured(self.rows)


# ----------------------------------------------------------------------------------------- pure
def union_sources(results: list[RunResult]) -> list[str]:
    out: list[str] = []
    for r in results:
        out += [s for s in r.weights if s not in out]
    return out


def union_tasks(results: list[RunResult]) -> list[str]:
    return sorted({t for r in results for t in r.eval_tasks})


def eval_scale(results: list[RunResult]) -> float:
    """100 when every eval score is a fraction in [0, 1] (lm-eval's convention), so tables read in
    percent like the model card; 1 when any score is already above 1."""
    values = [v for r in results for v in [r.eval_average, *r.eval_tasks.values()] if v is not None]
    return 100.0 if values and all(0.0 <= v <= 1.0 for v in values) else 1.0


def is_eval_metric(m: Metric) -> bool:
    """Eval scores are shown scaled (percent); losses (training or validation) never are."""
    return m.key.startswith("eval.")


def shown(report: "Report", v: float | None, is_eval: bool = True) -> str:
    return fmt(None if v is None else v * (report.scale if is_eval else 1.0))


def weights_text(r: RunResult) -> str:
    return " / ".join(f"{s} {w:.2f}" for s, w in r.weights.items())


def rank_text(row: Row) -> str:
    return "-" if row.rank is None else (f"{row.rank}=" if row.tied else str(row.rank))


def held_out_column(report: "Report") -> bool:
    """A held-out-loss ranking gets its own column: no other column shows the value runs are ranked by."""
    return report.metric.key.startswith("val.")


def table(report: "Report") -> tuple[list[str], list[list[str]]]:
    """Header and cells of the leaderboard (the same for text, markdown and HTML)."""
    unit = " (%)" if report.scale == 100.0 else ""
    ranked = [report.metric.key] if held_out_column(report) else []
    header = [
        "rank",
        "run",
        "weights",
        *ranked,
        "final loss",
        *(t + unit for t in report.tasks),
        "average" + unit,
        "status",
    ]
    body = []
    for row in report.rows:
        r = row.run
        status = r.status + (f"; {row.note}" if row.note else "")
        body.append(
            [
                rank_text(row),
                r.name,
                weights_text(r),
                *([fmt(row.value)] if ranked else []),
                fmt(r.final_loss),
                *(shown(report, r.eval_tasks.get(t)) for t in report.tasks),
                shown(report, r.eval_average),
                status,
            ]
        )
    return header, body


def favoured_text(report: Report) -> str:
    best = report.favoured
    m = report.metric
    is_eval = is_eval_metric(m)
    if not best:
        return f"No run reports {m.key} yet: there is no run to favour."
    if len(best) > 1:
        return (
            f"The data does not separate {', '.join(b.run.name for b in best)}: they tie on {m.label} "
            f"at {shown(report, best[0].value, is_eval)}."
        )
    b = best[0]
    ranked = [r for r in report.rows if r.rank is not None]
    margin = ""
    if len(ranked) > 1 and b.value is not None and ranked[1].value is not None:
        gap = abs(b.value - ranked[1].value)
        margin = f", ahead of {ranked[1].run.name} by {shown(report, gap, is_eval)}"
    return (
        f"The run the data favours: {b.run.name} ({m.label} {shown(report, b.value, is_eval)}{margin}), "
        f"mixture {weights_text(b.run)}."
    )


def render_text(report: Report) -> str:
    header, body = table(report)
    widths = [max(len(h), *(len(c[i]) for c in body)) if body else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    out = [
        f"Leaderboard by {report.metric.key} ({'higher' if report.metric.higher_is_better else 'lower'} is better)",
        line(header),
        line(["-" * w for w in widths]),
        *(line(c) for c in body),
        "",
        favoured_text(report),
        "",
        *report.recommendation.lines(),
        *(["", *confirmation_lines(report)] if report.confirmation else []),
    ]
    if report.output_uri:
        out += ["", f"Report: {storage.join(report.output_uri, REPORT_HTML)} (and {REPORT_MD}, PNGs, {REPORT_JSON})"]
    return "\n".join(out) + "\n"


def confirmation_lines(report: Report) -> list[str]:
    c = report.confirmation
    if c is None:
        return []
    m = report.metric
    is_eval = is_eval_metric(m)
    out = [f"Confirmation run {c.run.name} ({weights_text(c.run)}): the full-scale target on the recommended mixture"]
    if c.value is None:
        out.append(f"  {m.key}: not measured yet ({c.run.status})")
        return out
    out.append(
        f"  {m.key} realised {shown(report, c.value, is_eval)}, predicted by the proxies' model "
        f"{shown(report, c.predicted, is_eval)} (the target is larger and trained longer: compare ranks, not values)"
    )
    if c.rank_among_proxies is not None:
        placed = (
            f"; the prediction placed its mixture {c.predicted_rank} of {c.proxies + 1}" if c.predicted_rank else ""
        )
        out.append(f"  among the {c.proxies} proxies it ranks {c.rank_among_proxies} of {c.proxies + 1}{placed}")
    return out


def render_markdown(report: Report) -> str:
    header, body = table(report)
    m = report.metric
    out = [
        f"# Mixture comparison: {len(report.rows)} runs",
        "",
        f"Ranked by **{m.key}** ({'higher' if m.higher_is_better else 'lower'} is better). "
        "Runs without the metric are listed last, unranked, with the reason.",
        "",
        "## Leaderboard",
        "",
        "| " + " | ".join(markdown_text(h) for h in header) + " |",
        "|" + "|".join(" --- " for _ in header) + "|",
        *("| " + " | ".join(markdown_text(c) for c in cells) + " |" for cells in body),
        "",
        "## The run the data favours",
        "",
        markdown_text(favoured_text(report)),
        "",
        "## Recommended mixture",
        "",
        *(f"    {x}" for x in report.recommendation.lines()),
        "",
        *(
            ["## Confirmation run", "", *(f"    {x}" for x in confirmation_lines(report)), ""]
            if report.confirmation
            else []
        ),
        "## Loss curves",
        "",
        f"![loss curves]({LOSS_PNG})",
        "",
        "## Eval against each source's weight",
        "",
        f"![metric against weights]({WEIGHTS_PNG})",
        "",
        "## Runs",
        "",
        *(
            f"- {markdown_text(r.run.name)}: `{markdown_code(r.run.uri)}`"
            + (f" ({markdown_text('; '.join(r.run.notes))})" if r.run.notes else "")
            for r in report.rows
        ),
        "",
    ]
    return "\n".join(out)


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1200px;color:#1d1d1f;padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
.scroll{overflow-x:auto}table{border-collapse:collapse;font-size:.9rem}td,th{white-space:nowrap}td.status{white-space:normal;min-width:14rem}th,td{border:1px solid #d0d0d0;padding:.35rem .55rem;text-align:left}
th{background:#f3f4f6}tbody tr:nth-child(even){background:#fafafa}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.best{background:#e8f5e9!important;font-weight:600}tr.unranked{color:#777}
.callout{padding:.8rem 1rem;border-radius:6px;background:#eef6ff;border:1px solid #b6d4fe}
.warn{background:#fff4e5;border-color:#ffc680}.ok{background:#e8f5e9;border-color:#9ed5a1}
img{max-width:100%;height:auto;border:1px solid #eee}code{font-size:.85em}
"""

CHECK_IMAGES = """
function tkCheckImages(){var im=document.images,ok=0;for(var i=0;i<im.length;i++){if(im[i].complete&&im[i].naturalWidth>0){ok++;}}
document.body.setAttribute('data-images-loaded',ok+'/'+im.length);}
window.addEventListener('load',tkCheckImages);
"""


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_html(report: Report, images: dict[str, bytes]) -> str:
    e = html.escape
    header, body = table(report)
    first = 4 if held_out_column(report) else 3  # the numeric columns: from the first loss to the average
    numeric = set(range(3, first + 2 + len(report.tasks)))
    trs = []
    for row, cells in zip(report.rows, body):
        cls = "best" if row.rank == 1 else ("unranked" if row.rank is None else "")
        tds = "".join(
            f'<td class="num">{e(c)}</td>'
            if i in numeric
            else f"<td>{e(c).replace(' / ', '<br>')}</td>"
            if i == 2
            else f'<td class="status">{e(c)}</td>'
            if i == len(cells) - 1
            else f"<td>{e(c)}</td>"
            for i, c in enumerate(cells)
        )
        trs.append(f'<tr class="{cls}" data-rank="{e(rank_text(row))}" data-run="{e(row.run.name)}">{tds}</tr>')
    rec = report.recommendation
    rec_cls = "ok" if rec.trusted else "warn"
    verdict = (
        "Trusted: it ranks held-out runs well, there are enough runs, and it is stable under resampling."
        if rec.trusted
        else "Not trusted: " + "; ".join(rec.reasons)
    )
    rec_rows = ""
    if rec.weights:
        rec_rows = "".join(
            f"<tr><td>{e(s)}</td><td class='num'>{rec.weights[s]:.2f}</td>"
            f"<td class='num'>{('±%.2f' % rec.weights_std[s]) if s in rec.weights_std else '-'}</td>"
            f"<td class='num'>{('%.2f to %.2f' % rec.weights_interval[s]) if s in rec.weights_interval else '-'}</td></tr>"
            for s in rec.sources
        )
        rec_rows = (
            "<table id='recommendation-table'><thead><tr><th>source</th><th>recommended weight</th>"
            "<th>bootstrap std</th><th>bootstrap 5-95%</th></tr></thead><tbody>" + rec_rows + "</tbody></table>"
        )
    rec_lines = "".join(f"<li>{e(x.strip())}</li>" for x in rec.lines()[1:] if not x.strip().startswith("model:"))
    model_rows = "".join(
        f"<tr class='{'chosen' if i == 0 else ''}'><td>{e(model_label(c.model))}</td>"
        f"<td class='num'>{'-' if c.spearman is None else f'{c.spearman:.2f}'}</td>"
        f"<td class='num'>{'-' if not c.interval else f'{c.interval[0]:.2f} to {c.interval[1]:.2f}'}</td>"
        f"<td>{'chosen' if i == 0 else ''}</td></tr>"
        for i, c in enumerate(rec.cv)
    )
    models = (
        "<table id='model-choice'><thead><tr><th>model</th><th>cross-validated Spearman</th><th>bootstrap 5-95%</th>"
        f"<th></th></tr></thead><tbody>{model_rows}</tbody></table>"
        if rec.cv
        else ""
    )
    confirmation = ""
    if report.confirmation is not None:
        confirmation = (
            "<h2>Confirmation run</h2><div class='callout' id='confirmation'>"
            + "<br>".join(e(x.strip()) for x in confirmation_lines(report))
            + "</div>"
        )
    runs = "".join(
        f"<li><b>{e(r.run.name)}</b>: <code>{e(r.run.uri)}</code>"
        + (f" — {e('; '.join(r.run.notes))}" if r.run.notes else "")
        + "</li>"
        for r in report.rows
    )
    m = report.metric
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Mixture comparison: {len(report.rows)} runs</title><style>{CSS}</style></head>
<body data-images-loaded="pending">
<h1>Mixture comparison: {len(report.rows)} runs</h1>
<p>Ranked by <b>{e(m.key)}</b> ({"higher" if m.higher_is_better else "lower"} is better). Runs without the metric are listed last, unranked, with the reason.</p>
<h2>Recommendation</h2>
<div class="callout" id="favoured">{e(favoured_text(report))}</div>
<p></p>
<div class="callout {rec_cls}" id="recommendation"><b>{e(rec.lines()[0])}</b> <span id="trust">{e(verdict)}</span></div>
{rec_rows}
<ul>{rec_lines}</ul>
{models}
{confirmation}
<h2>Leaderboard</h2>
<div class="scroll"><table id="leaderboard"><thead><tr>{"".join(f"<th>{e(h)}</th>" for h in header)}</tr></thead>
<tbody>{"".join(trs)}</tbody></table></div>
<h2>Loss curves</h2>
<img id="loss-curves" alt="loss curves of all runs" src="{_data_uri(images[LOSS_PNG])}">
<h2>{e(weights_ylabel(report))} against each source's weight</h2>
<img id="weights-scatter" alt="metric against each source's weight" src="{_data_uri(images[WEIGHTS_PNG])}">
<h2>Runs</h2>
<ul>{runs}</ul>
<script>{CHECK_IMAGES}</script>
</body></html>
"""


def weights_ylabel(report: Report) -> str:
    """The ranking metric, which the weights plot shows (eval scores in percent when they are fractions)."""
    scaled = is_eval_metric(report.metric) and report.scale == 100.0
    return report.metric.label + (" (%)" if scaled else "")


def report_json(report: Report, files: list[str]) -> dict:
    rec = report.recommendation
    return {
        "rankBy": report.metric.key,
        "higherIsBetter": report.metric.higher_is_better,
        "evalDisplayScale": report.scale,
        "generatedAt": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "favoured": [r.run.name for r in report.favoured],
        "leaderboard": [
            {
                "rank": row.rank,
                "tied": row.tied,
                "value": row.value,
                "note": row.note,
                "run": row.run.name,
                "uri": row.run.uri,
                "weights": row.run.weights,
                "finalLoss": row.run.final_loss,
                "finished": row.run.finished,
                "step": row.run.step,
                "totalSteps": row.run.total_steps,
                "tokens": row.run.tokens,
                "eval": {"step": row.run.eval_step, "average": row.run.eval_average, "tasks": row.run.eval_tasks},
                "notes": list(row.run.notes),
            }
            for row in report.rows
        ],
        "recommendation": {
            "trusted": rec.trusted,
            "reasons": list(rec.reasons),
            "weights": rec.weights,
            "predicted": rec.predicted,
            "predictedInterval": rec.predicted_interval,
            "weightsStd": rec.weights_std,
            "weightsInterval": rec.weights_interval,
            "runsUsed": rec.n_runs,
            "minRuns": rec.min_runs,
            "model": rec.model,
            "crossValidation": [
                {"model": c.model, "spearman": c.spearman, "interval": c.interval, "rmse": c.rmse, "folds": c.folds}
                for c in rec.cv
            ],
            "topK": rec.top_k,
            "candidates": rec.n_candidates,
            "prior": rec.prior,
            "maxDistance": rec.max_distance,
            "nearestRun": rec.nearest_run,
            "nearestDistance": rec.nearest_distance,
            "heldAtBound": rec.held_at_bound,
            "notes": list(rec.notes),
        },
        "confirmation": confirmation_json(report.confirmation),
        "files": files,
    }


def confirmation_json(c: Confirmation | None) -> dict | None:
    if c is None:
        return None
    return {
        "run": c.run.name,
        "uri": c.run.uri,
        "weights": c.run.weights,
        "finished": c.run.finished,
        "value": c.value,
        "predicted": c.predicted,
        "rankAmongProxies": c.rank_among_proxies,
        "predictedRank": c.predicted_rank,
        "proxies": c.proxies,
    }


def split_target(results: list[RunResult], target: str | None) -> tuple[list[RunResult], RunResult | None]:
    """The proxies and the confirmation run named `target` (CompareError naming it when it is not there)."""
    if target is None:
        return results, None
    found = [r for r in results if r.name == target]
    if not found:
        raise CompareError(f"--target {target}: no such run (runs: {', '.join(r.name for r in results)})")
    return [r for r in results if r.name != target], found[0]


def confirmation_of(target: RunResult, rows: list[Row], rec: Recommendation, metric: Metric) -> Confirmation:
    values = [row.value for row in rows if row.rank is not None]
    value = metric.value(target) if target.finished else None
    predicted = rec.predict(target.weights)
    return Confirmation(
        run=target,
        value=value,
        predicted=predicted,
        rank_among_proxies=rank_among(value, values, metric.higher_is_better),
        predicted_rank=rank_among(predicted, values, metric.higher_is_better),
        proxies=len(values),
    )


def build_report(
    results: list[RunResult],
    rank_by: str = DEFAULT_METRIC,
    *,
    target: str | None = None,
    prior: Prior | Blend | None = None,
    settings: Settings | None = None,
) -> Report:
    """Everything in memory: rows, recommendation, PNGs, markdown and HTML. Raises CompareError on
    no runs or an unknown metric, before anything is rendered. `target`: the name of a sweep's
    confirmation run, compared with the proxies instead of ranked among them; `prior` and `settings`:
    the sweep's (candidates come from its prior; None: a Dirichlet fitted to the runs' mixtures)."""
    if not results:
        raise CompareError("no runs to compare")
    metric = parse_metric(rank_by, results)
    results, target_run = split_target(results, target)
    rows = leaderboard(results, metric.key)
    scale = eval_scale(results)
    display = scale if is_eval_metric(metric) else 1.0
    rec = recommend(results, metric.key, prior=prior, settings=settings, display_scale=display)
    sources, tasks = union_sources(results), union_tasks(results)
    report = Report(metric=metric, rows=rows, recommendation=rec, sources=sources, tasks=tasks, scale=scale)
    if target_run is not None:
        report.confirmation = confirmation_of(target_run, rows, rec, metric)
    ylabel = weights_ylabel(report)
    factor = scale if is_eval_metric(metric) else 1.0
    plotted = {r.name: v * factor for r in results if (v := metric.value(r)) is not None}
    images = {
        LOSS_PNG: loss_curves_png([r.run for r in rows], highlight={r.run.name for r in report.favoured}),
        WEIGHTS_PNG: weights_scatter_png(results, sources, plotted, ylabel, recommended=rec.weights),
    }
    report.files = {
        **images,
        REPORT_MD: render_markdown(report).encode(),
        REPORT_HTML: render_html(report, images).encode(),
    }
    report.text = render_text(report)
    return report


# ---------------------------------------------------------------------------------------- I/O
def default_output(run_uris: list[str]) -> str:
    """`<first run's parent>/compare`."""
    first = run_uris[0].rstrip("/")
    if "/" in first.removeprefix("s3://"):
        parent = first.rsplit("/", 1)[0]
    else:  # a run at a bucket's root, or a bare relative folder
        parent = first if first.startswith("s3://") else "."
    return storage.join(parent, "compare")


def write_report(report: Report, output_uri: str, options: StorageOptions | None = None) -> str:
    """Write the PNGs, report.md, report.html, then report.json last. Returns the output URI."""
    output_uri = output_uri.rstrip("/")
    report.output_uri = output_uri
    for name, data in report.files.items():
        storage.write_bytes(storage.join(output_uri, name), data, options)
    storage.write_json(
        storage.join(output_uri, REPORT_JSON), report_json(report, [*report.files, REPORT_JSON]), options
    )
    report.text = render_text(report)
    return output_uri


def compare_runs(
    uris: list[str],
    rank_by: str = DEFAULT_METRIC,
    output: str | None = None,
    options: StorageOptions | None = None,
    *,
    target: str | None = None,
    prior: Prior | Blend | None = None,
    settings: Settings | None = None,
    sweep=None,
    token_counts=None,
) -> Report:
    """The whole comparison: find the runs under `uris` (runs or sweep base URIs), load them, build
    the report and write it to `output` (default `<first run's parent>/compare`). Raises CompareError
    (naming the URI or metric) before writing anything when an input is bad. `sweep`: the TrainingSweep
    the runs came from; its prior, recommender settings and confirmation run are used unless given."""
    results = collect_runs(list(uris), options)
    if sweep is not None:
        sweep_prior, sweep_settings, sweep_target = sweep_recommender(sweep, results, token_counts)
        prior, settings, target = prior or sweep_prior, settings or sweep_settings, target or sweep_target
    report = build_report(results, rank_by, target=target, prior=prior, settings=settings)
    write_report(report, output or default_output([r.uri for r in results]), options)
    return report
