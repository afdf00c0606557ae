"""Will a run fit in a worker's memory? A pure estimate, checked before training starts.

Per worker, for a GPT-2 trained with AdamW under DDP:
  weights (fp32) 4P + gradients 4P + AdamW moments 8P (+ 4P DDP gradient buckets when workers > 1)
  activations  ~ layers x micro-batch x seq x (34 x hidden + 5 x heads x seq) x bytes/elt
               (Korthikanti et al. 2022, "Reducing Activation Recomputation", table 2, no recompute)
  logits       micro-batch x seq x vocab x 4 bytes x 3 (logits, their fp32 log-softmax, their gradient)
  runtime      a fixed allowance for the Python process (torch, transformers, Ray worker)
On GPU the model state, activations and logits live in GPU memory; the worker's own memory
(resources.memoryPerWorker) then holds the runtime and a CPU copy of the state while a checkpoint is
written. Quantities use Kubernetes notation ("4Gi", "512Mi", "8G").
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

GiB = 1024**3
RUNTIME_BYTES = int(1.5 * GiB)
# The estimate must stay below this fraction of the limit (allocator fragmentation, loader buffers).
HEADROOM = 0.9

_UNITS = {
    "": 1,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def parse_quantity(q: str) -> int:
    """Kubernetes quantity -> bytes."""
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([A-Za-z]*)", q.strip())
    if not m or m.group(2) not in _UNITS:
        raise ValueError(f"'{q}' is not a Kubernetes quantity (e.g. 4Gi, 512Mi)")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    gradients: int
    optimizer: int
    ddp_buckets: int
    activations: int
    logits: int
    runtime: int
    on_gpu: bool

    @property
    def device_bytes(self) -> int:
        """Bytes on the training device (GPU memory on GPU; the worker's memory on CPU)."""
        return self.weights + self.gradients + self.optimizer + self.ddp_buckets + self.activations + self.logits

    @property
    def worker_bytes(self) -> int:
        """Bytes of the worker process itself, compared with resources.memoryPerWorker."""
        if self.on_gpu:
            return self.runtime + self.weights + self.optimizer  # CPU copy of the state at checkpoint time
        return self.runtime + self.device_bytes

    def to_dict(self) -> dict:
        return {**asdict(self), "deviceBytes": self.device_bytes, "workerBytes": self.worker_bytes}


def estimate_memory(spec, plan) -> MemoryEstimate:
    """Memory one worker needs to train `spec` (a TrainingRunSpec) with its derived `plan`."""
    arch = spec.model.architecture()
    t = spec.training
    P = plan.parameters
    b, s = t.micro_batch_size, spec.data.seq_length
    h, L, a, V = arch["n_embd"], arch["n_layer"], arch["n_head"], arch["vocab_size"]
    elt = 4 if t.precision == "fp32" else 2
    # The table's 34*h counts bytes at 2 bytes/element: scale by elt/2.
    activations = int(L * b * s * (34 * h + 5 * a * s) * elt / 2)
    workers = spec.resources.workers
    if t.parallelism == "fsdp":
        # Each worker holds 1/workers of the weights, gradients and AdamW state, plus the one block's
        # full parameters it all-gathers at a time (~P/L); no DDP buckets.
        shard = -(-P // workers) + P // max(L, 1)
        return MemoryEstimate(
            weights=4 * shard,
            gradients=4 * shard,
            optimizer=8 * -(-P // workers),
            ddp_buckets=0,
            activations=activations,
            logits=3 * 4 * b * s * V,
            runtime=RUNTIME_BYTES,
            on_gpu=spec.resources.gpus_per_worker > 0,
        )
    return MemoryEstimate(
        weights=4 * P,
        gradients=4 * P,
        optimizer=8 * P,
        ddp_buckets=4 * P if workers > 1 else 0,
        activations=activations,
        logits=3 * 4 * b * s * V,
        runtime=RUNTIME_BYTES,
        on_gpu=spec.resources.gpus_per_worker > 0,
    )


class MemoryFitError(ValueError):
    """The run does not fit the memory it asks for; the message names the fields to change."""


def gib(n: float) -> str:
    return f"{n / GiB:.2f} GiB"


def check_fits(spec, plan, device_memory: int | None = None) -> MemoryEstimate:
    """Raise MemoryFitError when the estimate exceeds resources.memoryPerWorker (or `device_memory`, the
    GPU's bytes, when known); return the estimate otherwise."""
    est = estimate_memory(spec, plan)
    limit = parse_quantity(spec.resources.memory_per_worker)
    hint = (
        f"(model.preset {spec.model.preset}: {plan.parameters:,} parameters -> weights+grads+AdamW "
        f"{gib(est.weights + est.gradients + est.optimizer + est.ddp_buckets)}; training.microBatchSize "
        f"{spec.training.micro_batch_size} x data.seqLength {spec.data.seq_length} -> activations "
        f"{gib(est.activations)} + logits {gib(est.logits)}; runtime {gib(est.runtime)})"
    )
    if est.worker_bytes > HEADROOM * limit:
        raise MemoryFitError(
            f"spec.resources.memoryPerWorker {spec.resources.memory_per_worker} is too small: a worker needs about "
            f"{gib(est.worker_bytes)} {hint}. Raise resources.memoryPerWorker or lower "
            f"training.microBatchSize (keeping globalBatchSize: more accumulation steps)."
        )
    if est.on_gpu and device_memory is not None and est.device_bytes > HEADROOM * device_memory:
        raise MemoryFitError(
            f"the run needs about {gib(est.device_bytes)} of GPU memory per worker but the GPU has "
            f"{gib(device_memory)} {hint}. Lower training.microBatchSize (keeping globalBatchSize) or use a larger GPU."
        )
    return est
