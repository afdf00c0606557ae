"""What one training worker does, top to bottom (nanoGPT style; Ray Train runs `train_worker` on each).

  1. read the spec and its plan; pick the device and precision
  2. build the GPT-2, the AdamW optimizer and this rank's view of the mixed token stream
  3. resume from the newest complete checkpoint under the output URI, if there is one
  4. wrap the model for data parallelism (Ray Train's prepare_model: DDP) and optionally compile it
  5. step loop: learning rate from the schedule -> micro-batches with gradient accumulation ->
     clip -> AdamW step; every logEverySteps rank 0 writes metrics.jsonl + progress.json;
     every checkpoint.everySteps (and at the end) rank 0 writes a checkpoint and prunes old ones

Everything a resume needs is a function of the checkpoint: weights, optimizer state, the step (the
schedule is a pure function of it; the RNG is reseeded from (seed, step, micro-batch) before each micro-batch) and the
data position (sequences consumed: the stream is computed, so any worker count can continue it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, cast

import torch
import torch.distributed as dist
import torch.nn.functional as F

from trainkit import artifacts, storage
from trainkit.model import ModelConfig, build_model
from trainkit.spec.models import TrainingRunSpec
from trainkit.spec.plan import derive_plan
from trainkit.storage import StorageOptions
from trainkit.train import checkpoint, tracking
from trainkit.train.progress import ProgressWriter, Throughput, mfu, peak_flops
from trainkit.train.schedule import Schedule, lr_at

# Test-only fault injection (documented in docs/training.md): rank TEST_FAULT_RANK (default: the last)
# raises at the start of step TEST_FAULT_AT_STEP, once per TEST_FAULT_MARKER file; rank 0 waits at the
# start of each step in TEST_PAUSE_AT_STEPS until TEST_PAUSE_DIR/resume-<step> exists, so a test can
# act on a real run (kill a node, preempt it) at a known point after a checkpoint. Not TRAINKIT_-prefixed: an
# operator test passes them through spec.resources.env, where that prefix is reserved for what trainkit sets.
FAULT_ENV = (
    "TEST_FAULT_AT_STEP",
    "TEST_FAULT_RANK",
    "TEST_FAULT_MARKER",
    "TEST_PAUSE_AT_STEPS",
    "TEST_PAUSE_DIR",
)
PAUSE_TIMEOUT_S = 900.0


class InjectedFault(RuntimeError):
    pass


class NonFiniteLoss(RuntimeError):
    """Training diverged (the loss is NaN or infinite): stop rather than train on and checkpoint garbage."""


def check_finite_loss(loss: float, step: int) -> None:
    """Every rank sees the same all-reduced value, so every rank stops together (no one waits in a collective)."""
    if not math.isfinite(loss):
        raise NonFiniteLoss(
            f"the training loss is {loss} at step {step}: training diverged (lower training.learningRate, "
            "raise warmup, set training.gradientClipping, or use bf16 instead of fp16); no checkpoint of this "
            "step was written"
        )


@dataclass
class WorkerContext:
    """Where this worker sits; Ray Train fills it in, the benchmark builds a single-process one."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    prepare_model: Callable = lambda m: m


def ray_context() -> WorkerContext:
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    return WorkerContext(
        ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.get_device(), ray.train.torch.prepare_model
    )


def train_worker(config: dict) -> None:
    """Ray Train's train_loop_per_worker: `train`, with this worker's stdout/stderr shipped to
    `<output>/logs/worker-<rank>.*.log` (its traceback too when it raises)."""
    import traceback

    from trainkit.train import logship

    ctx = ray_context()
    out = config["spec"]["output"]["uri"]
    options = StorageOptions(**config.get("storage", {}))
    policy = logship.LogPolicy.from_config(config.get("logs"))
    with logship.capture(out, artifacts.worker_log_stream(ctx.rank), options, policy):
        try:
            train(config, ctx)
        except BaseException:
            traceback.print_exc()  # Ray Train hands the exception to the driver; the worker's own log keeps it too
            tracking.close_all()  # what TensorBoard/MLflow have is sent before the worker goes
            raise


