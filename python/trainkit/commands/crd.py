"""`trainkit crd`: print the CustomResourceDefinitions generated from trainkit.spec."""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("crd", help="print the generated CRDs (YAML)")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p.add_argument("--write-dir", metavar="DIR", help="write one <plural>.yaml per CRD into DIR (the chart's crds/)")
    p.add_argument("--reference", action="store_true", help="print the field reference (docs/spec.md) instead")
    p.set_defaults(func=run)


def run(args) -> int:
    from trainkit.spec.crd import all_crds, crd_files, render_yaml

    if args.write_dir:
        from pathlib import Path

        from trainkit.storage import write_text_atomic

        for name, text in crd_files().items():
            write_text_atomic(Path(args.write_dir) / name, text)
        return 0

    if args.reference:
        from trainkit.spec.reference import render_spec_reference

        text = render_spec_reference()
    else:
        text = render_yaml(all_crds())
    if args.output:
        from trainkit.storage import write_text_atomic

        write_text_atomic(args.output, text)
    else:
        sys.stdout.write(text)
    return 0
