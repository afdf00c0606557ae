"""Reading what the trainer and the evaluator wrote under a run's output URI (through trainkit.storage).

The operator reads with its OWN credentials (the standard AWS_* variables of its Deployment, from a
Secret); the run's Secret is only referenced by the Ray pods. Only these objects are read:
`progress.json`, `checkpoints/step-*/checkpoint.json` (existence), `eval/step-*/summary.json`.
Each reader returns None when the object is absent or cannot be read now; the status then keeps
what it showed before, so a storage hiccup never erases progress.
"""

from __future__ import annotations

import logging
import re

from trainkit import storage
from trainkit.spec.models import TrainingRunSpec

from trainkit_operator.config import OperatorConfig

STEP_DIR = re.compile(r"step-(\d+)$")
log = logging.getLogger(__name__)


def options_for(spec: TrainingRunSpec, config: OperatorConfig) -> storage.StorageOptions:
    return storage.StorageOptions(endpoint=spec.storage.endpoint or config.default_storage_endpoint, region=spec.storage.region)


def _quiet(what: str, fn):
    try:
        return fn()
    except FileNotFoundError:
        return None
    except Exception as e:  # noqa: BLE001 - storage trouble must not stop the reconcile
        # The message names the URI and the error class only; never credentials (botocore never echoes them).
        log.warning("could not read %s: %s", what, type(e).__name__)
        return None


def read_progress(output_uri: str, options: storage.StorageOptions) -> dict | None:
    uri = storage.join(output_uri, "progress.json")
    data = _quiet(uri, lambda: storage.read_json(uri, options))
    return data if isinstance(data, dict) else None


def _step_dirs(uri: str, options: storage.StorageOptions) -> list[tuple[int, str]]:
    """(step, full path) of `step-N` folders under `uri`, newest first."""
    fs, path = storage.filesystem(uri, options)

    def listing():
        try:
            fs.invalidate_cache(path)
        except Exception:  # noqa: BLE001
            pass
        return fs.ls(path, detail=False)

    entries = _quiet(uri, listing) or []
    out = []
    for entry in entries:
        m = STEP_DIR.search(str(entry).rstrip("/"))
        if m:
            out.append((int(m.group(1)), str(entry).rstrip("/")))
    return sorted(out, reverse=True)


def _uri_of(output_uri: str, folder: str, step_path: str) -> str:
    return storage.join(output_uri, folder, step_path.rsplit("/", 1)[-1])


def latest_checkpoint(output_uri: str, options: storage.StorageOptions, look_back: int = 3) -> dict | None:
    """{step, uri} of the newest checkpoint whose checkpoint.json (written last) exists."""
    root = storage.join(output_uri, "checkpoints")
    for step, path in _step_dirs(root, options)[:look_back]:
        uri = _uri_of(output_uri, "checkpoints", path)
        if _quiet(uri, lambda uri=uri: storage.exists(storage.join(uri, "checkpoint.json"), options)):
            return {"step": step, "uri": uri + "/"}
    return None


def latest_eval_summary(output_uri: str, options: storage.StorageOptions, look_back: int = 3) -> dict | None:
    """The summary.json of the highest eval/step-N that has one ({step, average, tasks, metrics})."""
    root = storage.join(output_uri, "eval")
    for step, path in _step_dirs(root, options)[:look_back]:
        uri = storage.join(_uri_of(output_uri, "eval", path), "summary.json")
        data = _quiet(uri, lambda uri=uri: storage.read_json(uri, options))
        if isinstance(data, dict):
            data.setdefault("step", step)
            return data
    return None
