"""The Dockerfiles: hadolint-clean, pinned bases, multi-stage, non-root with a numeric uid, and installing
exactly the project's own dependency pins (pyproject.toml). There is no Docker engine here, so the images
are checked as source: by hadolint, by parsing, and by importing the operator with nothing but what its
image would install.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "images"
DOCKERFILES = {"operator": IMAGES / "operator" / "Dockerfile", "trainer": IMAGES / "trainer" / "Dockerfile"}
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PINS = {canonicalize_name(Requirement(d).name): Requirement(d) for d in PYPROJECT["project"]["dependencies"]}
HADOLINT = str(Path(sys.executable).parent / "hadolint")


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in dockerfile.read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        buf += line.rstrip("\\").strip() + " " if line.rstrip().endswith("\\") else line.strip()
        if not line.rstrip().endswith("\\"):
            word, _, rest = buf.partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def stages(dockerfile: Path) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions(dockerfile):
        if ins[0] == "FROM":
            result.append([])
        result[-1].append(ins)
    return result


def requirements(name: str) -> list[Requirement]:
    lines = (IMAGES / name / "requirements.txt").read_text().splitlines()
    return [Requirement(ln) for ln in lines if ln.strip() and not ln.startswith("#")]


# ------------------------------------------------------------------------------------------- hadolint
@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_hadolint_finds_nothing(image):
    proc = subprocess.run([HADOLINT, "--format", "json", str(DOCKERFILES[image])], capture_output=True, text=True)
    assert json.loads(proc.stdout or "[]") == [], proc.stdout
    assert proc.returncode == 0


def test_hadolint_does_flag_a_careless_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nENV AWS_SECRET_ACCESS_KEY=x\n")
    proc = subprocess.run([HADOLINT, "--format", "json", str(bad)], capture_output=True, text=True)
    codes = {f["code"] for f in json.loads(proc.stdout)}
    assert {"DL3007", "DL3013", "DL3042"} <= codes, codes
    assert proc.returncode != 0


# ------------------------------------------------------------------------------- bases, stages, user
@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_multi_stage_with_pinned_bases(image):
    st = stages(DOCKERFILES[image])
    assert len(st) >= 2, "multi-stage: a build stage and a slim final stage"
    for stage in st:
        base = stage[0][1].split()[0]
        assert "$" not in base, f"base image from a variable: {base}"
        name, _, tag = base.partition(":")
        assert tag and tag != "latest" and re.search(r"\d+\.\d+", tag), f"{base} is not pinned to a version"
    final = st[-1]
    assert any(ins == "COPY" and args.startswith("--from=") for ins, args in final), (
        "final stage takes only build output"
    )


def test_operator_base_is_the_python_the_project_supports():
    bases = {s[0][1].split()[0] for s in stages(DOCKERFILES["operator"])}
    (base,) = bases
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+", base), base
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"


def test_trainer_base_is_ray_at_the_pinned_version_with_cuda():
    ray_pin = PINS["ray"]
    (version,) = [s.version for s in ray_pin.specifier if s.operator == "=="]
    for stage in stages(DOCKERFILES["trainer"]):
        base = stage[0][1].split()[0]
        assert re.fullmatch(rf"rayproject/ray:{re.escape(version)}-py311-cu12\d", base), base


def final_user(image: str) -> tuple[int, int]:
    users = [args for ins, args in stages(DOCKERFILES[image])[-1] if ins == "USER"]
    assert users, f"{image}: the final stage sets no USER (it would run as root)"
    m = re.fullmatch(r"(\d+)(?::(\d+))?", users[-1])
    assert m, f"{image}: USER {users[-1]!r} is not numeric (runAsNonRoot cannot verify a name)"
    return int(m.group(1)), int(m.group(2) or 0)


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_images_run_as_non_root_with_a_numeric_uid(image):
    uid, gid = final_user(image)
    assert uid != 0
    # Nothing after USER switches back to root.
    final = stages(DOCKERFILES[image])[-1]
    last_user = max(i for i, (ins, _) in enumerate(final) if ins == "USER")
    assert not [a for ins, a in final[last_user + 1 :] if ins == "USER"]


def test_operator_image_user_is_the_charts_run_as_user():
    from support.helm import one, render

    uid, gid = final_user("operator")
    pod = one(render(), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == uid
    assert pod["securityContext"]["runAsGroup"] == gid
    assert pod["containers"][0]["securityContext"]["runAsUser"] == uid


# ------------------------------------------------------------------------------------------------ pins
@pytest.mark.parametrize("image", ["operator", "trainer"])
def test_image_requirements_carry_pyprojects_exact_pins(image):
    for req in requirements(image):
        key = canonicalize_name(req.name)
        assert key in PINS, f"{image} installs {req.name}, which is not a trainkit dependency"
        assert str(req.specifier) == str(PINS[key].specifier), f"{req} != pyproject's {PINS[key]}"
        assert req.extras == PINS[key].extras, f"{req}: extras differ from pyproject's {PINS[key]}"


def test_trainer_installs_every_dependency_and_a_cuda_torch_within_the_pin():
    listed = {canonicalize_name(r.name) for r in requirements("trainer")}
    assert listed == set(PINS) - {"torch"}, set(PINS) ^ (listed | {"torch"})
    run = " ".join(args for ins, args in stages(DOCKERFILES["trainer"])[-1] if ins == "RUN")
    torch_pins = set(re.findall(r"torch==([0-9][0-9.]*)", run))
    assert len(torch_pins) == 1, torch_pins
    (torch_version,) = torch_pins
    assert PINS["torch"].specifier.contains(torch_version), f"torch {torch_version} outside pyproject's {PINS['torch']}"
    assert re.search(r"--index-url https://download\.pytorch\.org/whl/cu12\d torch==", run), (
        "torch must be a CUDA build"
    )
    assert "-r /home/ray/requirements.txt" in run
    assert "--no-deps /home/ray/wheels/trainkit-" in run


def test_operator_installs_trainkit_without_its_training_dependencies():
    run = " ".join(args for ins, args in stages(DOCKERFILES["operator"])[0] if ins == "RUN")
    assert "-r /src/requirements.txt" in run and "--no-deps /src" in run
    listed = {canonicalize_name(r.name) for r in requirements("operator")}
    assert not listed & {"torch", "ray", "transformers", "lm-eval", "pyarrow"}


def test_ray_version_agrees_everywhere():
    """pyproject's ray pin = the trainer base image = the RayJob's rayVersion (chart default, operator default)."""
    from trainkit_operator.config import OperatorConfig

    (version,) = [s.version for s in PINS["ray"].specifier if s.operator == "=="]
    values = yaml.safe_load((REPO / "charts" / "trainkit" / "values.yaml").read_text())
    assert values["trainer"]["rayVersion"] == version
    assert OperatorConfig().ray_version == version


BLOCKER = r"""
import importlib.abc, importlib.metadata as md, sys
allowed = set(sys.argv[1].split(","))
owners = md.packages_distributions()
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in sys.stdlib_module_names or top in ("trainkit", "trainkit_operator", "_distutils_hack"):
            return None
        dists = {d.lower().replace("_", "-") for d in owners.get(top, [])}
        if dists and not dists & allowed:
            raise ModuleNotFoundError(f"{name} (from {sorted(dists)}) is not in the operator image", name=name)
        return None
