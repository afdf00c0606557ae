"""Training loop: trainkit's step loop vs a bare PyTorch loop, same model, batch and data, in one run.

  trainkit  `trainkit.train.loop.train`, the function every Ray Train worker runs, in this process
            (world size 1): schedule, mixed-stream loader, gradient accumulation, clipping, AdamW,
            per-micro-batch reseeding, sequence digests, metrics.jsonl/progress.json every --log-every
            steps. Checkpoint writes are timed separately and left out of tokens/s (they are periodic);
            no validation loss (the bare loop has none).
  bare      the same GPT2LMHeadModel initialised from the same seed, the very same batches read into
            memory beforehand (page-locked on a GPU), and only forward, cross-entropy, backward, clip,
            AdamW step; the same precision, fused AdamW and torch.compile settings as ours.

The two run --repeats times, interleaved (bare, trainkit, bare, trainkit, ...), so load that comes and goes
on a shared machine falls on both. Figures: tokens/s of each repeat (best), the median over repeats of the
per-window ratios (window i of our repeat r against window i of the bare repeat r, --log-every steps each),
and tokens per CPU-second of the process (least sensitive to other load; median of per-repeat ratios).
Goal: trainkit >= 0.97 x bare.
MFU: tokens/s x FLOPs per token (`plan.flops_per_token`, the plan's own function: 6 x non-embedding
parameters + LM head, plus attention) / peak. On a GPU the peak is the device's dense bf16/fp32 rating
(H100/H200: 989 TFLOP/s bf16); on CPU, where there is no rating, it is the best matmul rate measured in
the same run per CPU-second of the process, set against tokens per CPU-second (--peak-tflops overrides),
and labelled so.
--device cuda (the default where a GPU is visible): gpt2-70m at sequence 1024, micro-batch 24, bf16,
torch.compile on. Data: the three demo sources (real English text), prepared once into --data.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time


def add_arguments(p) -> None:
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="default: cuda when visible")
    p.add_argument("--preset", default=None, help="model preset (default: tiny on CPU, gpt2-70m on GPU)")
    p.add_argument("--seq-length", type=int, default=None, help="default: 128 on CPU, 1024 on GPU")
    p.add_argument("--micro-batch", type=int, default=None, help="default: 8 on CPU, 24 on GPU")
    p.add_argument("--accumulation", type=int, default=1, help="micro-batches per step")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--precision", default=None, choices=["fp32", "bf16"], help="default: fp32 on CPU, bf16 on GPU")
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile both loops (default: on with CUDA, off on CPU)",
    )
    p.add_argument("--log-every", type=int, default=5, help="steps per window (and our loop's log interval)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--peak-tflops", type=float, default=None, help="peak for MFU (default: rated on GPU, measured on CPU)"
    )
    p.add_argument("--data", default=".trainkit/bench-train", help="folder for the prepared demo sources (reused)")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    p.add_argument(
        "--tracking-overhead",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure the loop with log shipping, Ray metrics and TensorBoard on vs off (goal: within 2%%)",
    )


SOURCES = (("manuals", 0.5), ("web", 0.3), ("edu", 0.2))


def ensure_data(folder: str, log=print) -> dict[str, str]:
    """Prepared demo sources under `folder` (built once with demo-data + prepare on a local Ray)."""
    from trainkit import storage
    from trainkit.spec.data import INDEX_FILE

    uris = {name: os.path.abspath(os.path.join(folder, "shards", name)) for name, _ in SOURCES}
    if all(storage.exists(storage.join(u, INDEX_FILE)) for u in uris.values()):
        return uris
    from trainkit.data.demo import demo_sources, write_parquet_source
    from trainkit.data.prepare import ensure_ray, run_prepare

    started = ensure_ray(2)
    try:
        for source in demo_sources(1_000_000, log=log):
            text = os.path.abspath(os.path.join(folder, "text"))
            write_parquet_source(source, text, 1)
            run_prepare(os.path.join(text, source.name), uris[source.name], log=log)
    finally:
        if started:
            import ray

            ray.shutdown()
    return uris


def make_spec(args, uris: dict[str, str], output: str, on_gpu: bool):
    from trainkit.spec import parse_spec

    preset = args.preset or ("gpt2-70m" if on_gpu else "tiny")
    seq = args.seq_length or (1024 if on_gpu else 128)
    micro = args.micro_batch or (24 if on_gpu else 8)
    glob = micro * args.accumulation
    doc = {
        "model": {"preset": preset},
        "data": {
            "seqLength": seq,
            "totalTokens": args.steps * glob * seq,
            "whenExhausted": "repeat",
            "sources": [{"name": n, "uri": uris[n], "weight": w} for n, w in SOURCES],
        },
        "training": {
            "microBatchSize": micro,
            "globalBatchSize": glob,
            "precision": args.precision or ("bf16" if on_gpu else "fp32"),
            "compile": args.compile,  # None: the spec's default (on with CUDA, off on CPU)
            "logEverySteps": args.log_every,
            "seed": 0,
            "learningRate": {"peak": 3e-4, "final": 3e-5, "warmupSteps": 2},
        },
        "eval": {"validationTokens": 0},  # the bare loop measures no validation loss either
        "checkpoint": {"everySteps": args.steps, "keep": 1},
        "resources": {"workers": 1, "gpusPerWorker": 1 if on_gpu else 0, "cpusPerWorker": 1, "memoryPerWorker": "64Gi"},
        "output": {"uri": output},
    }
    return parse_spec(doc)


def bare_loop(spec, plan, batches, device) -> tuple[float, list[float], float]:
    """(seconds, tokens/s of each --log-every window, CPU seconds of this process) of the plain PyTorch loop
    over `batches` (a list of steps, each a list of micro-batches)."""
    import torch
    import torch.nn.functional as F

    from trainkit.model import ModelConfig, build_model
    from trainkit.train.loop import compile_enabled

    t = spec.training
    torch.manual_seed(t.seed)
    model = build_model(ModelConfig.from_spec(spec.model, t.dropout)).to(device)
    opt = torch.optim.AdamW(
        model.parameters(),
        lr=t.learning_rate.peak,
        betas=tuple(t.optimizer.betas),
        weight_decay=t.optimizer.weight_decay,
        fused=t.optimizer.fused if t.optimizer.fused is not None else device.type == "cuda",
    )
    fwd = torch.compile(model) if compile_enabled(t.compile, device) else model
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if t.precision == "bf16" else None
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = window = time.perf_counter()
    cpu = time.process_time()
    windows = []
    every = spec.training.log_every_steps
    for i, step in enumerate(batches, 1):
        for x in step:
            x = x.to(device, non_blocking=True)
            if amp:
                with amp:
                    logits = fwd(input_ids=x[:, :-1], use_cache=False).logits
            else:
                logits = fwd(input_ids=x[:, :-1], use_cache=False).logits
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), x[:, 1:].reshape(-1)) / len(step)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.gradient_clipping)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i % every == 0:
            sync()
            now = time.perf_counter()
            windows.append(every * plan.tokens_per_step / (now - window))
            window = now
    sync()
    return time.perf_counter() - start, windows, time.process_time() - cpu


def ours(spec, device) -> tuple[float, list[float], float]:
    """(training seconds with checkpoint writes excluded, tokens/s of each log window, CPU seconds of this
    process (prefetch threads included)) of trainkit's loop."""
    from trainkit import artifacts
    from trainkit.spec.models import TrainingRunSpec
    from trainkit.train.loop import WorkerContext, train

    with tempfile.TemporaryDirectory(prefix="trainkit-bench-") as out:
        doc = spec.model_dump(mode="json", by_alias=True)
        doc["output"]["uri"] = out
        spec = TrainingRunSpec.model_validate(doc)
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            r = train({"spec": doc}, WorkerContext(device=device))
        windows = [line["tokensPerSecond"] for line in artifacts.read_metrics(out)]
    return r["loopSeconds"] - r["checkpointSeconds"], windows, r["trainCpuSeconds"]


