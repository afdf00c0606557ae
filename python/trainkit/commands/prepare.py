"""`trainkit prepare INPUT OUTPUT`: tokenize text (parquet `text` column or jsonl) into token shards."""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("prepare", help="tokenize parquet/jsonl text into token shards + index.json (a Ray Data job)")
    p.add_argument(
        "input",
        metavar="INPUT",
        help="s3://, file://, hf://datasets/ORG/NAME[@revision][/path] or a local folder/file of text "
        "(data/train-*.parquet, *.parquet, *.jsonl[.gz|.zst]); the hub's token is HF_TOKEN, its address HF_ENDPOINT",
    )
    p.add_argument("output", metavar="OUTPUT", help="where the source's shards and index.json go")
    p.add_argument(
        "--tokenizer", default="gpt2", help="'gpt2' or a folder with vocab.json + merges.txt (default: gpt2)"
    )
    p.add_argument("--shard-tokens", type=int, default=None, help="tokens per shard (default: 16,777,216)")
    p.add_argument(
        "--holdout-fraction",
        type=float,
        default=None,
        help="fraction of documents (chosen by a hash of their text) held out for validation loss, never "
        "trained on (default: 0.02; 0 holds out none)",
    )
    p.add_argument("--endpoint", default=None, help="S3 endpoint URL (default: AWS_ENDPOINT_URL); never credentials")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for a local Ray (ignored when joining a cluster)")
    p.set_defaults(func=run)


def run(args) -> int:
    from trainkit.data.prepare import (
        DEFAULT_HOLDOUT_FRACTION,
        DEFAULT_SHARD_TOKENS,
        prepare_errors,
        run_prepare,
    )
    from trainkit.storage import StorageOptions

    from trainkit.spec.data import check_input

    try:
        check_input(args.input, "INPUT")
    except ValueError as e:
        print(f"trainkit prepare: error: {e}", file=sys.stderr)
        return 2
    holdout = DEFAULT_HOLDOUT_FRACTION if args.holdout_fraction is None else args.holdout_fraction
    try:
        run_prepare(
            args.input,
            args.output,
            tokenizer_name=args.tokenizer,
            shard_tokens=args.shard_tokens or DEFAULT_SHARD_TOKENS,
            holdout_fraction=holdout,
            options=StorageOptions(endpoint=args.endpoint),
            log=lambda line: print(line, flush=True),
            num_cpus=args.num_cpus,
        )
    except prepare_errors() as e:
        print(f"trainkit prepare: error: {e}", file=sys.stderr)
        return 1
    return 0
