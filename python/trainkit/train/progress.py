"""progress.json and metrics.jsonl under the output URI (rank 0 writes), plus throughput and MFU.

progress.json: {step, totalSteps, tokens, loss, tokensPerSecond, mfu, etaSeconds, updatedAt, validation}
(validation: the latest held-out loss, {step, mean, sources: {name: loss}}; the operator
reads it for `kubectl get trainingruns`). metrics.jsonl: one line per log step (step, loss, lr, gradNorm,
tokensPerSecond, mfu, sourceSequences, sourceTokens, streamDigest). Object stores cannot append, so the
writer keeps the lines and rewrites the (small) file; on resume it drops lines past the resumed step,
so no step appears twice.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import time

from trainkit import artifacts, storage
from trainkit.artifacts import METRICS, PROGRESS, MetricsLine, ProgressDoc, ValidationLine
from trainkit.storage import StorageOptions

# Dense peak FLOP/s per device, by (name fragment, precision). MFU is reported against these.
PEAK_FLOPS = (
    ("H200", {"bf16": 989e12, "fp16": 989e12, "fp32": 494e12}),  # fp32 = TF32 dense
    ("H100", {"bf16": 989e12, "fp16": 989e12, "fp32": 494e12}),
    ("A100", {"bf16": 312e12, "fp16": 312e12, "fp32": 156e12}),
    ("L40S", {"bf16": 362e12, "fp16": 362e12, "fp32": 183e12}),
    ("L4", {"bf16": 121e12, "fp16": 121e12, "fp32": 60e12}),
    ("A10", {"bf16": 125e12, "fp16": 125e12, "fp32": 62.5e12}),
)


def peak_flops(device_name: str | None, precision: str) -> float | None:
    """Peak FLOP/s of one accelerator, or None when unknown (CPU, unlisted GPU): MFU is then not reported."""
    if not device_name:
        return None
    for fragment, table in PEAK_FLOPS:
        if fragment in device_name:
            return table.get(precision)
    return None


def mfu(tokens_per_second: float, flops_per_token: float, peak_per_device: float | None, devices: int) -> float | None:
    if not peak_per_device or tokens_per_second <= 0:
        return None
    return tokens_per_second * flops_per_token / (peak_per_device * devices)


def eta_seconds(step: int, total_steps: int, tokens_per_step: int, tokens_per_second: float) -> float | None:
    if tokens_per_second <= 0:
        return None
    return (total_steps - step) * tokens_per_step / tokens_per_second


def progress_record(metrics: MetricsLine, total_steps: int, tokens_per_step: int) -> ProgressDoc:
    """progress.json's content from one metrics line."""
    step, tps = metrics["step"], metrics["tokensPerSecond"]
    return ProgressDoc(
        step=step,
        totalSteps=total_steps,
        tokens=step * tokens_per_step,
        loss=metrics["loss"],
        tokensPerSecond=tps,
        mfu=metrics.get("mfu"),
        etaSeconds=eta_seconds(step, total_steps, tokens_per_step, tps),
        updatedAt=artifacts.now_iso(),
    )


def validation_summary(line: ValidationLine) -> dict:
    """progress.json's `validation`: {step, mean, sources: {name: loss}} of the latest measurement."""
    out: dict = {"step": line["step"], "sources": {k: v["loss"] for k, v in line.get("sources", {}).items()}}
    if "mean" in line:
        out["mean"] = line["mean"]
    return out


def keep_until(lines: list[MetricsLine], step: int) -> list[MetricsLine]:
    """Metrics lines up to and including `step` (the resumed checkpoint): later ones are redone."""
    return [m for m in lines if m.get("step", 0) <= step]


class ProgressWriter:
    """Rank 0's writer of progress.json + metrics.jsonl. state: the lines written so far.

    `background=True` (the training loop's): the writes to storage run on a thread of their own, off the
    step loop's path (an object store PUT takes tens of ms, every logEverySteps; the other ranks would
    wait for rank 0 at the next all-reduce). At most one write is in flight: the next `log` waits for it
    and raises its error, and a `final` log returns only once it is written (so is `flush`)."""

    def __init__(
        self,
        output_uri: str,
        total_steps: int,
        tokens_per_step: int,
        options: StorageOptions | None = None,
        background: bool = False,
    ):
        self.output_uri, self.total_steps, self.tokens_per_step, self.options = (
            output_uri,
            total_steps,
            tokens_per_step,
            options,
        )
        self.lines: list[MetricsLine] = []
        self.validation: ValidationLine | None = None  # the latest held-out loss, shown in progress.json
        self._pool = cf.ThreadPoolExecutor(1, thread_name_prefix="trainkit-progress") if background else None
        self._in_flight: cf.Future | None = None

    def resume(self, step: int) -> None:
        """Load what an earlier attempt wrote, keeping lines up to `step`."""
        self.lines = keep_until(artifacts.read_metrics(self.output_uri, self.options), step)

    def log(self, metrics: MetricsLine, final: bool = False) -> ProgressDoc:
        self.lines.append(metrics)
        record = progress_record(metrics, self.total_steps, self.tokens_per_step)
        if final:
            record["finished"] = True
        if self.validation is not None:
            record["validation"] = validation_summary(self.validation)
        if self._pool is None:
            self._write(self.lines, record)
            return record
        self.flush()
        self._in_flight = self._pool.submit(self._write, list(self.lines), record)
        if final:
            self.flush()
        return record

    def flush(self) -> None:
        """Wait for the write in flight, if any; raise its error."""
        if self._in_flight is not None:
            in_flight, self._in_flight = self._in_flight, None
            in_flight.result()

    def _write(self, lines: list[MetricsLine], record: ProgressDoc) -> None:
        body = "".join(json.dumps(m, sort_keys=True) + "\n" for m in lines).encode()
        storage.write_bytes(artifacts.run_file(self.output_uri, METRICS), body, self.options)
        storage.write_json(artifacts.run_file(self.output_uri, PROGRESS), record, self.options)

    def state_dict(self) -> dict:
        return {"lines": list(self.lines)}

    def load_state_dict(self, d: dict) -> None:
        self.lines = list(d["lines"])


class Throughput:
    """Tokens/s over the steps since the last call (wall clock)."""

    def __init__(self):
        self.t0, self.tokens = time.perf_counter(), 0

    def add(self, tokens: int) -> None:
        self.tokens += tokens

    def exclude(self, seconds: float) -> None:
        """Leave `seconds` (e.g. a checkpoint upload) out of the current window."""
        self.t0 += seconds

    def rate(self) -> float:
        now = time.perf_counter()
        dt = now - self.t0
        r = self.tokens / dt if dt > 0 else 0.0
        self.t0, self.tokens = now, 0
        return r