sys.meta_path.insert(0, Block())
import pkgutil, importlib, trainkit_operator
for m in pkgutil.iter_modules(trainkit_operator.__path__):
    importlib.import_module("trainkit_operator." + m.name)
import s3fs  # trainkit.storage imports it lazily, for s3:// URIs
from trainkit_operator.config import OperatorConfig
from trainkit_operator import builders
print("imported", len(sys.modules))
"""


def _closure(names: set[str]) -> set[str]:
    """The given distributions and everything they require (markers evaluated, no extras)."""
    from importlib import metadata

    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def test_operator_imports_with_nothing_but_its_image_requirements():
    allowed = _closure({r.name for r in requirements("operator")})
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKER, ",".join(sorted(allowed))],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "imported" in proc.stdout


def test_the_import_blocker_does_block():
    """Without s3fs in the allowed set the same script fails: the check above has teeth."""
    allowed = _closure({r.name for r in requirements("operator")} - {"s3fs"}) - {"s3fs"}
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKER, ",".join(sorted(allowed))],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode != 0 and "s3fs" in proc.stderr and "not in the operator image" in proc.stderr


# ----------------------------------------------------------------------------------------- .dockerignore
def _pattern_regex(pattern: str) -> re.Pattern:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regular expression."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def dockerignored(path: str, lines: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent directories decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for raw in lines:
        raw = raw.strip()
        if not raw or raw.startswith("#"):
            continue
        negate = raw.startswith("!")
        pat = _pattern_regex(raw.lstrip("!").strip("/"))
        if any(pat.match(p) for p in prefixes):
            excluded = not negate
    return excluded


def test_dockerignore_lets_in_exactly_what_the_dockerfiles_copy():
    lines = (REPO / ".dockerignore").read_text().splitlines()
    copied = []
    for df in DOCKERFILES.values():
        for ins, args in instructions(df):
            if ins == "COPY" and "--from=" not in args:
                srcs = [a for a in args.split() if not a.startswith("--")][:-1]
                copied += [s.rstrip("/") for s in srcs]
    assert copied
    for src in copied:
        assert not dockerignored(src, lines), f"{src} is COPYed but .dockerignore excludes it"
        assert (REPO / src).exists(), src
    for inside in ("python/trainkit/spec/models.py", "operator/trainkit_operator/wiring.py"):
        assert not dockerignored(inside, lines)
    for outside in (
        ".venv/bin/python",
        ".git/config",
        "tests/conftest.py",
        "charts/trainkit/values.yaml",
        "python/trainkit/__pycache__/cli.cpython-311.pyc",
        "trainkit.egg-info/PKG-INFO",
        ".env",
        "operator/.env",
        "python/.aws/credentials",
        "demo-data/x.parquet",
        "runs/a/progress.json",
    ):
        assert dockerignored(outside, lines), f"{outside} would reach the build context"


def test_rayjob_manifests_in_jobs_run_the_trainer_image_at_its_ray_version():
    """RayJobs shipped in jobs/ (e.g. the seed datasets' prepare job) use the image built here, at the
    chart's default tag, with the Ray version the image carries."""
    chart = yaml.safe_load((REPO / "charts" / "trainkit" / "Chart.yaml").read_text())
    values = yaml.safe_load((REPO / "charts" / "trainkit" / "values.yaml").read_text())
    image = f"{values['trainer']['image']['repository']}:{chart['appVersion']}"
    (ray_version,) = [s.version for s in PINS["ray"].specifier if s.operator == "=="]
    found = 0
    for path in sorted((REPO / "jobs").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "RayJob":
                continue
            found += 1
            cs = doc["spec"]["rayClusterSpec"]
            assert cs["rayVersion"] == ray_version, path.name
            pods = [cs["headGroupSpec"]["template"]] + [g["template"] for g in cs.get("workerGroupSpecs", [])]
            for pod in pods:
                for c in pod["spec"]["containers"]:
                    assert c["image"] == image, (path.name, c["image"])
    assert found, "no RayJob manifests in jobs/"