def measured_peak_flops(device, precision: str, n: int = 1024, repeats: int = 5) -> float:
    """The best dense matmul rate of `device` in the run's precision, with the threads training uses: what
    MFU is reported against where there is no rated peak (CPU). On CPU it is FLOPs per CPU-second of this
    process, as the loops' tokens per CPU-second are, so other load on a shared machine divides out."""
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = 0.0
    for _ in range(repeats):
        start = clock()
        (a @ b).sum().item()  # .item(): wait for the result
        best = max(best, 2 * n**3 / max(clock() - start, 1e-9))
    return best


def paired_ratios(ours: list[list[float]], bare: list[list[float]]) -> list[float]:
    """Window i of our repeat r over window i of the bare repeat r just before it, for every pair both have."""
    return [o / b for ours_r, bare_r in zip(ours, bare) for o, b in zip(ours_r, bare_r) if b > 0]


def run(args) -> int:
    import torch

    from trainkit.data import MixtureLoader
    from trainkit.train.progress import mfu, peak_flops

    on_gpu = torch.cuda.is_available() if args.device == "auto" else args.device == "cuda"
    if on_gpu and not torch.cuda.is_available():
        print("bench train: --device cuda but no CUDA device is visible", file=sys.stderr)
        return 1
    device = torch.device("cuda" if on_gpu else "cpu")
    uris = ensure_data(args.data)
    spec, plan = make_spec(args, uris, "unused", on_gpu)
    loader = MixtureLoader.from_spec(spec, plan, rank=0, world_size=1)
    batches = [loader.next_step(pin_memory=on_gpu) for _ in range(plan.total_steps)]
    loader.close()
    tokens = plan.total_steps * plan.tokens_per_step
    name = torch.cuda.get_device_name(0) if on_gpu else "cpu"
    print(
        f"bench train: {spec.model.preset} ({plan.parameters / 1e6:.2f}M params, {plan.flops_per_token:.3g} FLOP/token), "
        f"seq {spec.data.seq_length}, micro-batch {spec.training.micro_batch_size} x {plan.gradient_accumulation}, "
        f"{plan.total_steps} steps, {spec.training.precision}, device {name} ({torch.get_num_threads()} threads)",
        flush=True,
    )
    bare_loop(spec, plan, batches[:3], device)  # warm-up: allocator, kernels, threads (and compilation)
    rates: dict[str, list[float]] = {"bare": [], "trainkit": []}
    windows: dict[str, list[list[float]]] = {"bare": [], "trainkit": []}
    per_cpu: dict[str, list[float]] = {"bare": [], "trainkit": []}
    for r in range(args.repeats):
        for label, fn in (
            ("bare", lambda: bare_loop(spec, plan, batches, device)),
            ("trainkit", lambda: ours(spec, device)),
        ):
            seconds, w, cpu_s = fn()
            rates[label].append(tokens / seconds)
            windows[label].append(w)
            per_cpu[label].append(tokens / cpu_s)
            print(
                f"  repeat {r + 1}: {label:8} {tokens / seconds:>12,.0f} tokens/s  ({seconds:.2f} s wall, "
                f"{cpu_s:.2f} s CPU)",
                flush=True,
            )
    best = {k: max(v) for k, v in rates.items()}
    window_ratios = paired_ratios(windows["trainkit"], windows["bare"])
    cpu_ratios = [o / b for o, b in zip(per_cpu["trainkit"], per_cpu["bare"])]
    ratio = {
        "bestTokensPerSecond": best["trainkit"] / best["bare"],
        "medianWindow": statistics.median(window_ratios) if window_ratios else None,
        "medianTokensPerCpuSecond": statistics.median(cpu_ratios),
    }
    rated = peak_flops(name, spec.training.precision) if on_gpu else None
    peak = (
        args.peak_tflops * 1e12 if args.peak_tflops else rated or measured_peak_flops(device, spec.training.precision)
    )
    peak_label = (
        "given" if args.peak_tflops else f"{name} rated" if rated else f"measured {spec.training.precision} matmul"
    )
    # On CPU the measured peak is per CPU-second, so MFU is taken from tokens per CPU-second too.
    per_cpu_second = not on_gpu and not args.peak_tflops
    if per_cpu_second:
        peak_label += " per CPU-second"
    mfu_rate = {k: max(v) for k, v in per_cpu.items()} if per_cpu_second else best
    figures = {
        "preset": spec.model.preset,
        "seqLength": spec.data.seq_length,
        "device": name,
        "flopsPerToken": plan.flops_per_token,
        "tokensPerSecond": best,
        "windowTokensPerSecond": windows,
        "tokensPerCpuSecond": {k: max(v) for k, v in per_cpu.items()},
        "ratio": ratio,
        "windowRatios": window_ratios,
        "goal": 0.97,
        "peakFlops": peak,
        "peak": peak_label,
        "mfu": {k: mfu(v, plan.flops_per_token, peak, 1) for k, v in mfu_rate.items()},
    }
    print(f"\n{'loop':<9} {'best tok/s':>12} {'tok/CPU-s':>11} {'TFLOP/s':>8} {'MFU':>7}")
    for k in ("trainkit", "bare"):
        print(
            f"{k:<9} {best[k]:>12,.0f} {figures['tokensPerCpuSecond'][k]:>11,.0f} "
            f"{best[k] * plan.flops_per_token / 1e12:>8.3f} {figures['mfu'][k]:>7.1%}"
        )
    print(
        f"MFU against {peak / 1e12:.3g} TFLOP/s ({peak_label}"
        + ("; from tokens per CPU-second" if per_cpu_second else "")
        + "); FLOPs per token from the model's shape (plan)"
    )
    for label, key in (
        (f"median of {len(window_ratios)} paired {args.log_every}-step windows", "medianWindow"),
        (f"median of {args.repeats} per-CPU-second ratios", "medianTokensPerCpuSecond"),
        ("best repeat against best repeat", "bestTokensPerSecond"),
    ):
        value = ratio[key]
        if value is not None:
            verdict = "met" if value >= 0.97 else "NOT met"
            print(f"trainkit / bare, {label}: {value:.3f} (goal >= 0.97: {verdict})")
    if on_gpu:
        m = figures["mfu"]["trainkit"]
        minutes = 1e9 * plan.flops_per_token / (m * peak) / 60 if m else float("nan")
        print(f"1B tokens at our rate: {minutes:.1f} min on one {name}")
        figures["minutesPer1BTokens"] = minutes
    if args.tracking_overhead:
        figures["trackingOverhead"] = tracking_overhead(spec, device, args.repeats)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return 0


