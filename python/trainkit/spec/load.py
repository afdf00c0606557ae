"""Reading run.yaml files and turning validation failures into `file: field.path: message` lines."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from trainkit.spec.models import CREDENTIAL_WORDS, TrainingRun, TrainingRunSpec
from trainkit.spec.plan import Plan, PlanError, derive_plan


# Bounds on what a spec file may cost to read: a 600-byte YAML alias bomb expands to gigabytes when
# validated or printed; a spec is a few KB.
MAX_SPEC_BYTES = 1 << 20
MAX_YAML_ALIASES = 100
MAX_YAML_NODES = 100_000  # nodes after expanding every alias
MAX_SHOWN = 80  # characters of a bad value echoed in a message
MAX_ISSUES = 50


def shown(value: Any) -> str:
    """A bad value as echoed in an error message: its repr, bounded."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


class _BoundedLoader(yaml.SafeLoader):
    """safe_load that refuses documents whose aliases would expand beyond MAX_YAML_NODES (or use more than
    MAX_YAML_ALIASES aliases) before anything walks the expanded tree."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_YAML_ALIASES:
                raise yaml.YAMLError(f"more than {MAX_YAML_ALIASES} aliases (*name): refused (a YAML alias bomb?)")
        return super().compose_node(parent, index)

    def compose_document(self):
        node = super().compose_document()
        expanded_size(node)
        return node


def expanded_size(root: yaml.Node) -> int:
    """Nodes in the tree once every alias is expanded (shared nodes counted each time), computed per distinct
    node; YAMLError past MAX_YAML_NODES."""
    sizes: dict[int, int] = {}
    entered: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in sizes:
            continue
        if not done:
            # Entered and not finished: only a node that contains itself comes back here (`&a [*a]`).
            if id(node) in entered:
                raise yaml.YAMLError("an alias refers to a node that contains it (a recursive alias): refused")
            entered.add(id(node))
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        if not done:
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
            continue
        total = 1 + sum(sizes.get(id(c), 1) for c in children)
        if total > MAX_YAML_NODES:
            raise yaml.YAMLError(
                f"the document expands to more than {MAX_YAML_NODES} nodes: refused (a YAML alias bomb?)"
            )
        sizes[id(node)] = total
    return sizes[id(root)]


@dataclass(frozen=True)
class SpecIssue:
    path: str  # dotted field path, e.g. spec.data.sources[1].weight
    message: str

    def render(self, source: str) -> str:
        return f"{source}: {self.path}: {self.message}" if self.path else f"{source}: {self.message}"


class SpecError(ValueError):
    def __init__(self, source: str, issues: list[SpecIssue]):
        self.source = source
        self.issues = issues
        more = len(issues) - MAX_ISSUES
        lines = [i.render(source)[:1000] for i in issues[:MAX_ISSUES]]
        super().__init__("\n".join(lines + ([f"{source}: and {more} more problem(s)"] if more > 0 else [])))


def field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def issues_from(error: ValidationError, prefix: tuple = ()) -> list[SpecIssue]:
    issues = []
    for e in error.errors(include_url=False):
        loc = prefix + tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            key = str(loc[-1]) if loc else ""
            msg = (
                "credentials must not be written in the spec; put them in a Secret and name it in "
                "spec.storage.credentialsSecret"
                if CREDENTIAL_WORDS.search(key)
                else "unknown field (check the spelling; see `trainkit crd` for the schema)"
            )
        elif e["type"] in ("float_type", "int_type") and isinstance(e.get("input"), str):
            msg = f"{msg}, got the string {shown(e['input'])}"
            try:
                float(e["input"])
                msg += " (YAML reads an exponent without a dot, like 5e-4, as a string: write 5.0e-4)"
            except ValueError:
                pass
        elif e["type"] == "literal_error":
            msg = f"{msg} (got {shown(e['input'])})"
        issues.append(SpecIssue(field_path(loc), msg))
    return issues


def parse_run(document: Any, source: str = "<spec>") -> TrainingRun:
    """Validate one TrainingRun document; raise SpecError listing every problem."""
    if not isinstance(document, dict):
        raise SpecError(source, [SpecIssue("", f"expected a TrainingRun mapping, got {type(document).__name__}")])
    try:
        run = TrainingRun.model_validate(document)
    except ValidationError as e:
        raise SpecError(source, issues_from(e)) from None
    try:
        derive_plan(run.spec)
    except PlanError as e:
        raise SpecError(source, [SpecIssue("spec", str(e))]) from None
    return run


def parse_spec(spec: Any, source: str = "<spec>") -> tuple[TrainingRunSpec, Plan]:
    """Validate a bare `spec:` mapping, as the operator receives it from the API server."""
    try:
        parsed = TrainingRunSpec.model_validate(spec)
    except ValidationError as e:
        raise SpecError(source, issues_from(e, ("spec",))) from None
    try:
        return parsed, derive_plan(parsed)
    except PlanError as e:
        raise SpecError(source, [SpecIssue("spec", str(e))]) from None


def read_documents(path: str | Path) -> list[Any]:
    """All documents of a YAML (or JSON) file, empty ones dropped; SpecError on unreadable or malformed files."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise SpecError(
                str(path), [SpecIssue("", f"the file has {size} bytes; a spec may have at most {MAX_SPEC_BYTES}")]
            )
        text = p.read_text()
    except UnicodeDecodeError as e:
        raise SpecError(str(path), [SpecIssue("", f"not UTF-8 text ({str(e)[:200]})")]) from None
    except OSError as e:
        raise SpecError(str(path), [SpecIssue("", f"cannot read file: {e.strerror or e}")]) from None
    if text.lstrip().startswith("{"):
        # JSON, e.g. the spec.json the operator mounts. Not through YAML: YAML 1.1 reads JSON's 1e-08 as a string.
        try:
            return [json.loads(text)]
        except ValueError as e:
            raise SpecError(str(path), [SpecIssue("", f"invalid JSON: {str(e)[:300]}")]) from None
        except RecursionError:
            raise SpecError(str(path), [SpecIssue("", "invalid JSON: nested too deeply")]) from None
    try:
        docs = [d for d in yaml.load_all(text, Loader=_BoundedLoader) if d is not None]  # a SafeLoader subclass
    except yaml.YAMLError as e:
        raise SpecError(str(path), [SpecIssue("", f"invalid YAML: {str(e)[:300]}")]) from None
    except RecursionError:
        raise SpecError(str(path), [SpecIssue("", "invalid YAML: nested too deeply")]) from None
    if not docs:
        raise SpecError(str(path), [SpecIssue("", "file holds no YAML document")])
    return docs


