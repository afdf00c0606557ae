"""`trainkit demo-data OUT`: three small real-English sources as parquet (`<name>/data/train-*.parquet`)."""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("demo-data", help="write three small real-English text sources (manuals, web, edu) as parquet")
    p.add_argument("out", metavar="OUT", help="s3://, file:// or local folder")
    p.add_argument("--max-chars", type=int, default=1_500_000, help="characters of text per source (default 1.5M)")
    p.add_argument("--files", type=int, default=2, help="parquet files per source (default 2)")
    p.add_argument(
        "--text-root", default=None, help="folder holding the unpacked Debian doc packages (see scripts/install.sh)"
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from trainkit.data.demo import demo_sources, write_parquet_source
    from trainkit.storage import StorageError

    if args.max_chars < 1 or args.files < 1:
        print("trainkit demo-data: error: --max-chars and --files must be >= 1", file=sys.stderr)
        return 2
    try:
        for source in demo_sources(args.max_chars, Path(args.text_root) if args.text_root else None):
            files = write_parquet_source(source, args.out, args.files)
            chars = sum(len(d) for d in source.documents)
            print(
                f"{source.name:8} {source.kind:12} {len(source.documents):5} docs {chars:>10,} chars  {files[0].rsplit('/data/', 1)[0]}  [{source.license}]"
            )
    except (StorageError, FileNotFoundError) as e:
        print(f"trainkit demo-data: error: {e}", file=sys.stderr)
        return 1
    return 0
