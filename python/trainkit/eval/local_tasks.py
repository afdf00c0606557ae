"""Local task folders: lm-eval task YAMLs (plus their data and `utils.py`) from a folder or object storage.

lm-eval passes `dataset_kwargs.data_files` to `datasets.load_dataset` as given, so a relative path would be
read from the process's working directory. trainkit copies the folder into its cache and rewrites relative
`data_files` / `data_dir` to absolute paths next to the YAML, so a task folder works from anywhere
(a test, a Ray worker, an s3:// prefix).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import yaml

from trainkit import storage
from trainkit.eval.errors import TaskDataError


class _Function(str):
    """A `!function module.name` scalar, kept as text."""


class _Loader(yaml.SafeLoader):
    pass


class _Dumper(yaml.SafeDumper):
    pass


def _function_scalar(loader: yaml.SafeLoader, node: yaml.Node) -> _Function:
    if not isinstance(node, yaml.ScalarNode):
        raise yaml.constructor.ConstructorError(None, None, "!function takes a module.name scalar", node.start_mark)
    return _Function(loader.construct_scalar(node))


_Loader.add_constructor("!function", _function_scalar)
_Dumper.add_representer(_Function, lambda dumper, value: dumper.represent_scalar("!function", str(value)))


def absolutize(value, base: Path):
    """A `data_files` value (str, list or {split: str|list}) with relative paths made absolute under `base`."""
    if isinstance(value, str):
        return value if "://" in value or Path(value).is_absolute() else str(base / value)
    if isinstance(value, list):
        return [absolutize(v, base) for v in value]
    if isinstance(value, dict):
        return {k: absolutize(v, base) for k, v in value.items()}
    return value


def rewrite_config(config: dict, base: Path) -> dict:
    """A task config with relative dataset paths resolved against `base` (pure)."""
    kwargs = config.get("dataset_kwargs")
    if not isinstance(kwargs, dict):
        return config
    new = dict(kwargs)
    for key in ("data_files", "data_dir"):
        if key in new:
            new[key] = absolutize(new[key], base)
    return {**config, "dataset_kwargs": new}


def prepare_task_folder(source: str, cache_dir: Path, options: storage.StorageOptions | None = None) -> Path:
    """Copy the task folder at `source` (local path, file:// or s3://) into `cache_dir` and resolve its
    relative data paths; returns the folder to give lm-eval's TaskManager as include_path."""
    dest = Path(cache_dir) / "tasks" / hashlib.sha256(source.encode()).hexdigest()[:20]
    if dest.exists():
        shutil.rmtree(dest)
    if storage.is_remote(source):
        try:
            storage.download_dir(source, dest, options)
        except FileNotFoundError:
            raise TaskDataError(f"task folder {source} is empty or missing") from None
    else:
        src = storage.local_path(source)
        if not src.is_dir():
            raise TaskDataError(f"task folder {source} does not exist or is not a folder")
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__"))
    found = False
    for path in sorted(dest.rglob("*")):
        if not path.is_file() or "yaml" not in path.name:
            continue
        try:
            config = yaml.load(path.read_text(), Loader=_Loader)
        except yaml.YAMLError as e:
            raise TaskDataError(f"{source}: {path.relative_to(dest)} is not valid YAML ({e})") from None
        if isinstance(config, dict):
            found = True
            new = rewrite_config(config, path.parent)
            if new is not config:
                path.write_text(yaml.dump(new, Dumper=_Dumper, sort_keys=False, allow_unicode=True))
    if not found:
        raise TaskDataError(f"task folder {source} holds no lm-eval task YAML")
    return dest
