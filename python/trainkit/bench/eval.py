"""Eval throughput: seconds per lm-eval request on local mirrors of the seed suite, extrapolated to the suite.

Runs the real harness (model `hf`) on the local mirror tasks (tests/data/lm_eval_tasks: same prompt shapes
as MMLU 5-shot, HellaSwag, ARC-Challenge, PIQA, WinoGrande, TruthfulQA MC2), one family at a time, on a
model of the seed's architecture (GPT-2 12 x 512, 8 heads, context 1024, vocab 50257; random weights:
time does not depend on them) or on a checkpoint you name. The time spent inside the model's
loglikelihood calls is measured apart from lm-eval's per-task set-up; each family's model seconds per
request times the real benchmark's request count (SEED_SUITE_REQUESTS) gives the estimate.

Caveat printed with the figure: the mirrors' prompts are shorter than the real ones (above all MMLU 5-shot,
whose real prompts run to several hundred tokens), so the estimate is a lower bound; the mean request
length measured here is printed beside it.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

# Real request counts = evaluated questions x answer choices (each choice is one loglikelihood request).
# Split sizes as published by each dataset (lm-eval's default splits); choices per question from the
# datasets' formats. Checked against dataset cards: HellaSwag 10,042, WinoGrande 1,267, PIQA 1,838,
# TruthfulQA 817; not re-checked: MMLU 14,042, ARC-Challenge 1,172, MC2's ~7.2 choices (see docs/eval.md).
SEED_SUITE_REQUESTS: dict[str, tuple[int, float, str]] = {
    # task: (questions, choices per question, split)
    "mmlu": (14_042, 4, "test, 57 subjects"),
    "hellaswag": (10_042, 4, "validation"),
    "arc_challenge": (1_172, 4, "test (a few items have 3 or 5 choices)"),
    "piqa": (1_838, 2, "validation"),
    "winogrande": (1_267, 2, "validation (winogrande_xl)"),
    "truthfulqa_mc2": (817, 7.2, "validation (choices vary; ~7.2 mean)"),
}
MIRRORS = {
    "mmlu": "tk_mmlu",
    "hellaswag": "tk_hellaswag",
    "arc_challenge": "tk_arc_challenge",
    "piqa": "tk_piqa",
    "winogrande": "tk_winogrande",
    "truthfulqa_mc2": "tk_truthfulqa_mc2",
}
SEED_ARCH = dict(n_layer=12, n_embd=512, n_head=8, n_positions=1024, vocab_size=50257)


def default_task_folder() -> Path:
    return Path(__file__).resolve().parents[3] / "tests" / "data" / "lm_eval_tasks"


def add_arguments(p) -> None:
    p.add_argument(
        "--checkpoint", help="checkpoint URI to time (default: a random-weight model of the seed's architecture)"
    )
    p.add_argument("--tasks-dir", default=str(default_task_folder()), help="folder of the mirror task YAMLs")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=1, help="passes over the mirror tasks (the best is kept)")
    p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON too")


def estimate(per_request_s: dict[str, float]) -> dict[str, float]:
    """Seconds for each seed task = measured seconds per request x the real request count (pure)."""
    return {t: per_request_s[t] * q * c for t, (q, c, _) in SEED_SUITE_REQUESTS.items() if t in per_request_s}


def run(args) -> int:
    import torch

    from trainkit.eval import harness
    from trainkit.eval.checkpoint import fetch_checkpoint
    from trainkit.eval.local_tasks import prepare_task_folder
    from trainkit.eval.suite import SEED_SUITE_BY_NAME, TaskRequest

    with tempfile.TemporaryDirectory(prefix="tk-bench-eval-") as tmp_name:
        tmp = Path(tmp_name)
        if args.checkpoint:
            model_path = fetch_checkpoint(args.checkpoint, tmp / "checkpoints").path
            what = args.checkpoint
        else:
            model_path = _seed_shaped_model(tmp / "model")
            what = "GPT-2 12x512 (seed architecture, random weights)"
        folder = prepare_task_folder(args.tasks_dir, tmp)
        requests = [TaskRequest(MIRRORS[t], SEED_SUITE_BY_NAME[t].num_fewshot, None, args.tasks_dir) for t in MIRRORS]
        manager = harness.task_manager(requests, [folder])
        harness.preflight(requests, manager)
        model = harness.load_model(model_path, args.batch_size, args.device)
        device = str(model.device)
        timer = _time_model_calls(model)
        harness.evaluate(model, [requests[2]], manager)  # warm-up (first-call costs), not measured
        per_request, counts, mean_tokens, overhead = {}, {}, {}, {}
        for task, r in zip(MIRRORS, requests):
            best: tuple[float, int, float] | None = None
            for _ in range(max(1, args.repeats)):
                timer.update(seconds=0.0, requests=0)
                t0 = time.perf_counter()
                out = harness.evaluate(model, [r], manager)
                wall = time.perf_counter() - t0
                if best is None or timer["seconds"] < best[0]:
                    best = (timer["seconds"], timer["requests"], wall)
            assert best is not None  # repeats >= 1
            model_s, n, wall = best
            _, tokens = _requests(out, model)
            counts[task], mean_tokens[task] = n, tokens / n
            per_request[task] = model_s / n
            overhead[task] = wall - model_s

    seconds = estimate(per_request)
    total = sum(seconds.values())
    threads = torch.get_num_threads()
    load = os.getloadavg()[0]
    print(
        f"eval throughput: {what} on {device} ({threads} torch threads, {os.cpu_count()} CPUs, load average "
        f"{load:.1f} at the end), batch {args.batch_size}, lm-eval hf, float32"
    )
    print(
        "ms/req = the model's loglikelihood time per request (lm-eval's per-task set-up is excluded; it is "
        f"{sum(overhead.values()):.1f} s in all here for {len(overhead)} small tasks)"
    )
    print(f"{'task':<16}{'mirror reqs':>12}{'tok/req':>9}{'ms/req':>9}{'real reqs':>11}{'est. min':>10}")
    for task, (q, c, _split) in SEED_SUITE_REQUESTS.items():
        print(
            f"{task:<16}{counts[task]:>12}{mean_tokens[task]:>9.0f}{1000 * per_request[task]:>9.1f}{q * c:>11.0f}{seconds[task] / 60:>10.1f}"
        )
    print(
        f"seed suite estimate: {total / 60:.1f} min ({total / 3600:.2f} h) on {device}; a lower bound: the mirrors' "
        "prompts are shorter than the real benchmarks' (MMLU 5-shot above all)"
    )
    if args.json:
        print(
            json.dumps(
                {
                    "device": device,
                    "loadAverage": load,
                    "perRequestSeconds": per_request,
                    "mirrorRequests": counts,
                    "setupSeconds": overhead,
                    "meanTokensPerRequest": mean_tokens,
                    "estimatedSeconds": seconds,
                    "totalSeconds": total,
                }
            )
        )
    return 0


def _time_model_calls(model) -> dict:
    """Wrap the model's request methods so the time spent in the model is measured apart from lm-eval's
    task set-up; returns the live counters {seconds, requests}."""
    counters = {"seconds": 0.0, "requests": 0}
    for name in ("loglikelihood", "loglikelihood_rolling", "generate_until"):
        method = getattr(model, name)

        def timed(reqs, *a, _method=method, **kw):
            t0 = time.perf_counter()
            try:
                return _method(reqs, *a, **kw)
            finally:
                counters["seconds"] += time.perf_counter() - t0
                counters["requests"] += len(reqs)

        setattr(model, name, timed)
    return counters


def _requests(output: dict, model) -> tuple[int, int]:
    """(loglikelihood requests, their context+continuation tokens) from lm-eval's logged samples."""
    n = tokens = 0
    for samples in (output.get("samples") or {}).values():
        for s in samples:
            for context, continuation in s["arguments"]:
                n += 1
                tokens += len(model.tok_encode(context + continuation))
    return n, tokens


def _seed_shaped_model(folder: Path) -> Path:
    """A random-weight GPT-2 of the seed's shape, saved as a Hugging Face folder with the GPT-2 tokenizer."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(**SEED_ARCH)).save_pretrained(folder)  # type: ignore[arg-type]
    _gpt2_tokenizer().save_pretrained(folder)
    return folder


def _gpt2_tokenizer():
    from trainkit.data.tokenizer import load_tokenizer

    return load_tokenizer("gpt2").hf_tokenizer()