# ------------------------------------------------------------------------------------ small parts
def build_optimizer(model: torch.nn.Module, spec: TrainingRunSpec, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not biases, LayerNorms); fused on GPU unless told otherwise."""
    o = spec.training.optimizer
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": o.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    fused = o.fused if o.fused is not None else device.type == "cuda"
    return torch.optim.AdamW(
        groups, lr=spec.training.learning_rate.peak, betas=(o.betas[0], o.betas[1]), eps=o.eps, fused=fused
    )


def compile_enabled(setting: bool | None, device: torch.device) -> bool:
    """`training.compile`: as set, else on for CUDA and off on CPU (the spec's documented default)."""
    return setting if setting is not None else device.type == "cuda"


def autocast_for(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("training.precision fp16 needs a GPU; use bf16 or fp32 on CPU")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def reseed(seed: int, step: int, micro_batch: int) -> None:
    """The RNG (dropout) of a micro-batch is a function of (seed, step, its index in the global batch), so a
    resume needs no RNG blobs and draws the same masks with any worker count."""
    torch.manual_seed((seed * 1_000_003 + step * 7919 + micro_batch) % (2**63))


def row_digests(batches: list[torch.Tensor], slots=None) -> list[tuple[int, bytes]]:
    """(index in the global batch, 8-byte hash) per sequence: proves which sequences a step trained on.
    A rank's rows are not a contiguous slice of the step (the loader keeps ranks near their own shards),
    so each row carries its slot and rank 0 puts the gathered rows back in stream order."""
    rows = [row for x in batches for row in x.cpu()]
    slots = range(len(rows)) if slots is None else [int(s) for s in slots]
    return [(s, hashlib.blake2b(row.numpy().tobytes(), digest_size=8).digest()) for s, row in zip(slots, rows)]


def gather(obj, world_size: int) -> list:
    if world_size == 1 or not dist.is_initialized():
        return [obj]
    out = [None] * world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj, world_size: int):
    if world_size == 1 or not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_across(value: torch.Tensor, world_size: int) -> float:
    if world_size > 1 and dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value)
        value /= world_size
    return float(value)


def maybe_fault(step: int, rank: int, world_size: int) -> None:
    at = os.environ.get("TEST_FAULT_AT_STEP")
    if at is None or step != int(at) or rank != int(os.environ.get("TEST_FAULT_RANK", world_size - 1)):
        return
    marker = Path(os.environ.get("TEST_FAULT_MARKER") or Path(tempfile.gettempdir()) / f"trainkit-fault-{at}")
    if marker.exists():
        return
    marker.write_text(f"fault injected at step {step} on rank {rank}\n")
    raise InjectedFault(f"TEST_FAULT_AT_STEP: injected failure at step {step} on rank {rank}")


def maybe_pause(step: int, rank: int) -> None:
    """Test-only: rank 0 writes TEST_PAUSE_DIR/paused-<step> (its pid) and waits for resume-<step>; the other
    ranks wait for it in the step's first collective. Once resume-<step> exists the step never pauses again (a
    resumed attempt passes it)."""
    steps, folder = os.environ.get("TEST_PAUSE_AT_STEPS"), os.environ.get("TEST_PAUSE_DIR")
    if rank != 0 or not steps or not folder or step not in {int(s) for s in steps.split(",") if s.strip()}:
        return
    release = Path(folder) / f"resume-{step}"
    if release.exists():
        return
    # Atomic: whoever waits for paused-<step> never reads it half-written.
    storage.write_text_atomic(Path(folder) / f"paused-{step}", f"{os.getpid()}\n")
    print(f"[trainkit] paused at step {step} until {release} exists (TEST_PAUSE_AT_STEPS)", flush=True)
    deadline = time.monotonic() + PAUSE_TIMEOUT_S
    while not release.exists():
        if time.monotonic() > deadline:
            raise InjectedFault(f"TEST_PAUSE_AT_STEPS: nobody released step {step} in {PAUSE_TIMEOUT_S:.0f} s")
        time.sleep(0.1)


def load_tokenizer_for(spec: TrainingRunSpec):
    from trainkit.data import load_tokenizer

    return load_tokenizer(spec.tokenizer)


def make_loader(spec, plan, rank, world_size, options):
    from trainkit.data import MixtureLoader

    return MixtureLoader.from_spec(spec, plan, rank=rank, world_size=world_size, options=options)


