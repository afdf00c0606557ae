"""Human-readable rendering of a run's derived plan (`trainkit validate --explain`)."""

from __future__ import annotations

from trainkit.spec.memory import estimate_memory, gib
from trainkit.spec.models import TrainingRun
from trainkit.spec.plan import Plan


def human(n: float) -> str:
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:g}"


def memory_line(spec, plan: Plan) -> str:
    est = estimate_memory(spec, plan)
    where = f"GPU {gib(est.device_bytes)}, worker " if est.on_gpu else ""
    return (
        f"  memory/worker    ~{where}{gib(est.worker_bytes)} estimated "
        f"(resources.memoryPerWorker {spec.resources.memory_per_worker})"
    )


def explain(run: TrainingRun, plan: Plan, sequences: list[int], exact: bool = True) -> str:
    """`sequences`: what each source gives over the run, from the stream's schedule (the caller's,
    `trainkit.data.loader.sequences_needed`); `exact` False when that is the upper bound ceil(n w)."""
    s = run.spec
    t = s.training
    arch = s.model.architecture()
    lines = [
        f"TrainingRun {run.metadata.name}",
        f"  model            {s.model.preset}: {arch['n_layer']} layers, hidden {arch['n_embd']}, "
        f"{arch['n_head']} heads, context {arch['n_positions']}, vocab {arch['vocab_size']}",
        f"  parameters       {plan.parameters:,} ({human(plan.parameters)})",
        f"  tokens/step      {plan.tokens_per_step:,} = global batch {t.global_batch_size} x seq {s.data.seq_length}",
        f"  steps            {plan.total_steps:,} ({human(plan.tokens_trained)} tokens of the "
        f"{human(s.data.total_tokens)} asked; whole steps only)",
        f"  batch geometry   {s.resources.workers} worker(s) x micro-batch {t.micro_batch_size} x "
        f"{plan.gradient_accumulation} accumulation step(s) = {t.global_batch_size} sequences",
        f"  warmup steps     {plan.warmup_steps:,}",
        f"  learning rate    {t.learning_rate.peak:g} -> {t.learning_rate.final:g} ({t.learning_rate.schedule})",
        f"  precision        {t.precision}",
        f"  FLOPs            {plan.flops_per_token:.3g}/token, {plan.total_flops:.3g} total",
        "  time estimate    hours = total FLOPs / (workers x GPU peak FLOP/s x MFU) / 3600; "
        f"e.g. one H100 at 40% MFU: {plan.total_flops / (989e12 * 0.4) / 60:.1f} min",
        memory_line(s, plan),
        "  sources          (token proportions over the run)",
    ]
    width = max(len(x.name) for x in plan.sources)
    about = "" if exact else "<= "
    for share, n in zip(plan.sources, sequences, strict=True):
        tokens = n * s.data.seq_length
        lines.append(
            f"    {share.name:<{width}}  {share.weight:6.1%}  {about}{human(tokens):>7} tokens "
            f"({about}{tokens:,}; {about}{n:,} sequences)"
        )
    lines.append(f"  output           {s.output.uri}")
    return "\n".join(lines)
