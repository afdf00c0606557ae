"""The prepare RayJob entrypoint: `python -m trainkit.jobs.prepare --spec FILE`.

FILE is the TrainingData (JSON or YAML) the operator mounts from a ConfigMap; nothing from it is ever
interpolated into a command line. Tokenizes its inputs into `<output.uri>/<content hash>/` (see
trainkit.spec.data.resolved_uri), keeping prepare-progress.json up to date for the operator, and writes
index.json last. Exit codes: 0 done, 2 invalid spec, 1 the data could not be prepared (the cause is in
prepare-progress.json and on stderr).
"""

from __future__ import annotations

import argparse
import sys

from trainkit.spec.data import TrainingDataSpec, resolved_uri
from trainkit.spec.load import SpecError, SpecIssue, parse_data, read_documents


def load_data_file(path: str) -> TrainingDataSpec:
    docs = read_documents(path)
    if len(docs) != 1:
        raise SpecError(str(path), [SpecIssue("", f"expected one document, found {len(docs)}")])
    return parse_data(docs[0], str(path)).spec


def prepare_data(spec: TrainingDataSpec, log=print) -> dict:
    """Prepare the TrainingData's content at its content-addressed URI; returns index.json's document."""
    from trainkit.data.prepare import DocumentFilter, run_prepare
    from trainkit.storage import StorageOptions

    f = spec.filter
    return run_prepare(
        list(spec.inputs),
        resolved_uri(spec),
        tokenizer_name=spec.tokenizer,
        shard_tokens=spec.shard_tokens,
        options=StorageOptions.from_spec(spec.storage),
        log=log,
        text_column=spec.text_column,
        doc_filter=DocumentFilter(
            min_length=f.min_length, language_field=f.language_field, language=f.language, dedup=f.dedup == "exact"
        ),
        write_progress=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainkit.jobs.prepare", description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, metavar="FILE", help="TrainingData, JSON or YAML")
    args = parser.parse_args(argv)
    try:
        spec = load_data_file(args.spec)
    except SpecError as e:
        print(str(e), file=sys.stderr)
        return 2
    from trainkit.data.prepare import prepare_errors

    try:
        prepare_data(spec, log=lambda line: print(line, flush=True))
    except prepare_errors() as e:
        print(f"prepare: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
