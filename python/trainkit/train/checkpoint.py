"""Checkpoints under `<output>/checkpoints/step-XXXXXXXX/`: save, find the latest complete one, prune.

A checkpoint folder is a Hugging Face model folder (config.json, model.safetensors, tokenizer files)
plus `trainer/` (optimizer.pt; state.json with step, schedule, RNG scheme and data position), and
`checkpoint.json`, written LAST: `{step, files: {relpath: size}, ...}`. A checkpoint exists iff its
checkpoint.json parses and every file it lists is present with that size; readers ignore anything
else, so an upload cut off half way is never picked, and the previous complete one is.

Decisions (`complete_steps`, `steps_to_prune`) are pure functions of a listing; the rest is I/O.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from trainkit import artifacts, storage
from trainkit.artifacts import MANIFEST, checkpoint_uri, list_checkpoints, parse_checkpoint_listing
from trainkit.storage import StorageOptions


# ------------------------------------------------------------------------------- pure decisions
def steps_to_prune(
    present: list[int], complete: list[int], keep: int, protect: frozenset[int] = frozenset()
) -> list[int]:
    """Everything but the newest `keep` complete checkpoints (incomplete leftovers included) and the
    `protect`ed ones (an eval still reading them)."""
    kept = set(sorted(complete)[-keep:]) if keep > 0 else set()
    return sorted(s for s in present if s not in kept and s not in protect)


# ------------------------------------------------------------------------------------------- I/O
def remove_step(output_uri: str, step: int, options: StorageOptions | None = None) -> None:
    uri = checkpoint_uri(output_uri, step)
    fs, path = storage.filesystem(uri, options)
    # The manifest goes first, so a folder being deleted stops counting at once.
    for target, recursive in ((f"{path}/{MANIFEST}", False), (path, True)):
        try:
            storage.retry(partial(fs.rm, target, recursive=recursive), f"removing {uri}")
        except FileNotFoundError:
            pass
    fs.invalidate_cache()


def save(
    output_uri: str, step: int, local_dir: str | Path, extra: dict | None = None, options: StorageOptions | None = None
) -> str:
    """Upload a prepared local checkpoint folder as step `step`, committing it with checkpoint.json."""
    local_dir = Path(local_dir)
    uri = checkpoint_uri(output_uri, step)
    remove_step(output_uri, step, options)  # leftovers of an interrupted earlier attempt
    files = {p.relative_to(local_dir).as_posix(): p.stat().st_size for p in sorted(local_dir.rglob("*")) if p.is_file()}
    files.pop(MANIFEST, None)
    for rel in files:
        storage.write_bytes(storage.join(uri, rel), (local_dir / rel).read_bytes(), options)
    manifest = artifacts.CheckpointManifest(step=step, files=files, extra=extra or {})
    storage.write_json(storage.join(uri, MANIFEST), manifest.to_json(), options)
    return uri


def prune(
    output_uri: str, keep: int, options: StorageOptions | None = None, protect: frozenset[int] = frozenset()
) -> list[int]:
    listing, manifests = list_checkpoints(output_uri, options)
    present = sorted(parse_checkpoint_listing(listing))
    doomed = steps_to_prune(present, artifacts.complete_steps(listing, manifests), keep, protect)
    for step in doomed:
        remove_step(output_uri, step, options)
    return doomed


def download(output_uri: str, step: int, dest: str | Path, options: StorageOptions | None = None) -> Path:
    """Fetch the files checkpoint.json lists (nothing else) into `dest`."""
    uri = checkpoint_uri(output_uri, step)
    manifest = artifacts.read_manifest(uri, options)
    if manifest is None:
        raise FileNotFoundError(f"{uri}: no readable {MANIFEST}")
    dest = Path(dest)
    for rel in [*manifest.files, MANIFEST]:
        target = storage.contained(dest, rel, uri)  # parse_manifest checked it too: never outside `dest`
        target.parent.mkdir(parents=True, exist_ok=True)
        storage.download_file(storage.join(uri, rel), target, options)  # bulk: weights may be large
    return dest
