"""`trainkit demo-data OUT`: three small sources of real English text, as parquet with a `text` column.

The same layout as the seed's datasets (`<source>/data/train-XXXXX-of-YYYYY.parquet`), built offline:

    manuals  PDF-like:  the R manuals (Debian `r-doc-pdf`, GPL-2+), one document per PDF page (pypdf)
    web      web-like:  The Debian Administrator's Handbook (Debian `debian-handbook`, GPL-2+ / CC-BY-SA 3.0), one per HTML page
    edu      educational: the Python 3.11 documentation sources (Debian `python3.11-doc`, PSF License), one per page

scripts/install.sh unpacks those three packages into .trainkit/demo-text/root (no root needed).
Where they are missing, every source falls back to text that ships with Python itself (PSF License):
pydoc topics (edu), module docstrings (manuals) and function/class docstrings (web), so the command
always works offline. docs/data.md records the licenses.
"""

from __future__ import annotations

import html
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from trainkit import storage

# Where scripts/install.sh unpacks the Debian doc packages (the repository's .trainkit/, git-ignored).
DEFAULT_TEXT_ROOT = Path(
    os.environ.get("TRAINKIT_DEMO_TEXT", Path(__file__).resolve().parents[3] / ".trainkit" / "demo-text" / "root")
)
MIN_DOC_CHARS = 200  # drop navigation stubs and empty pages


@dataclass(frozen=True)
class DemoSource:
    name: str
    kind: str
    license: str
    origin: str
    documents: list[str]


def _clean(text: str) -> str:
    text = re.sub(r"[ \t\r\f\v]+", " ", text)
    text = re.sub(r"\n\s*\n\s*\n+", "\n\n", text)
    return text.strip()


def _take(docs: Iterator[str], max_chars: int) -> list[str]:
    out, total = [], 0
    for d in docs:
        d = _clean(d)
        if len(d) < MIN_DOC_CHARS:
            continue
        out.append(d)
        total += len(d)
        if total >= max_chars:
            break
    return out


# ------------------------------------------------------------------------------ Debian packages
def _pdf_pages(root: Path) -> Iterator[str]:
    from pypdf import PdfReader

    manuals = root / "usr/share/doc/r-doc-pdf/manual"
    for name in ("R-intro.pdf", "R-FAQ.pdf", "R-data.pdf", "R-admin.pdf", "R-lang.pdf", "R-ints.pdf", "R-exts.pdf"):
        path = manuals / name
        if path.is_file():
            for page in PdfReader(str(path)).pages:
                yield page.extract_text() or ""


def _html_to_text(markup: str) -> str:
    body = re.search(r"<body.*?>(.*)</body>", markup, re.S | re.I)
    markup = body.group(1) if body else markup
    markup = re.sub(r"<(script|style|nav|head)\b.*?</\1>", " ", markup, flags=re.S | re.I)
    markup = re.sub(r"<(br|p|div|h[1-6]|li|tr|pre)\b[^>]*>", "\n", markup, flags=re.I)
    return html.unescape(re.sub(r"<[^>]+>", " ", markup))


def _handbook_pages(root: Path) -> Iterator[str]:
    folder = root / "usr/share/doc/debian-handbook/html/en-US"
    for path in sorted(folder.glob("*.html")):
        yield _html_to_text(path.read_text(errors="replace"))


def _python_doc_pages(root: Path) -> Iterator[str]:
    folder = root / "usr/share/doc/python3.11/html/_sources"
    for sub in ("tutorial", "howto", "faq", "reference", "library"):
        for path in sorted((folder / sub).glob("*.rst.txt")):
            yield path.read_text(errors="replace")


# ------------------------------------------------------------------- fallback: Python's own text
def _pydoc_topics() -> Iterator[str]:
    from pydoc_data.topics import topics

    for key in sorted(topics):
        yield topics[key]


_STDLIB_MODULES = (
    "argparse",
    "asyncio",
    "collections",
    "contextlib",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "email",
    "fractions",
    "functools",
    "heapq",
    "http.client",
    "importlib",
    "inspect",
    "itertools",
    "json",
    "logging",
    "pathlib",
    "pickle",
    "re",
    "shutil",
    "socket",
    "sqlite3",
    "statistics",
    "string",
    "subprocess",
    "tarfile",
    "textwrap",
    "threading",
    "typing",
    "unittest",
    "urllib.parse",
    "uuid",
    "zipfile",
)


def _module_docs() -> Iterator[str]:
    import importlib

    for name in _STDLIB_MODULES:
        doc = importlib.import_module(name).__doc__
        if doc:
            yield doc


def _member_docs() -> Iterator[str]:
    import importlib
    import inspect

    for name in _STDLIB_MODULES:
        module = importlib.import_module(name)
        parts = [
            f"{member}\n{inspect.getdoc(obj)}"
            for member, obj in sorted(vars(module).items())
            if not member.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj)) and inspect.getdoc(obj)
        ]
        if parts:
            yield f"{name}\n\n" + "\n\n".join(parts)


def demo_sources(
    max_chars: int = 1_500_000, root: Path | None = None, log: Callable[[str], None] = print
) -> list[DemoSource]:
    root = root or DEFAULT_TEXT_ROOT
    psf = "PSF License 2.0 (Python's own documentation and docstrings)"
    specs = [
        (
            "manuals",
            "PDF-like",
            _pdf_pages,
            "GPL-2+ (R manuals, Debian r-doc-pdf)",
            "usr/share/doc/r-doc-pdf/manual",
            _module_docs,
        ),
        (
            "web",
            "web-like",
            _handbook_pages,
            "GPL-2+ or CC-BY-SA 3.0 (The Debian Administrator's Handbook, Debian debian-handbook)",
            "usr/share/doc/debian-handbook/html/en-US",
            _member_docs,
        ),
        (
            "edu",
            "educational",
            _python_doc_pages,
            "PSF License 2.0 (Python 3.11 documentation, Debian python3.11-doc)",
            "usr/share/doc/python3.11/html/_sources",
            _pydoc_topics,
        ),
    ]
    out = []
    for name, kind, reader, license_, folder, fallback in specs:
        docs: list[str] = []
        if (root / folder).is_dir():
            docs = _take(reader(root), max_chars)
            origin = str(root / folder)
        if not docs:
            log(f"demo-data: {root / folder} not found; {name} falls back to text shipped with Python")
            docs, license_, origin = _take(fallback(), max_chars), psf, f"python {fallback.__name__.strip('_')}"
        out.append(DemoSource(name, kind, license_, origin, docs))
    return out


def write_parquet_source(source: DemoSource, out_uri: str, files: int = 2) -> list[str]:
    """<out>/<name>/data/train-0000i-of-0000n.parquet, documents split evenly; plus a LICENSE.txt."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    written = []
    n = max(1, min(files, len(source.documents)))
    per = -(-len(source.documents) // n)
    for i in range(n):
        chunk = source.documents[i * per : (i + 1) * per]
        buf = io.BytesIO()
        pq.write_table(pa.table({"text": pa.array(chunk, pa.string())}), buf, row_group_size=256)
        uri = storage.join(out_uri, source.name, "data", f"train-{i:05d}-of-{n:05d}.parquet")
        storage.write_bytes(uri, buf.getvalue())
        written.append(uri)
    storage.write_bytes(
        storage.join(out_uri, source.name, "LICENSE.txt"),
        f"{source.name} ({source.kind}): {source.license}\nfrom {source.origin}\n".encode(),
    )
    return written