# -------------------------------------------------------------------------------------- the loop
def train(config: dict, ctx: WorkerContext) -> dict:
    # 1. spec, plan, device ----------------------------------------------------------------------
    t_start = time.perf_counter()
    spec = TrainingRunSpec.model_validate(config["spec"])
    plan = derive_plan(spec)
    options = StorageOptions(**config.get("storage", {}))
    out = spec.output.uri
    t = spec.training
    rank, world, device = ctx.rank, ctx.world_size, ctx.device
    is_main = rank == 0
    accum = plan.gradient_accumulation
    if device.type == "cuda":
        from trainkit.spec.memory import check_fits

        check_fits(spec, plan, device_memory=torch.cuda.get_device_properties(device).total_memory)  # before any OOM
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    autocast = autocast_for(t.precision, device)
    # fp16 needs loss scaling; for bf16/fp32 the scaler is a no-op. (Its scale restarts at a resume.)
    scaler = torch.amp.GradScaler(device.type, enabled=t.precision == "fp16")

    # 2. model, optimizer, data ------------------------------------------------------------------
    tokenizer = load_tokenizer_for(spec)
    torch.manual_seed(t.seed)  # same initial weights on every rank
    raw_model = build_model(ModelConfig.from_spec(spec.model, t.dropout), eos_id=tokenizer.eos_id).to(device)
    schedule = Schedule.from_spec(spec, plan)
    loader = make_loader(spec, plan, rank, world, options)
    writer = ProgressWriter(out, plan.total_steps, plan.tokens_per_step, options, background=True) if is_main else None
    validation = ValidationShell.for_run(spec, out, options, rank, world, device, autocast)
    stream_digest = ""  # running hash of every sequence trained on, in stream order (rank 0)

    # 3. resume ----------------------------------------------------------------------------------
    start = broadcast(artifacts.latest_complete_checkpoint(out, options) if is_main else None, world)
    if start is not None:
        with tempfile.TemporaryDirectory(prefix="trainkit-resume-") as tmp:
            folder = checkpoint.download(out, start, tmp, options)
            from safetensors.torch import load_file

            missing, unexpected = raw_model.load_state_dict(
                load_file(folder / "model.safetensors", device=str(device)), strict=False
            )
            tied = {"lm_head.weight"} if raw_model.config.tie_word_embeddings else set()
            if set(missing) - tied or unexpected:
                raise RuntimeError(
                    f"checkpoint step {start}: weights do not match the model (missing {missing}, unexpected {unexpected})"
                )
            optimizer_state = torch.load(folder / artifacts.OPTIMIZER_STATE, map_location=device, weights_only=True)
            state = json.loads((folder / artifacts.TRAINER_STATE).read_text())
        loader.load_state_dict(state["data"])
        stream_digest = state.get("streamDigest", "")
        if writer:
            writer.resume(start)
        validation.resume(start)
        print(
            f"[trainkit] rank {rank}: resumed from {artifacts.checkpoint_uri(out, start)} "
            f"(sequences consumed {state['data'].get('sequences_consumed')})",
            flush=True,
        )
    step = start or 0
    tracker = tracking.for_worker(spec, plan.tokens_per_step, rank, step, config.get("tracking"), options)

    # 4. parallelism -----------------------------------------------------------------------------
    # ddp: Ray Train's DDP wrapper; fsdp: PyTorch FSDP2 shards parameters, gradients and optimizer state
    # over the workers (each transformer block, then the root). Either way the optimizer comes after.
    model = shard_fsdp2(raw_model, device, world) if t.parallelism == "fsdp" else ctx.prepare_model(raw_model)
    optimizer = build_optimizer(raw_model, spec, device)
    if start is not None:
        load_optimizer_state(raw_model, optimizer, optimizer_state, t.parallelism)
    if compile_enabled(t.compile, device):
        model = torch.compile(model)
    # DDP can skip the gradient all-reduce on all but the last micro-batch; FSDP2 reduces every one.
    no_sync = getattr(model, "no_sync", None) or getattr(getattr(model, "_orig_mod", None), "no_sync", None)

    peak = peak_flops(torch.cuda.get_device_name(device) if device.type == "cuda" else None, t.precision)
    throughput = Throughput()
    window_loss, window_steps, pending_rows = torch.zeros((), device=device), 0, []
    checkpoint_seconds, checkpoint_cpu, t_loop, cpu_loop = 0.0, 0.0, time.perf_counter(), time.process_time()
    evals: list = []  # (step, Ray ref) of the evals started during training (spec.eval.everySteps)
    model.train()
    if is_main:
        print(
            f"[trainkit] {world} worker(s) on {device}, ready in {time.perf_counter() - t_start:.1f} s; "
            f"steps {step}..{plan.total_steps}",
            flush=True,
        )

    # 5. the step loop ---------------------------------------------------------------------------
    while step < plan.total_steps:
        maybe_pause(step, rank)
        maybe_fault(step, rank, world)
        lr = lr_at(step, schedule)
        for group in optimizer.param_groups:
            group["lr"] = lr
        # On a GPU the step's tokens arrive page-locked and every micro-batch is copied at once, non-blocking:
        # the copies queue behind the previous step's kernels and the host never waits for them.
        batches = tracker.timed_data(lambda: loader.next_step(pin_memory=device.type == "cuda"))
        pending_rows.append(row_digests(batches, getattr(loader, "last_slots", None)))  # host rows: no sync
        on_device = [x.to(device, non_blocking=True) for x in batches]
        for micro, x in enumerate(on_device):
            reseed(t.seed, step, rank * accum + micro)
            inputs, labels = x[:, :-1], x[:, 1:]
            last = micro == len(on_device) - 1
            with no_sync() if (no_sync and not last) else contextlib.nullcontext():
                with autocast:
                    logits = model(input_ids=inputs, use_cache=False).logits
                loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), labels.reshape(-1)) / accum
                scaler.scale(loss).backward()
            window_loss += loss.detach()
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), t.gradient_clipping or float("inf"))
        grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm  # FSDP2: a DTensor
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        window_steps += 1
        throughput.add(plan.tokens_per_step)

        final = step == plan.total_steps
        log_now = step % t.log_every_steps == 0 or final
        eval_now = periodic_eval_due(step, spec.eval.every_steps, final)
        ckpt_now = step % spec.checkpoint.every_steps == 0 or final or eval_now
        if log_now or ckpt_now:
            # Before anything is logged or checkpointed: a diverged model is never saved or reported as progress.
            window_mean = mean_across(window_loss, world) / max(1, window_steps)
            check_finite_loss(window_mean, step)
            # Every rank's sequence hashes, put back in global stream order by their slots.
            gathered = gather(pending_rows, world)
            pending_rows = []
            if is_main:
                h = hashlib.blake2b(bytes.fromhex(stream_digest), digest_size=16)
                for per_step in zip(*gathered):
                    h.update(b"".join(d for _, d in sorted(row for rows in per_step for row in rows)))
                stream_digest = h.hexdigest()
        if eval_now or final:  # before the log, so progress.json carries the step's validation loss
            t_val = time.perf_counter()
            measured = validation.measure(raw_model, step, step * plan.tokens_per_step)
            tracker.validation(step, measured)
            if writer is not None and measured is not None:
                writer.validation = measured
            throughput.exclude(time.perf_counter() - t_val)
        if log_now:
            loss_value = window_mean
            window_loss.zero_()
            window_steps = 0
            tps = throughput.rate()
            if writer is not None:  # rank 0
                sources = loader.source_sequences()
                writer.log(
                    {
                        "step": step,
                        "loss": loss_value,
                        "lr": lr,
                        "gradNorm": float(grad_norm),
                        "tokensPerSecond": tps,
                        "mfu": mfu(tps, plan.flops_per_token, peak, world),
                        "tokens": step * plan.tokens_per_step,
                        "sourceSequences": sources,
                        "sourceTokens": {k: v * spec.data.seq_length for k, v in sources.items()},
                        "streamDigest": stream_digest,
                        "startStep": start or 0,  # where this attempt began (a resumed checkpoint or 0)
                    },
                    final=final,
                )
                print(
                    f"[trainkit] step {step}/{plan.total_steps} loss {loss_value:.4f} lr {lr:.3g} tokens/s {tps:,.0f}",
                    flush=True,
                )
            if tracker.active:  # Ray metrics (every rank), TensorBoard and MLflow (rank 0): trainkit.train.tracking
                mfu_now = mfu(tps, plan.flops_per_token, peak, world)
                tracker.log({"step": step, "loss": loss_value, "lr": lr, "gradNorm": float(grad_norm),
                             "tokensPerSecond": tps, "mfu": mfu_now})  # fmt: skip
        if ckpt_now:
            t_ckpt, cpu_ckpt = time.perf_counter(), time.process_time()
            # FSDP2 gathers the full state on every rank (a collective), rank 0 ends up with it.
            model_state, optimizer_state = full_state(raw_model, optimizer, t.parallelism)
            if is_main:
                if writer is not None:  # metrics up to this step are stored before a checkpoint a resume starts from
                    writer.flush()
                save_checkpoint(
                    spec,
                    plan,
                    out,
                    step,
                    raw_model,
                    model_state,
                    optimizer_state,
                    tokenizer,
                    loader,
                    schedule,
                    stream_digest,
                    options,
                    protect=evaluating(evals),
                )
                if eval_now:
                    evals.append((step, launch_periodic_eval(spec, out, step, options)))
            if world > 1 and dist.is_initialized():
                dist.barrier()  # nobody races ahead of a checkpoint that might be resumed from
            checkpoint_seconds += time.perf_counter() - t_ckpt
            tracker.checkpoint(time.perf_counter() - t_ckpt)
            checkpoint_cpu += time.process_time() - cpu_ckpt
            throughput.exclude(time.perf_counter() - t_ckpt)  # tokens/s is about training, not uploads
    loop_seconds, loop_cpu = time.perf_counter() - t_loop, time.process_time() - cpu_loop
    loader.close()
    tracker.close()
    wait_for_evals(evals)
    return {
        "step": step,
        "streamDigest": stream_digest,
        "resumedFrom": start,
        "stepsRun": step - (start or 0),
        "loopSeconds": loop_seconds,
        "checkpointSeconds": checkpoint_seconds,
        "trainCpuSeconds": loop_cpu - checkpoint_cpu,
    }


