"""Held-out validation loss per source: the metric mixtures are compared by.

Each source's index.json lists a held-out split (`trainkit prepare` routes a hash-chosen fraction of
documents there; they are never in the training shards). A run reads, per source, the first
`eval.validationTokens` tokens of that split as whole rows of seqLength+1 tokens (the same rows at every
step and in every run of a sweep, so losses are comparable across mixtures), and at every eval step and
at the end computes the mean next-token cross-entropy over them, batched, with the rows split across
the training workers and the sums all-reduced.

validation.jsonl (one line per measured step, the format owned by trainkit.artifacts):
  {"step": 200, "tokens": ..., "sources": {"web": {"loss": 3.91, "tokens": 16384}, ...}, "mean": 4.02}
`mean` weighs every source equally (each source's held-out loss counts once, whatever the mixture).
Validation targets (data.validationTargets: prepared sources the run does not train on) are measured the
same way and stored beside the sources under their own names, listed in "targets"; `mean` leaves them
out unless they are marked countInMean (a sweep marks the template sources a mixture leaves out, so
every proxy's mean is over the same sets).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Collection

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from trainkit import artifacts, storage
from trainkit.artifacts import SourceValidation, ValidationLine
from trainkit.data.shards import Piece, ShardIndex, read_index, read_pieces
from trainkit.storage import StorageOptions


# ------------------------------------------------------------------------------- pure decisions
def validation_pieces(index: ShardIndex, width: int, budget_tokens: int) -> list[Piece]:
    """The first rows of `width` tokens of the held-out split, in shard order, until the rows' predicted
    tokens (width - 1 each) reach `budget_tokens`. [] when the split is empty or the budget is 0."""
    if budget_tokens <= 0:
        return []
    wanted = math.ceil(budget_tokens / (width - 1))
    pieces: list[Piece] = []
    for i, entry in enumerate(index.validation):
        take = min(entry.tokens // width, wanted)
        if take:
            pieces.append(Piece(i, 0, take))
            wanted -= take
        if wanted == 0:
            break
    return pieces


def rank_slice(rows: int, rank: int, world: int, batch: int) -> tuple[list[int], int]:
    """Row indices of this rank (every world-th row) and the number of forward passes every rank makes:
    the same on all ranks (FSDP gathers parameters inside forward, so all ranks must call it alike)."""
    mine = list(range(rank, rows, world))
    passes = math.ceil(math.ceil(rows / world) / batch) if rows else 0
    return mine, passes


def summarise(
    step: int, tokens: int, sums: dict[str, tuple[float, int]], targets: Collection[str] = (),
    in_mean: Collection[str] | None = None,
) -> ValidationLine:  # fmt: skip
    """The validation.jsonl line from each held-out set's (summed token loss, token count). `targets`: the
    names among them the run does not train on (listed in the line); `in_mean`: the names `mean` counts
    (default: every set that is not a target)."""
    sources = {
        name: SourceValidation(loss=total / count, tokens=count) for name, (total, count) in sums.items() if count
    }
    line = ValidationLine(step=step, tokens=tokens, sources=sources)
    measured_targets = sorted(n for n in targets if n in sources)
    if measured_targets:
        line["targets"] = measured_targets
    counted = [v["loss"] for n, v in sources.items() if (n not in targets if in_mean is None else n in in_mean)]
    if counted:
        line["mean"] = sum(counted) / len(counted)
    return line


def mean_sets(spec_data) -> list[str]:
    """The held-out sets validation `mean` counts: every source, and the targets marked countInMean (pure)."""
    return [s.name for s in spec_data.sources] + [t.name for t in spec_data.validation_targets if t.count_in_mean]


# ------------------------------------------------------------------------------------ I/O shells
def read_validation_rows(
    sources: list[tuple[str, str]], seq_length: int, budget_tokens: int, vocab_size: int, options: StorageOptions | None
) -> dict[str, np.ndarray]:
    """{source: rows [n, seqLength+1]} of each (name, uri)'s held-out split; a source without one is left out."""
    out: dict[str, np.ndarray] = {}
    width = seq_length + 1
    for name, uri in sources:
        index = read_index(uri, options)
        pieces = validation_pieces(index, width, budget_tokens)
        if pieces:
            out[name] = np.concatenate(read_pieces(index.validation_index(), pieces, width, vocab_size, options))
    return out


@torch.no_grad()
def validation_sums(
    model: torch.nn.Module,
    rows_by_source: dict[str, np.ndarray],
    *,
    device: torch.device,
    batch_size: int,
    rank: int = 0,
    world: int = 1,
    autocast=None,
) -> dict[str, tuple[float, int]]:
    """{source: (sum of token cross-entropies, tokens)} over every worker's rows (all-reduced)."""
    was_training = model.training
    model.eval()
    names = sorted(rows_by_source)
    totals = torch.zeros(2 * len(names), dtype=torch.float64, device=device)
    try:
        for k, name in enumerate(names):
            rows = rows_by_source[name]
            mine, passes = rank_slice(len(rows), rank, world, batch_size)
            for p in range(passes):
                chunk = mine[p * batch_size : (p + 1) * batch_size]
                weight = 1.0 if chunk else 0.0
                chunk = chunk or [0]  # a rank short of rows still joins the forward pass, counting nothing
                x = torch.as_tensor(rows[chunk].astype(np.int64), device=device)
                with autocast or contextlib.nullcontext():
                    logits = model(input_ids=x[:, :-1], use_cache=False).logits
                loss = F.cross_entropy(
                    logits.float().reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1), reduction="sum"
                )
                totals[2 * k] += weight * loss.double()
                totals[2 * k + 1] += weight * x[:, 1:].numel()
    finally:
        model.train(was_training)
    if world > 1 and dist.is_initialized():
        dist.all_reduce(totals)
    values = totals.tolist()
    return {name: (values[2 * k], int(values[2 * k + 1])) for k, name in enumerate(names)}


class ValidationWriter:
    """Rank 0's writer of validation.jsonl (rewritten whole: object stores cannot append)."""

    def __init__(self, output_uri: str, options: StorageOptions | None = None):
        self.output_uri, self.options = output_uri, options
        self.lines: list[ValidationLine] = []

    def resume(self, step: int) -> None:
        self.lines = [v for v in artifacts.read_validation(self.output_uri, self.options) if v["step"] <= step]

    def write(self, line: ValidationLine) -> None:
        self.lines = [v for v in self.lines if v["step"] != line["step"]] + [line]
        body = "".join(json.dumps(v, sort_keys=True) + "\n" for v in self.lines).encode()
        storage.write_bytes(artifacts.run_file(self.output_uri, artifacts.VALIDATION), body, self.options)