def parse_sweep(document: Any, source: str = "<spec>"):
    """Validate a TrainingSweep and every TrainingRun it expands to; raise SpecError listing every problem."""
    from trainkit.spec.search import confirmation_run
    from trainkit.spec.sweep import TrainingSweep, expand_sweep

    try:
        sweep = TrainingSweep.model_validate(document)
    except ValidationError as e:
        raise SpecError(source, issues_from(e)) from None
    issues = []
    names = [s.name for s in sweep.spec.template.data.sources]
    # A natural prior's draws need the sources' token counts (their index.json); any counts give runs of the
    # same shape to validate. The confirmation run is validated on an even mixture.
    runs = expand_sweep(sweep, {n: 1 for n in names})
    if sweep.spec.confirm is not None:
        runs.append(confirmation_run(sweep, {n: 1.0 / len(names) for n in names}))
    for run in runs:
        try:
            parse_run(run, source)
        except SpecError as e:
            name = run["metadata"]["name"]
            issues += [SpecIssue(f"run {name}: {x.path}" if x.path else f"run {name}", x.message) for x in e.issues]
    if issues:
        raise SpecError(source, issues)
    return sweep


def parse_data(document: Any, source: str = "<spec>"):
    """Validate a TrainingData; raise SpecError listing every problem."""
    from trainkit.spec.data import TrainingData

    try:
        return TrainingData.model_validate(document)
    except ValidationError as e:
        raise SpecError(source, issues_from(e)) from None


PARSERS = {"TrainingRun": parse_run, "TrainingSweep": parse_sweep, "TrainingData": parse_data}


def load_resources(path: str | Path, kinds: tuple[str, ...] = tuple(PARSERS), allow_none: bool = False) -> list:
    """Every document of the given kinds in a file, validated; other kinds (e.g. a Secret) are skipped.
    A document without a kind is read as a TrainingRun (and rejected for its missing kind)."""
    found, issues = [], []
    docs = read_documents(path)
    for i, doc in enumerate(docs):
        kind = doc.get("kind") if isinstance(doc, dict) else None
        if kind is not None and kind not in kinds:
            continue
        try:
            found.append(PARSERS.get(kind or "", parse_run)(doc, str(path)))
        except SpecError as e:
            prefix = f"document {i + 1}: " if len(docs) > 1 else ""
            issues += [SpecIssue(x.path, prefix + x.message) if prefix and not x.path else x for x in e.issues]
    if issues:
        raise SpecError(str(path), issues)
    if not found and not allow_none:
        raise SpecError(str(path), [SpecIssue("kind", f"file holds no {' or '.join(kinds)}")])
    return found


def load_runs(path: str | Path) -> list[TrainingRun]:
    """Every TrainingRun in a file."""
    return load_resources(path, ("TrainingRun",))


def load_sweep(path: str | Path):
    sweeps = load_resources(path, ("TrainingSweep",))
    if len(sweeps) > 1:
        raise SpecError(str(path), [SpecIssue("", f"expected one TrainingSweep, found {len(sweeps)}")])
    return sweeps[0]


def load_run(path: str | Path) -> TrainingRun:
    runs = load_runs(path)
    if len(runs) > 1:
        raise SpecError(str(path), [SpecIssue("", f"expected one TrainingRun, found {len(runs)}")])
    return runs[0]
