"""The pack RayJob's entrypoint: `python -m trainkit.jobs.pack --spec FILE`.

FILE is the pack document (`trainkit.spec.packing.TrainingPack`, JSON) the operator mounts from the pack's
ConfigMap; nothing from it is ever put on a command line. Every member run trains at once on the job's Ray
cluster, each with its own output, and each member's outcome is written under its own output
(`trainkit.train.pack`). Exit codes: 0 every member succeeded, 1 at least one failed, 2 invalid pack document.
"""

from __future__ import annotations

import argparse
import os
import sys

from pydantic import ValidationError

from trainkit.jobs.train import DEFAULT_MAX_FAILURES
from trainkit.spec.load import SpecError, SpecIssue, issues_from, read_documents
from trainkit.spec.packing import TrainingPack


def load_pack_file(path: str) -> TrainingPack:
    docs = read_documents(path)
    if len(docs) != 1:
        raise SpecError(str(path), [SpecIssue("", f"expected one document, found {len(docs)}")])
    try:
        return TrainingPack.model_validate(docs[0])
    except ValidationError as e:
        raise SpecError(str(path), issues_from(e)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainkit.jobs.pack", description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, metavar="FILE", help="the pack document (JSON)")
    parser.add_argument(
        "--max-failures",
        type=int,
        default=int(os.environ.get("TRAINKIT_MAX_FAILURES", DEFAULT_MAX_FAILURES)),
        help="worker-group restarts of each member from its last checkpoint before it fails",
    )
    args = parser.parse_args(argv)
    try:
        pack = load_pack_file(args.spec)
    except SpecError as e:
        print(str(e), file=sys.stderr)
        return 2
    from trainkit.train.pack import pack_exit_code, print_summary, run_pack

    outcomes = run_pack(pack, max_failures=args.max_failures, log=lambda line: print(line, flush=True))
    print_summary(outcomes)
    return pack_exit_code(outcomes)


if __name__ == "__main__":
    sys.exit(main())