# ------------------------------------------------------------------ tracking on vs off (issue 16)
TRACKING_GOAL = 0.02  # at most 2% apart


def tracked_loop(spec, device, on: bool) -> tuple[float, float, list[float]]:
    """(tokens/s with checkpoint writes excluded, tokens per CPU-second, tokens/s of each log window) of
    trainkit's loop in this process, with
    everything a run reports besides its own records on (`on`) or off. On: stdout/stderr shipped to <output>/logs/
    (trainkit.train.logship), the Ray metrics gauges (this process is connected to a local Ray), TensorBoard event
    files uploaded to <output>/tensorboard/ at EVERY log step (the worst case; runs upload at most every 30 s).
    Off: none of the three. Both write metrics.jsonl and progress.json, the run's own records."""
    from trainkit import artifacts
    from trainkit.spec.models import TrainingRunSpec
    from trainkit.train import logship
    from trainkit.train.loop import WorkerContext, train

    with tempfile.TemporaryDirectory(prefix="trainkit-bench-") as out:
        doc = spec.model_dump(mode="json", by_alias=True)
        doc["output"]["uri"] = out
        doc["tracking"] = {"tensorboard": on}
        TrainingRunSpec.model_validate(doc)
        config = {"spec": doc, "tracking": {"enabled": on, "tensorboardUploadSeconds": 0}}
        # The loop's prints go nowhere in both arms (with `on`, through the log shipper first).
        saved = {fd: os.dup(fd) for fd in (1, 2)}
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            for fd in (1, 2):
                os.dup2(null, fd)
            shipping = logship.capture(out, artifacts.DRIVER_LOG, None) if on else contextlib.nullcontext()
            with shipping:
                r = train(config, WorkerContext(device=device))
        finally:
            for fd in (1, 2):
                os.dup2(saved[fd], fd)
                os.close(saved[fd])
            os.close(null)
        if on and not (
            artifacts.list_tensorboard_files(out) and artifacts.list_log_segments(out).get(artifacts.DRIVER_LOG)
        ):
            raise RuntimeError(f"tracking was on but {out} has no tensorboard/ events or logs/: nothing was measured")
        windows = [line["tokensPerSecond"] for line in artifacts.read_metrics(out)]
    tokens = r["stepsRun"] * spec.training.global_batch_size * spec.data.seq_length
    return tokens / (r["loopSeconds"] - r["checkpointSeconds"]), tokens / r["trainCpuSeconds"], windows