class ValidationShell:
    """Held-out validation loss at eval steps and the end (trainkit.train.validation): every rank computes
    its share of the rows, rank 0 writes validation.jsonl. Inert when the run asks for none."""

    def __init__(self, rows: dict, writer, batch_size: int, rank: int, world: int, device, autocast,
                 targets: tuple[str, ...] = (), in_mean: tuple[str, ...] | None = None):  # fmt: skip
        self.rows, self.writer, self.batch_size = rows, writer, batch_size
        self.rank, self.world, self.device, self.autocast = rank, world, device, autocast
        self.targets, self.in_mean = targets, in_mean

    @classmethod
    def for_run(cls, spec: TrainingRunSpec, out: str, options, rank: int, world: int, device, autocast):
        from trainkit.train.validation import ValidationWriter, mean_sets, read_validation_rows

        budget = spec.eval.validation_tokens
        sources = [(s.name, s.shards_uri) for s in spec.data.held_out_sets()]
        rows = read_validation_rows(
            sources, spec.data.seq_length, budget, spec.model.architecture()["vocab_size"], options
        )
        if rank == 0 and budget and not rows:
            print(
                "[trainkit] no source has a held-out split (re-run `trainkit prepare`): no validation loss", flush=True
            )
        writer = ValidationWriter(out, options) if rank == 0 and rows else None
        targets = tuple(t.name for t in spec.data.validation_targets)
        return cls(
            rows, writer, spec.eval.batch_size, rank, world, device, autocast, targets, tuple(mean_sets(spec.data))
        )

    def resume(self, step: int) -> None:
        if self.writer:
            self.writer.resume(step)

    def measure(self, model: torch.nn.Module, step: int, tokens: int):
        """The step's ValidationLine (written by rank 0), or None when the run measures none."""
        from trainkit.train.validation import summarise, validation_sums

        if not self.rows:
            return None
        sums = validation_sums(
            model,
            self.rows,
            device=self.device,
            batch_size=self.batch_size,
            rank=self.rank,
            world=self.world,
            autocast=self.autocast,
        )
        line = summarise(step, tokens, sums, self.targets, self.in_mean)
        if self.writer:
            self.writer.write(line)
            shown = ", ".join(f"{k} {v['loss']:.4f}" for k, v in line["sources"].items())
            print(
                f"[trainkit] step {step} validation loss: mean {line.get('mean', float('nan')):.4f} ({shown})",
                flush=True,
            )
        return line


