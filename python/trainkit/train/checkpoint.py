"""Checkpoints under `<output>/checkpoints/step-XXXXXXXX/`: save, find the latest complete one, prune.

A checkpoint folder is a Hugging Face model folder (config.json, model.safetensors, tokenizer files)
plus `trainer/` (optimizer.pt; state.json with step, schedule, RNG scheme and data position), and
`checkpoint.json`, written LAST: `{step, files: {relpath: size}, ...}`. A checkpoint exists iff its
checkpoint.json parses and every file it lists is present with that size; readers ignore anything
else, so an upload cut off half way is never picked, and the previous complete one is.

Decisions (`complete_steps`, `steps_to_prune`) are pure functions of a listing; the rest is I/O.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from trainkit import storage
from trainkit.storage import StorageOptions

CHECKPOINTS = "checkpoints"
MANIFEST = "checkpoint.json"
TRAINER_STATE = "trainer/state.json"
OPTIMIZER_STATE = "trainer/optimizer.pt"
_STEP_DIR = re.compile(r"^step-(\d{8})$")


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def checkpoints_uri(output_uri: str) -> str:
    return storage.join(output_uri, CHECKPOINTS)


def checkpoint_uri(output_uri: str, step: int) -> str:
    return storage.join(output_uri, CHECKPOINTS, step_dir_name(step))


# ------------------------------------------------------------------------------- pure decisions
def parse_listing(listing: dict[str, int]) -> dict[int, dict[str, int]]:
    """{"step-00000004/config.json": 812, ...} -> {4: {"config.json": 812, ...}}; other names ignored."""
    out: dict[int, dict[str, int]] = {}
    for rel, size in listing.items():
        head, _, rest = rel.partition("/")
        m = _STEP_DIR.match(head)
        if m and rest:
            out.setdefault(int(m.group(1)), {})[rest] = size
    return out


def is_complete(step: int, files: dict[str, int], manifest: dict | None) -> bool:
    """A manifest for this step that lists only files present with the listed sizes."""
    if not isinstance(manifest, dict) or manifest.get("step") != step:
        return False
    listed = manifest.get("files")
    if not isinstance(listed, dict) or not listed:
        return False
    return all(files.get(rel) == size for rel, size in listed.items())


def complete_steps(listing: dict[str, int], manifests: dict[int, dict | None]) -> list[int]:
    """Steps with a complete checkpoint, ascending."""
    by_step = parse_listing(listing)
    return sorted(s for s, files in by_step.items() if MANIFEST in files and is_complete(s, files, manifests.get(s)))


def steps_to_prune(present: list[int], complete: list[int], keep: int, protect: frozenset[int] = frozenset()) -> list[int]:
    """Everything but the newest `keep` complete checkpoints (incomplete leftovers included) and the
    `protect`ed ones (an eval still reading them)."""
    kept = set(sorted(complete)[-keep:]) if keep > 0 else set()
    return sorted(s for s in present if s not in kept and s not in protect)


# ------------------------------------------------------------------------------------------- I/O
def list_checkpoints(output_uri: str, options: StorageOptions | None = None) -> tuple[dict[str, int], dict[int, dict | None]]:
    """(listing {relpath: size} under checkpoints/, manifests {step: parsed checkpoint.json or None})."""
    root = checkpoints_uri(output_uri)
    fs, path = storage.filesystem(root, options)
    fs.invalidate_cache()
    try:
        found = storage.retry(lambda: fs.find(path, detail=True), f"listing {root}")
    except FileNotFoundError:
        return {}, {}
    listing = {name[len(path):].lstrip("/"): int(info.get("size") or 0) for name, info in found.items()}
    manifests: dict[int, dict | None] = {}
    for step, files in parse_listing(listing).items():
        if MANIFEST in files:
            try:
                manifests[step] = json.loads(storage.read_bytes(storage.join(checkpoint_uri(output_uri, step), MANIFEST), options))
            except (ValueError, FileNotFoundError):
                manifests[step] = None  # torn or vanished: not a checkpoint
    return listing, manifests


def latest_complete(output_uri: str, options: StorageOptions | None = None) -> int | None:
    listing, manifests = list_checkpoints(output_uri, options)
    steps = complete_steps(listing, manifests)
    return steps[-1] if steps else None


def remove_step(output_uri: str, step: int, options: StorageOptions | None = None) -> None:
    uri = checkpoint_uri(output_uri, step)
    fs, path = storage.filesystem(uri, options)
    # The manifest goes first, so a folder being deleted stops counting at once.
    for target, recursive in ((f"{path}/{MANIFEST}", False), (path, True)):
        try:
            storage.retry(lambda t=target, r=recursive: fs.rm(t, recursive=r), f"removing {uri}")
        except FileNotFoundError:
            pass
    fs.invalidate_cache()


def save(output_uri: str, step: int, local_dir: str | Path, extra: dict | None = None,
         options: StorageOptions | None = None) -> str:
    """Upload a prepared local checkpoint folder as step `step`, committing it with checkpoint.json."""
    local_dir = Path(local_dir)
    uri = checkpoint_uri(output_uri, step)
    remove_step(output_uri, step, options)  # leftovers of an interrupted earlier attempt
    files = {p.relative_to(local_dir).as_posix(): p.stat().st_size for p in sorted(local_dir.rglob("*")) if p.is_file()}
    files.pop(MANIFEST, None)
    for rel in files:
        storage.write_bytes(storage.join(uri, rel), (local_dir / rel).read_bytes(), options)
    storage.write_json(storage.join(uri, MANIFEST), {"step": step, "files": files, **(extra or {})}, options)
    return uri


def prune(output_uri: str, keep: int, options: StorageOptions | None = None, protect: frozenset[int] = frozenset()) -> list[int]:
    listing, manifests = list_checkpoints(output_uri, options)
    present = sorted(parse_listing(listing))
    doomed = steps_to_prune(present, complete_steps(listing, manifests), keep, protect)
    for step in doomed:
        remove_step(output_uri, step, options)
    return doomed


def download(output_uri: str, step: int, dest: str | Path, options: StorageOptions | None = None) -> Path:
    """Fetch the files checkpoint.json lists (nothing else) into `dest`."""
    uri = checkpoint_uri(output_uri, step)
    manifest = json.loads(storage.read_bytes(storage.join(uri, MANIFEST), options))
    dest = Path(dest)
    for rel in [*manifest["files"], MANIFEST]:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(storage.read_bytes(storage.join(uri, rel), options))
    return dest
