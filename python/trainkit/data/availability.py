"""Does each source hold what the plan needs? Checked by `trainkit validate --explain` before a run
starts, when the shards are reachable (an unreachable source is reported, not an error: the cluster may
see storage this machine cannot)."""

from __future__ import annotations

from dataclasses import dataclass

from trainkit.data.loader import sequences_needed
from trainkit.data.shards import DataError, read_index
from trainkit.storage import StorageError, StorageOptions


@dataclass(frozen=True)
class SourceCheck:
    name: str
    needed: int  # sequences the plan takes from it (upper bound, see sequences_needed)
    available: int | None  # complete sequences in its shards; None when unreachable
    problem: str = ""  # why it cannot be used as is ("" when fine)


def check_sources(spec, plan, options: StorageOptions | None = None) -> list[SourceCheck]:
    from trainkit.data.tokenizer import load_tokenizer

    d = spec.data
    options = options if options is not None else StorageOptions.from_spec(spec.storage)
    needed = sequences_needed([s.weight for s in d.sources], plan.total_sequences)
    fingerprint = load_tokenizer(spec.tokenizer).fingerprint
    checks = []
    unreachable = ""
    for source, need in zip(d.sources, needed):
        if source.uri is None:  # names a TrainingData: resolved by the operator when the run starts
            checks.append(SourceCheck(source.name, need, None, f"not checked: TrainingData {source.dataset!r}"))
            continue
        if unreachable and source.uri.startswith("s3://"):
            checks.append(SourceCheck(source.name, need, None, f"not checked: {unreachable}"))
            continue
        try:
            # One attempt (botocore still retries connects): validate must answer in seconds offline.
            index = read_index(source.uri, options, attempts=1)
        except StorageError as e:
            unreachable = "object storage not reachable from here"
            checks.append(SourceCheck(source.name, need, None, f"not reachable: {e}"))
            continue
        except (DataError, OSError) as e:
            checks.append(SourceCheck(source.name, need, None, f"not reachable: {e}"))
            continue
        available = sum(index.sequences_per_shard(d.seq_length + 1))
        problem = ""
        if index.fingerprint != fingerprint:
            problem = f"tokenized with {index.tokenizer_name} ({index.fingerprint[:19]}...), not the run's tokenizer"
        elif need > available and d.when_exhausted == "fail":
            problem = f"exhausted: needs {need:,} sequences, shards hold {available:,} (whenExhausted: fail)"
        checks.append(SourceCheck(source.name, need, available, problem))
    return checks


def render(checks: list[SourceCheck], when_exhausted: str) -> tuple[str, bool]:
    """Lines for --explain, and whether the run would fail before training."""
    lines = ["  data             (sequences needed / held by the prepared shards)"]
    failed = False
    width = max(len(c.name) for c in checks)
    for c in checks:
        if c.available is None:
            lines.append(f"    {c.name:<{width}}  {c.needed:,} needed; {c.problem}")
            continue
        status = "ok"
        if c.problem:
            status, failed = f"ERROR {c.problem}", True
        elif c.needed > c.available:
            status = f"repeats: {c.needed / max(c.available, 1):.1f} passes (whenExhausted: {when_exhausted})"
        lines.append(f"    {c.name:<{width}}  {c.needed:,} / {c.available:,}  {status}")
    return "\n".join(lines), failed


def explain_data(spec, plan) -> tuple[str, bool]:
    return render(check_sources(spec, plan), spec.data.when_exhausted)
