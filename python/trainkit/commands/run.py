"""`trainkit run RUN.yaml`: the whole run on this machine (local Ray, no Kubernetes), through the same
code path as the RayJob entrypoint, with a progress bar and a loss-curve PNG at the end."""

from __future__ import annotations

import os
import sys
import threading


def register(sub) -> None:
    p = sub.add_parser("run", help="train a TrainingRun on this machine (local Ray); resumes if it was interrupted")
    p.add_argument("file", metavar="RUN.yaml", help="a TrainingRun (or bare spec), YAML or JSON")
    p.add_argument("--max-failures", type=int, default=1,
                   help="worker-group restarts from the last checkpoint before giving up (default 1)")
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
                bar.set_postfix_str(f"loss {p['loss']:.3f}  {p['tokensPerSecond']:,.0f} tok/s"
                                    + (f"  ETA {eta:,.0f}s" if eta is not None else ""), refresh=True)
            if stop.wait(interval):
                break
    finally:
        bar.close()


def run(args) -> int:
    from trainkit import storage
    from trainkit.jobs.train import connect_ray, load_spec_file
    from trainkit.spec import SpecError, derive_plan
    from trainkit.storage import StorageOptions
    from trainkit import artifacts
    from trainkit.train.launch import PreflightError, preflight, resolve_local_paths, run_training
    from trainkit.train.plot import loss_curve_png

    try:
        spec, name = load_spec_file(args.file)
    except SpecError as e:
        print(str(e), file=sys.stderr)
        return 2
    spec = resolve_local_paths(spec, os.getcwd())
    plan = derive_plan(spec)
    options = StorageOptions.from_spec(spec.storage)
    try:
        preflight(spec, plan, options)
    except PreflightError as e:
        print(f"{args.file}: {e}", file=sys.stderr)
        return 3
    out = spec.output.uri
    resumed = artifacts.latest_complete_checkpoint(out, options)
    print(f"trainkit run: {name or 'run'}: {plan.total_steps} steps of {plan.tokens_per_step:,} tokens, "
          f"{spec.resources.workers} worker(s), output {out}"
          + (f" (resuming from step {resumed})" if resumed is not None else ""), flush=True)

    import ray

    started = not ray.is_initialized()
    # A local Ray offers at least what the spec asks for (logical CPUs; the OS shares the cores).
    wanted = int(spec.resources.workers * spec.resources.cpus_per_worker + 0.999)
    connect_ray(args.num_cpus or max(os.cpu_count() or 1, wanted), log_to_driver=args.verbose)
    stop = threading.Event()
    watcher = None
    if not args.verbose:
        watcher = threading.Thread(target=watch_progress, args=(out, plan.total_steps, options, stop), daemon=True)
        watcher.start()
    try:
        result = run_training(spec, name=name or "trainkit-run", max_failures=args.max_failures, checked=True)
    except Exception as e:  # noqa: BLE001 - one line with the cause; the checkpoints stay for a re-run
        stop.set()
        print(f"{args.file}: training failed: {type(e).__name__}: {e}\n"
              f"re-run the same command to resume from the last checkpoint", file=sys.stderr)
        return 1
    finally:
        stop.set()
        if watcher:
            watcher.join(timeout=5)
        if started:
            ray.shutdown()

    lines = artifacts.read_metrics(out, options)
    png = artifacts.run_file(out, artifacts.LOSS_PLOT)
    storage.write_bytes(png, loss_curve_png(lines, title=f"{name or 'run'}: training loss"), options)
    final = lines[-1] if lines else {}
    print(f"done: step {final.get('step')}/{plan.total_steps}, loss {final.get('loss', float('nan')):.3f}, "
          f"tokens per source {final.get('sourceTokens')}")
    print("artifacts:")
    print(f"  checkpoint   {result.final_checkpoint}   (AutoModelForCausalLM/AutoTokenizer.from_pretrained)")
    print(f"  progress     {artifacts.run_file(out, artifacts.PROGRESS)}")
    print(f"  metrics      {artifacts.run_file(out, artifacts.METRICS)}")
    print(f"  loss curve   {png}")
    if result.eval:
        print(f"  eval         {artifacts.eval_root(out)}   average {result.eval.get('average')}")
    return 0
