"""`trainkit eval CHECKPOINT_URI`: run lm-evaluation-harness on a checkpoint and write its report."""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint with lm-evaluation-harness; prints the table and file paths")
    p.add_argument(
        "checkpoint", metavar="CHECKPOINT_URI", help="s3://, file:// or local checkpoints/step-XXXXXXXX folder"
    )
    p.add_argument(
        "--tasks",
        nargs="+",
        metavar="TASK[:FEWSHOT]",
        default=["seed-suite"],
        help="lm-eval task/group names, each optionally with a few-shot count; 'seed-suite' = the model card's six (default)",
    )
    p.add_argument(
        "--include-path", metavar="DIR", help="folder (local or s3://) of lm-eval task YAMLs to look tasks up in first"
    )
    p.add_argument("--limit", type=float, help="examples per task: a count (>= 1) or a fraction (< 1); for smoke runs")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument(
        "--output",
        metavar="URI",
        help="the run's output URI (default: the run the checkpoint belongs to); files go to URI/eval/step-XXXXXXXX/",
    )
    p.add_argument("--step", type=int, help="step to file the eval under (default: the checkpoint's)")
    p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--endpoint", help="S3 endpoint URL (default: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL)")
    p.set_defaults(func=run)


def requests_from_args(args):
    """The TaskRequests the command line asks for (pure)."""
    from dataclasses import replace

    from trainkit.eval.suite import parse_task_arg, seed_suite_requests

    out = {}
    for text in args.tasks:
        for r in seed_suite_requests() if text == "seed-suite" else [parse_task_arg(text)]:
            out[r.name] = r
    if args.limit is not None and args.limit <= 0:
        raise ValueError("--limit must be > 0")
    return [replace(r, limit=args.limit, path=args.include_path) for r in out.values()]


def run(args) -> int:
    from trainkit import artifacts
    from trainkit.eval import EvalError, evaluate_checkpoint
    from trainkit.eval.runner import file_uris
    from trainkit.storage import StorageError, StorageOptions, read_bytes

    try:
        requests = requests_from_args(args)
    except ValueError as e:
        print(f"trainkit eval: error: {e}", file=sys.stderr)
        return 2
    output = args.output or artifacts.run_uri_of_checkpoint(args.checkpoint)
    if not output:
        print(
            f"trainkit eval: error: {args.checkpoint} is not under <run>/checkpoints/step-N; give --output URI",
            file=sys.stderr,
        )
        return 2
    from pydantic import ValidationError

    from trainkit.spec.models import EvalSpec

    try:
        spec = EvalSpec.model_validate({"batchSize": args.batch_size})
    except ValidationError as e:
        print(f"trainkit eval: error: --batch-size: {e.errors()[0]['msg']}", file=sys.stderr)
        return 2
    options = StorageOptions(endpoint=args.endpoint)
    try:
        result = evaluate_checkpoint(
            args.checkpoint, spec, output, args.step, options, requests=requests, device=args.device
        )
    except (EvalError, StorageError) as e:
        print(f"trainkit eval: error: {e}", file=sys.stderr)
        return 1
    out_dir = artifacts.eval_dir(output, result["step"])
    print(read_bytes(artifacts.eval_report_uri(output, result["step"]), options).decode())
    print(f"files in {out_dir}:")
    for path in file_uris(out_dir, options):
        print(f"  {path}")
    return 0