def tracking_overhead(spec, device, repeats: int) -> dict:
    """The loop with tracking on vs off, interleaved `repeats` times (after one warm-up each) in this process."""
    import ray

    started_ray = not ray.is_initialized()
    if started_ray:  # the Ray gauges need a Ray to record into (a local one, as `trainkit run` starts)
        ray.init(address="local", num_cpus=1, include_dashboard=False, object_store_memory=1 << 30,
                 log_to_driver=False)  # fmt: skip
    try:
        tracked_loop(spec, device, True), tracked_loop(spec, device, False)  # warm-up
        rates: dict[str, list[float]] = {"on": [], "off": []}
        cpu: dict[str, list[float]] = {"on": [], "off": []}
        windows: dict[str, list[list[float]]] = {"on": [], "off": []}
        for r in range(repeats):
            for name in ("off", "on") if r % 2 else ("on", "off"):
                tps, per_cpu, w = tracked_loop(spec, device, name == "on")
                rates[name].append(tps)
                cpu[name].append(per_cpu)
                windows[name].append(w)
                print(f"  tracking {name:3} repeat {r + 1}: {tps:>12,.0f} tokens/s", flush=True)
    finally:
        if started_ray:
            ray.shutdown()
    best = {k: max(v) for k, v in rates.items()}
    median = {k: statistics.median(v) for k, v in rates.items()}
    best_cpu = {k: max(v) for k, v in cpu.items()}
    # The headline is the median of paired log windows (window i of one arm over window i of the other arm
    # run next to it), as for trainkit / bare: a burst of other load on a shared machine moves one window,
    # not the figure. Best-of-repeats and per-CPU-second ratios are printed beside it.
    window_ratios = paired_ratios(windows["on"], windows["off"])
    ratio = statistics.median(window_ratios) if window_ratios else best["on"] / best["off"]
    print(
        f"tracking on vs off (log shipping + Ray metrics + TensorBoard, uploads at every log step): "
        f"median of {len(window_ratios)} paired windows {ratio:.3f}; best tokens/s on {best['on']:,.0f} "
        f"off {best['off']:,.0f} ratio {best['on'] / best['off']:.3f}; median ratio {median['on'] / median['off']:.3f}; "
        f"tokens per CPU-second ratio {best_cpu['on'] / best_cpu['off']:.3f} "
        f"(goal: within {TRACKING_GOAL:.0%}: {'met' if abs(1 - ratio) <= TRACKING_GOAL else 'NOT met'})"
    )
    return {"tokensPerSecond": best, "median": median, "tokensPerCpuSecond": best_cpu, "ratio": ratio,
            "windowRatios": window_ratios, "bestRatio": best["on"] / best["off"], "goal": TRACKING_GOAL}  # fmt: skip