def periodic_eval_due(step: int, every_steps: int | None, final: bool) -> bool:
    """Evals during training: every `every_steps` steps, on a checkpoint of that step. The final step's
    eval is the driver's (spec.eval.atEnd), so it is not started twice."""
    return every_steps is not None and every_steps != 0 and step % every_steps == 0 and not final


def launch_periodic_eval(spec: TrainingRunSpec, out: str, step: int, options):
    """Rank 0 starts the eval of the step's checkpoint as its own Ray task and trains on. The task reserves
    no CPU or GPU: the training workers hold them, and `wait_for_evals` waiting at the end for a task that
    waits for those resources would deadlock."""
    from trainkit.eval import launch_eval_task

    return launch_eval_task(artifacts.checkpoint_uri(out, step), spec.eval, out, step, options, num_gpus=0, num_cpus=0)


def evaluating(evals: list) -> frozenset[int]:
    """Steps whose eval has not finished: their checkpoints must not be pruned under them."""
    import ray

    if not evals:
        return frozenset()
    refs = [ref for _, ref in evals]
    _, pending = ray.wait(refs, num_returns=len(refs), timeout=0)
    return frozenset(step for step, ref in evals if ref in pending)


def wait_for_evals(evals: list) -> None:
    """Before the worker returns (its tasks die with it): an eval failure is reported, not a training failure."""
    import ray

    for _, ref in evals:
        try:
            summary = ray.get(ref)
            print(f"[trainkit] eval of step {summary.get('step')}: average {summary.get('average')}", flush=True)
        except Exception as e:  # noqa: BLE001 - the checkpoint is good; say what failed and go on
            print(f"[trainkit] eval during training failed: {e}", flush=True)


