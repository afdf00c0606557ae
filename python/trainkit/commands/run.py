"""`trainkit run RUN.yaml`: the whole run on this machine (local Ray, no Kubernetes), through the same
code path as the RayJob entrypoint, with a progress bar and a loss-curve PNG at the end."""

from __future__ import annotations

import os
import sys
import threading


def register(sub) -> None:
    p = sub.add_parser("run", help="train a TrainingRun on this machine (local Ray); resumes if it was interrupted")
    p.add_argument("file", metavar="RUN.yaml", help="a TrainingRun (or bare spec), YAML or JSON")
    p.add_argument(
        "--max-failures",
        type=int,
        default=1,
        help="worker-group restarts from the last checkpoint before giving up (default 1)",
    )
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for the local Ray (default: all)")
    p.add_argument("--verbose", action="store_true", help="show the workers' own log lines instead of a progress bar")
    p.set_defaults(func=run)


def watch_progress(output_uri: str, total_steps: int, options, stop: threading.Event, interval: float = 1.0) -> None:
    """Poll progress.json (what the operator reads too) and show it as a progress bar."""
    from tqdm import tqdm

    from trainkit import artifacts, storage

    bar = tqdm(total=total_steps, unit="step", dynamic_ncols=True, file=sys.stdout)
    try:
        while True:
            try:
                p = artifacts.read_progress(output_uri, options)
            except storage.StorageError:
                p = None
            if p and p.get("step", 0) > bar.n:
                bar.update(p["step"] - bar.n)
                eta = p.get("etaSeconds")
                bar.set_postfix_str(
                    f"loss {p['loss']:.3f}  {p['tokensPerSecond']:,.0f} tok/s"
                    + (f"  ETA {eta:,.0f}s" if eta is not None else ""),
                    refresh=True,
                )
            if stop.wait(interval):
                break
    finally:
        bar.close()


def run(args) -> int:
    from trainkit import artifacts, storage
    from trainkit.jobs.train import load_spec_file
    from trainkit.spec import Plan, SpecError, TrainingRunSpec
    from trainkit.storage import StorageOptions
    from trainkit.train.launch import PreflightError, connect_ray, run_spec
    from trainkit.train.plot import loss_curve_png

    try:
        spec, name = load_spec_file(args.file)
    except SpecError as e:
        print(str(e), file=sys.stderr)
        return 2
    stop = threading.Event()
    watcher: threading.Thread | None = None
    planned: list[tuple[TrainingRunSpec, Plan]] = []  # the resolved spec and its plan, once preflight passed

    def on_start(resolved: TrainingRunSpec, plan: Plan) -> None:
        nonlocal watcher
        planned.append((resolved, plan))
        out, options = resolved.output.uri, StorageOptions.from_spec(resolved.storage)
        resumed = artifacts.latest_complete_checkpoint(out, options)
        print(
            f"trainkit run: {name or 'run'}: {plan.total_steps} steps of {plan.tokens_per_step:,} tokens, "
            f"{resolved.resources.workers} worker(s), output {out}"
            + (f" (resuming from step {resumed})" if resumed is not None else ""),
            flush=True,
        )
        if not args.verbose:
            watcher = threading.Thread(target=watch_progress, args=(out, plan.total_steps, options, stop), daemon=True)
            watcher.start()

    ray_started_here = False

    def connect() -> None:
        nonlocal ray_started_here
        import ray  # only once preflight passed: a bad spec fails without loading Ray

        ray_started_here = not ray.is_initialized()
        # A local Ray offers at least what the spec asks for (logical CPUs; the OS shares the cores).
        wanted = int(spec.resources.workers * spec.resources.cpus_per_worker + 0.999)
        connect_ray(args.num_cpus or max(os.cpu_count() or 1, wanted), log_to_driver=args.verbose)

    try:
        result = run_spec(
            spec, name=name or "trainkit-run", max_failures=args.max_failures, on_start=on_start, connect=connect
        )
    except PreflightError as e:
        print(f"{args.file}: {e}", file=sys.stderr)
        return 3
    except Exception as e:  # noqa: BLE001 - one line with the cause; the checkpoints stay for a re-run
        print(
            f"{args.file}: training failed: {type(e).__name__}: {e}\n"
            f"re-run the same command to resume from the last checkpoint",
            file=sys.stderr,
        )
        return 1
    finally:
        stop.set()
        if watcher:
            watcher.join(timeout=5)
        if ray_started_here:
            import ray

            ray.shutdown()

    spec, plan = planned[0]
    out, options = spec.output.uri, StorageOptions.from_spec(spec.storage)
    lines = artifacts.read_metrics(out, options)
    png = artifacts.run_file(out, artifacts.LOSS_PLOT)
    storage.write_bytes(png, loss_curve_png(lines, title=f"{name or 'run'}: training loss"), options)
    final = lines[-1] if lines else {}
    print(
        f"done: step {final.get('step')}/{plan.total_steps}, loss {final.get('loss', float('nan')):.3f}, "
        f"tokens per source {final.get('sourceTokens')}"
    )
    print("artifacts:")
    print(f"  checkpoint   {result.final_checkpoint}   (AutoModelForCausalLM/AutoTokenizer.from_pretrained)")
    print(f"  progress     {artifacts.run_file(out, artifacts.PROGRESS)}")
    print(f"  metrics      {artifacts.run_file(out, artifacts.METRICS)}")
    print(f"  loss curve   {png}")
    if result.eval:
        print(f"  eval         {artifacts.eval_root(out)}   average {result.eval.get('average')}")
    return 0
