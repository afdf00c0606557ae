"""The RayJob entrypoint: `python -m trainkit.jobs.train --spec FILE`.

FILE is the TrainingRun (or its bare `spec:`) as JSON or YAML, as the operator mounts it from a
ConfigMap; it is never interpolated into a shell line. Connects to the Ray cluster of the job
(RAY_ADDRESS) or starts a local one, checks the run, trains, and exits non-zero with the spec field
named when something is wrong. Exit codes: 0 done, 2 invalid spec, 3 preflight check failed, 1 training failed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from trainkit.spec.load import SpecError, SpecIssue, parse_run, parse_spec, read_documents
from trainkit.spec.models import TrainingRunSpec

DEFAULT_MAX_FAILURES = 3


def load_spec_file(path: str | Path) -> tuple[TrainingRunSpec, str | None]:
    """(spec, run name or None) from a JSON/YAML file holding a TrainingRun or a bare spec."""
    docs = read_documents(path)
    if len(docs) != 1:
        raise SpecError(str(path), [SpecIssue("", f"expected one document, found {len(docs)}")])
    doc = docs[0]
    if isinstance(doc, dict) and "kind" in doc:
        run = parse_run(doc, str(path))
        return run.spec, run.metadata.name
    if isinstance(doc, dict) and "spec" in doc and "data" not in doc:
        doc = doc["spec"]
    spec, _ = parse_spec(doc, str(path))
    return spec, None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainkit.jobs.train", description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, metavar="FILE", help="TrainingRun or bare spec, JSON or YAML")
    parser.add_argument("--name", help="run name (default: metadata.name, else 'trainkit-run')")
    parser.add_argument(
        "--max-failures",
        type=int,
        default=int(os.environ.get("TRAINKIT_MAX_FAILURES", DEFAULT_MAX_FAILURES)),
        help="worker-group restarts from the last checkpoint before giving up (Ray FailureConfig)",
    )
    args = parser.parse_args(argv)
    try:
        spec, name = load_spec_file(args.spec)
    except SpecError as e:
        print(str(e), file=sys.stderr)
        return 2
    from trainkit.train.launch import PreflightError, run_spec

    try:
        result = run_spec(spec, name=args.name or name or "trainkit-run", max_failures=args.max_failures)
    except PreflightError as e:
        print(f"{args.spec}: {e}", file=sys.stderr)
        return 3
    except Exception as e:  # noqa: BLE001 - the job fails with the cause on one line
        print(f"{args.spec}: training failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"final checkpoint: {result.final_checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