def shard_fsdp2(model: torch.nn.Module, device: torch.device, world_size: int) -> torch.nn.Module:
    """FSDP2 (`fully_shard`) on each transformer block, then on the root (which keeps the tied embeddings
    and LM head together). The module is sharded in place."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (world_size,))
    for block in cast(torch.nn.ModuleList, model.get_submodule("transformer.h")):
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def full_state(model: torch.nn.Module, optimizer, parallelism: str) -> tuple[dict, dict]:
    """(model, optimizer) state dicts as a single process would hold them. With FSDP2 this gathers the
    shards (call it on every rank; rank 0 gets them, the others empty dicts) and keys optimizer state
    by parameter name."""
    if parallelism != "fsdp":
        return model.state_dict(), optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state = get_model_state_dict(model, options=opts)
    if cast(Any, model).config.tie_word_embeddings:  # a Hugging Face model's config
        # Gathered, the tied LM head is a copy of the embedding: save it once, as a DDP checkpoint does.
        model_state.pop("lm_head.weight", None)
    return model_state, get_optimizer_state_dict(model, optimizer, options=opts)


def load_optimizer_state(model: torch.nn.Module, optimizer, state: dict, parallelism: str) -> None:
    if parallelism != "fsdp":
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def save_checkpoint(
    spec,
    plan,
    out,
    step,
    raw_model,
    model_state,
    optimizer_state,
    tokenizer,
    loader,
    schedule,
    stream_digest,
    options,
    protect: frozenset[int] = frozenset(),
) -> str:
    """Rank 0: HF folder + trainer state into a temp dir, then upload with checkpoint.json last; prune."""
    with tempfile.TemporaryDirectory(prefix="trainkit-ckpt-") as tmp:
        folder = Path(tmp)
        raw_model.save_pretrained(folder, state_dict=model_state, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        (folder / "trainer").mkdir()
        torch.save(optimizer_state, folder / artifacts.OPTIMIZER_STATE)
        sources = loader.source_sequences()
        state = {
            "step": step,
            "totalSteps": plan.total_steps,
            "tokens": step * plan.tokens_per_step,
            "data": loader.state_dict(),
            "schedule": schedule.state_dict(),
            "rng": {
                "scheme": "torch.manual_seed(f(seed, step, global micro-batch index)) before every micro-batch",
                "seed": spec.training.seed,
            },
            "streamDigest": stream_digest,
            "sourceSequences": sources,
        }
        (folder / artifacts.TRAINER_STATE).write_text(json.dumps(state, indent=2, sort_keys=True))
        uri = checkpoint.save(
            out,
            step,
            folder,
            extra={
                "tokens": step * plan.tokens_per_step,
                "sourceSequences": sources,
                "tokenizerFingerprint": tokenizer.fingerprint,
            },
            options=options,
        )
    checkpoint.prune(out, spec.checkpoint.keep, options, protect)
    print(f"[trainkit] checkpoint {uri}", flush=True)
    return uri
