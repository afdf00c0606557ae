"""Fetch a checkpoint from object storage into a local cache, trusting only what checkpoint.json lists.

The manifest and what makes a checkpoint complete are `trainkit.artifacts`' (one rule for the trainer,
the evaluator and the operator); this module adds what the evaluator needs on top: the manifest must
list a Hugging Face model (config.json and weights). Only the Hugging Face files are downloaded (not
`trainer/`). The cache is keyed by the URI and reused while the manifest is unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from trainkit import artifacts, storage
from trainkit.artifacts import MANIFEST, CheckpointManifest
from trainkit.eval.errors import CheckpointError

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


@dataclass(frozen=True)
class LocalCheckpoint:
    uri: str
    path: Path
    step: int
    files: dict[str, int]


def default_cache_dir() -> Path:
    return Path(os.environ.get("TRAINKIT_CACHE_DIR") or Path.home() / ".cache" / "trainkit") / "checkpoints"


def model_manifest(data: bytes, uri: str) -> CheckpointManifest:
    """The manifest of a checkpoint the evaluator can load; CheckpointError naming the URI and field otherwise."""
    where = storage.join(uri, MANIFEST)
    try:
        manifest = artifacts.parse_manifest(artifacts.parse_json(data, where), where)
    except artifacts.ArtifactError as e:
        raise CheckpointError(str(e)) from None
    if "config.json" not in manifest.files:
        raise CheckpointError(f"{where}: lists no config.json; not a Hugging Face model folder")
    if not any(w in manifest.files for w in WEIGHT_FILES):
        raise CheckpointError(f"{where}: lists no model weights ({', '.join(WEIGHT_FILES)})")
    return manifest


def is_model_file(rel: str) -> bool:
    """Files the evaluator needs: the Hugging Face folder, not the trainer state."""
    return not rel.startswith(artifacts.TRAINER_DIR)


def fetch_checkpoint(
    uri: str, cache_dir: Path | None = None, options: storage.StorageOptions | None = None
) -> LocalCheckpoint:
    """Verify the checkpoint at `uri` against its manifest and make a local copy of its model files."""
    uri = uri.rstrip("/")
    try:
        raw = storage.read_bytes(storage.join(uri, MANIFEST), options)
    except FileNotFoundError:
        raise CheckpointError(
            f"no checkpoint at {uri}: {MANIFEST} is missing (not a checkpoint, or one that was never committed)"
        ) from None
    manifest = model_manifest(raw, uri)
    step, files = manifest.step, dict(manifest.files)

    # A folder named step-N must hold step N's checkpoint; any other folder holds the manifest's own step.
    folder_step = artifacts.step_of(uri)
    if problems := artifacts.checkpoint_problems(
        step if folder_step is None else folder_step, manifest, artifacts.list_files(uri, options)
    ):
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise CheckpointError(f"incomplete checkpoint at {uri}: {shown}")

    cache_root = Path(cache_dir) if cache_dir else default_cache_dir()
    dest = cache_root / hashlib.sha256(uri.encode()).hexdigest()[:20]
    if not _cached(dest, raw, files):
        _download(uri, files, dest, raw, cache_root, options)
    check_causal_lm(dest, uri)
    return LocalCheckpoint(uri=uri, path=dest, step=step, files=files)


def check_causal_lm(folder: Path, uri: str) -> None:
    """Refuse a model that `AutoModelForCausalLM` cannot load as a causal LM, naming the URI."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    try:
        config = json.loads((folder / "config.json").read_text())
    except ValueError as e:
        raise CheckpointError(f"{uri}/config.json: not valid JSON ({e})") from None
    model_type = config.get("model_type")
    causal_classes = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    architectures = config.get("architectures") or []
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or (
        architectures and not set(architectures) & causal_classes
    ):
        raise CheckpointError(
            f"{uri} is not a causal language model (config.json: model_type={model_type!r}, "
            f"architectures={architectures}); lm-eval's `hf` model needs one AutoModelForCausalLM can load"
        )


def _cached(dest: Path, raw: bytes, files: dict[str, int]) -> bool:
    marker = dest / MANIFEST
    if not marker.is_file() or marker.read_bytes() != raw:
        return False
    return all(
        (dest / rel).is_file() and (dest / rel).stat().st_size == size
        for rel, size in files.items()
        if is_model_file(rel)
    )


def _download(
    uri: str, files: dict[str, int], dest: Path, raw: bytes, cache_root: Path, options: storage.StorageOptions | None
) -> None:
    cache_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=cache_root))
    try:
        for rel in sorted(files):
            if not is_model_file(rel):
                continue
            target = storage.contained(tmp, rel, uri)  # model_manifest checked it too: never outside the cache
            target.parent.mkdir(parents=True, exist_ok=True)
            storage.download_file(storage.join(uri, rel), target, options)  # bulk: weights may be large
            if target.stat().st_size != files[rel]:
                raise CheckpointError(f"incomplete checkpoint at {uri}: {rel} changed while downloading")
        (tmp / MANIFEST).write_bytes(raw)  # marks the cache entry complete
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
