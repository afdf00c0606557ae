"""Packed proxy runs: K runs of a sweep trained at once in ONE Ray cluster (one RayJob, one Kueue admission).

A proxy of ~1M parameters leaves a GPU idle, and a RegMix-sized sweep of 512 runs as 512 RayJobs means 512 Ray
clusters and 512 Kueue admissions (~10 a minute per ClusterQueue on large clusters: kueue#14477). With
`spec.packing.runsPerCluster: K` a sweep's runs are grouped, in index order, into packs of K: pack p holds runs
[p*K, (p+1)*K). Each run keeps its own TrainingRun, output prefix, progress, checkpoints, eval and owner.json;
only the Ray cluster is shared.

This module owns the pack's contracts, all pure:
- which runs form which pack (`pack_members`) and the pack's name (`pack_name`: `<sweep>-pNNN`);
- each run's share of a pack's worker pod (`packed_share`): 1/K of its CPUs and GPUs, what Ray Train's
  `ScalingConfig(resources_per_worker=...)` asks for, so K trainings fit one pod;
- the pack document (`TrainingPack`): what the pack's ConfigMap holds and `python -m trainkit.jobs.pack` reads:
  for each member its name, namespace, uid and validated spec.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from trainkit.spec.memory import GiB, HEADROOM, estimate_memory, parse_quantity
from trainkit.spec.models import DNS1123_LABEL, MAX_RUN_NAME_LENGTH, SpecModel
from trainkit.spec.plan import derive_plan

# Packs are `<sweep>-pNNN`: one character more than a run's `-NNN`, so a packing sweep's name is one shorter.
PACK_SUFFIX_LENGTH = len("-p000")
MAX_PACKING_SWEEP_NAME_LENGTH = MAX_RUN_NAME_LENGTH - PACK_SUFFIX_LENGTH
# A pack's ConfigMap holds every member's spec (a few KB each) and stays far below ConfigMap's 1 MiB.
MAX_RUNS_PER_CLUSTER = 64


class PackingSpec(SpecModel):
    runs_per_cluster: Annotated[
        int,
        Field(
            ge=2,
            le=MAX_RUNS_PER_CLUSTER,
            description="Runs trained at once in one Ray cluster (one RayJob): each gets 1/K of every worker "
            "pod's CPUs, GPUs and memory (the template's resources describe the shared pods)",
        ),
    ]


def pack_name(sweep_name: str, pack: int) -> str:
    return f"{sweep_name}-p{pack:03d}"


def pack_of(run_index: int, runs_per_cluster: int) -> int:
    return run_index // runs_per_cluster


def pack_members(total_runs: int, runs_per_cluster: int) -> list[range]:
    """Run indices of each pack, in order: [0, K), [K, 2K), ...; the last pack may be smaller."""
    return [range(start, min(start + runs_per_cluster, total_runs)) for start in range(0, total_runs, runs_per_cluster)]


def packed_share(cpus_per_worker: float, gpus_per_worker: int, runs_per_cluster: int) -> dict[str, float]:
    """Ray resources of one packed run's worker: 1/K of the pod's CPUs and GPUs (rounded down to Ray's
    granularity of 1e-4, so K shares never add up to more than the pod has)."""
    share = {"CPU": _floor4(cpus_per_worker / runs_per_cluster)}
    if gpus_per_worker:
        share["GPU"] = _floor4(gpus_per_worker / runs_per_cluster)
    return share


def _floor4(x: float) -> float:
    return int(x * 10_000) / 10_000


def packing_problems(template, runs_per_cluster: int) -> list[str]:
    """Why this template cannot be packed K to a cluster (pure; [] when it can). `template` is the sweep's
    TrainingRunSpec."""
    k = runs_per_cluster
    r = template.resources
    problems = []
    gpu_share = r.gpus_per_worker / k
    if r.gpus_per_worker and gpu_share > 1 and not float(gpu_share).is_integer():
        # Ray takes a GPU share below 1 or a whole number of GPUs, nothing in between.
        problems.append(
            f"packing.runsPerCluster {k}: template.resources.gpusPerWorker {r.gpus_per_worker} / {k} = "
            f"{gpu_share:g} GPUs per packed run; Ray needs a fraction below 1 or a whole number"
        )
    if r.cpus_per_worker / k < 1e-4:
        problems.append(
            f"packing.runsPerCluster {k}: template.resources.cpusPerWorker {r.cpus_per_worker:g} is too small to share"
        )
    for field, src in template.data.shard_fields("template.data"):
        if src.uri is None:
            problems.append(
                f"{field} ({src.name}): a packed run needs shards by uri; sources naming a "
                "TrainingData (dataset) are resolved per run and cannot be packed"
            )
    if not problems:
        problems += _memory_share_problems(template, k)
    return problems


def _memory_share_problems(template, k: int) -> list[str]:
    """Each packed run gets 1/K of memoryPerWorker: the memory estimate must fit that share."""
    try:
        plan = derive_plan(template)
    except ValueError:
        return []  # the template's own validation reports it
    need = estimate_memory(template, plan).worker_bytes
    limit = parse_quantity(template.resources.memory_per_worker)
    if need <= HEADROOM * limit / k:
        return []
    return [
        f"packing.runsPerCluster {k}: each packed run gets 1/{k} of template.resources.memoryPerWorker "
        f"{template.resources.memory_per_worker} ({limit / k / GiB:.2f} GiB) but needs about {need / GiB:.2f} GiB; "
        "pack fewer runs per cluster or raise memoryPerWorker"
    ]


# --------------------------------------------------------------------------------- the pack document
class PackModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class PackMember(PackModel):
    name: Annotated[str, Field(min_length=1, max_length=MAX_RUN_NAME_LENGTH)]
    namespace: Annotated[str, Field(pattern=DNS1123_LABEL, max_length=63)] = "default"
    uid: Annotated[str, Field(max_length=128)] = Field("", description="the TrainingRun's uid: the owner of its output")
    # Kept as data here and validated per member by the pack's driver: one bad member must fail alone.
    spec: dict


class PackSpec(PackModel):
    runs: Annotated[list[PackMember], Field(min_length=1, max_length=MAX_RUNS_PER_CLUSTER)]
    worker_share: dict[str, float] = Field(description="Ray resources of each member's workers (packed_share)")

    @field_validator("runs")
    @classmethod
    def unique_names(cls, runs: list[PackMember]) -> list[PackMember]:
        names = [m.name for m in runs]
        if len(set(names)) != len(names):
            raise ValueError("pack members must have distinct names")
        return runs


class PackMetadata(PackModel):
    name: Annotated[str, Field(min_length=1, max_length=MAX_RUN_NAME_LENGTH)]
    namespace: str = "default"


class TrainingPack(PackModel):
    """The pack's spec file (`/etc/trainkit/spec.json` in its pods): written by the operator, read by
    `python -m trainkit.jobs.pack`."""

    api_version: Literal["trainkit.dev/v1alpha1"] = "trainkit.dev/v1alpha1"
    kind: Literal["TrainingPack"] = "TrainingPack"
    metadata: PackMetadata
    spec: PackSpec


def pack_document(name: str, namespace: str, members: list[PackMember], worker_share: dict[str, float]) -> dict:
    """The pack document as JSON-ready data (camelCase), as the ConfigMap carries it."""
    doc = TrainingPack(
        metadata=PackMetadata(name=name, namespace=namespace),
        spec=PackSpec(runs=members, worker_share=worker_share),
    )
    return doc.model_dump(by_alias=True, mode="json")
