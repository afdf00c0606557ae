"""`trainkit report RUN_URI`: print a run's eval table (latest or --step) and its files; score vs step."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any


def register(sub) -> None:
    p = sub.add_parser("report", help="print a run's eval report (latest or --step), file paths, and scores by step")
    p.add_argument("run", metavar="RUN_URI", help="the run's output URI (s3://, file:// or a local folder)")
    p.add_argument("--step", type=int, help="which eval to print (default: the latest)")
    p.add_argument("--endpoint", help="S3 endpoint URL (default: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL)")
    p.set_defaults(func=run)


def history_table(history: Sequence[Mapping[str, Any]]) -> str:
    """Markdown: one row per eval (step, average, each task's headline), percent (pure)."""
    tasks = list(dict.fromkeys(t for s in history for t in s["tasks"]))
    lines = ["| Step | Average | " + " | ".join(tasks) + " |", "|" + "---|" * (len(tasks) + 2)]
    for s in history:
        cells = [f"{100 * s['tasks'][t]:.2f}" if t in s["tasks"] else "—" for t in tasks]
        lines.append(f"| {s['step']} | {100 * s['average']:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run(args) -> int:
    from trainkit import artifacts, storage
    from trainkit.eval import plots
    from trainkit.eval.runner import file_uris

    options = storage.StorageOptions(endpoint=args.endpoint)
    try:
        history = artifacts.read_eval_summaries(args.run, options)
        if not history:
            print(
                f"trainkit report: error: no eval under {artifacts.eval_root(args.run)} (no readable eval/step-*/summary.json)",
                file=sys.stderr,
            )
            return 1
        steps = [s["step"] for s in history]
        step = steps[-1] if args.step is None else args.step
        if step not in steps:
            print(
                f"trainkit report: error: no eval at step {step} under {args.run}; evals at steps {steps}",
                file=sys.stderr,
            )
            return 1
        out_dir = artifacts.eval_dir(args.run, step)
        print(storage.read_bytes(artifacts.eval_report_uri(args.run, step), options).decode())
        print(f"files in {out_dir}:")
        for path in file_uris(out_dir, options):
            print(f"  {path}")
        if len(history) >= 2:
            print("\nscores by step (percent):\n")
            print(history_table(history))
            plot_uri = artifacts.scores_by_step_uri(args.run)
            storage.write_bytes(plot_uri, plots.scores_by_step(history), options)
            print(f"plot: {plot_uri}")
    except (storage.StorageError, FileNotFoundError, ValueError, KeyError) as e:
        print(f"trainkit report: error: {args.run}: {e}", file=sys.stderr)
        return 1
    return 0
