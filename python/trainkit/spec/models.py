"""The TrainingRun spec: the single source of truth for run.yaml, the CRD and the trainer.

YAML fields are camelCase (the Kubernetes convention); Python attributes are snake_case.
Every model forbids unknown fields, so a typo is an error rather than a silently ignored setting.
Cross-field rules live here as validators *and* in `CEL_RULES` (see `trainkit.spec.crd`), so the
API server rejects the same mistakes `trainkit validate` does.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from trainkit.spec.presets import MODEL_PRESETS, resolved_architecture
from trainkit.spec.ranking import MEAN_NAME

API_GROUP = "trainkit.dev"
API_VERSION = "v1alpha1"
TRAINING_RUN_API_VERSION = f"{API_GROUP}/{API_VERSION}"

# RayJob, RayCluster and Service names are derived from the run's name; KubeRay appends up to
# ~20 characters (`-raycluster-xxxxx-head-svc`) and Services must be DNS-1035 labels (<= 63,
# starting with a letter). 40 keeps every derived name and label value legal.
MAX_RUN_NAME_LENGTH = 40
DNS1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"


def object_name(v: str, max_length: int, why: str) -> str:
    """An object name from which child names derive: a DNS-1035 label of at most `max_length` characters."""
    if len(v) > max_length:
        raise ValueError(f"'{v}' is {len(v)} characters; at most {max_length}, because {why}")
    if not re.fullmatch(DNS1035_LABEL, v):
        raise ValueError(
            f"'{v}' is not a DNS-1035 label (lower-case letters, digits and '-', starting with a letter, "
            "ending with a letter or digit)"
        )
    return v


DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SOURCE_NAME = r"^[a-z0-9]([-_a-z0-9]*[a-z0-9])?$"
QUANTITY = r"^([0-9]+(\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E|m)?$"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
URI_SCHEMES = ("s3://", "file://")

# Field names and env-var names that carry secrets. Credentials come from a Secret named in
# `storage.credentialsSecret` (or an env var's `secretKeyRef`), never from the spec (which is stored in etcd,
# logs and status). Long words anywhere in a name; short ones (DB_PASS, HF_AUTH, WANDB_API_KEY's KEY) as words.
CREDENTIAL_WORDS = re.compile(
    r"(secret|passw(or)?d|passphrase|token|access[-_]?key|api[-_]?key|credential|private[-_]?key"
    r"|(^|_)(pass|pwd|key|auth|dsn)(_|$))",
    re.I,
)
# Env var names the operator sets (storage endpoint, region and credentials; the run's identity and spec) and every
# other AWS_* the SDK reads (AWS_ENDPOINT_URL_S3, AWS_PROFILE, AWS_CONTAINER_CREDENTIALS_FULL_URI, ...): a run's
# env may not set them, so its reads go where the operator sends them, with the key the operator gives them.
RESERVED_ENV_PREFIXES = ("AWS_", "TRAINKIT_")


def reserved_env_name(name: str) -> bool:
    return name.upper().startswith(RESERVED_ENV_PREFIXES)


class SpecModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        validate_default=True,
        # Strict: "0.5" is not a weight and "yes" is not a bool; YAML types are what the API server sees.
        strict=True,
    )


def check_uri(value: str, field: str) -> str:
    """Object-store or local URI: s3://bucket/prefix, file:///path, or a plain local path."""
    if "://" in value and not value.startswith(URI_SCHEMES):
        scheme = value.split("://", 1)[0]
        raise ValueError(f"unknown URI scheme '{scheme}://' in {field}; use s3://, file:// or a local path")
    if value.startswith("s3://"):
        bucket = value[5:].split("/", 1)[0]
        if "@" in bucket or ":" in bucket:
            raise ValueError(f"{field} must not carry credentials; name a Secret in storage.credentialsSecret")
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
            raise ValueError(f"'{bucket}' in {field} is not a valid S3 bucket name")
    return value


# ----------------------------------------------------------------------------------------- model
class GPT2Overrides(SpecModel):
    """GPT2Config fields a run may change on top of its preset."""

    n_layer: Annotated[int, Field(ge=1, le=256)] | None = None
    n_embd: Annotated[int, Field(ge=8, le=16384)] | None = None
    n_head: Annotated[int, Field(ge=1, le=256)] | None = None
    n_positions: Annotated[int, Field(ge=8, le=131072)] | None = None
    vocab_size: Annotated[int, Field(ge=2, le=1_000_000)] | None = None
    n_inner: Annotated[int, Field(ge=8)] | None = None
    activation_function: Literal["gelu_new", "gelu", "relu", "silu", "gelu_pytorch_tanh"] | None = None
    layer_norm_epsilon: Annotated[float, Field(gt=0, lt=1)] | None = None
    initializer_range: Annotated[float, Field(gt=0, lt=1)] | None = None
    tie_word_embeddings: bool | None = None

    @model_validator(mode="after")
    def heads_divide_width(self):
        if self.n_embd is not None and self.n_head is not None and self.n_embd % self.n_head:
            raise ValueError(f"nEmbd ({self.n_embd}) must be divisible by nHead ({self.n_head})")
        return self


class ModelSpec(SpecModel):
    preset: Literal["tiny", "gpt2-70m", "gpt2-124m"] = "gpt2-70m"
    overrides: GPT2Overrides = Field(default_factory=GPT2Overrides)

    def architecture(self) -> dict:
        return resolved_architecture(self.preset, self.overrides.model_dump(exclude_none=True))

    @model_validator(mode="after")
    def heads_divide_resolved_width(self):
        arch = self.architecture()
        if arch["n_embd"] % arch["n_head"]:
            raise ValueError(
                f"hidden size {arch['n_embd']} is not divisible by {arch['n_head']} heads "
                f"(preset {self.preset} with overrides)"
            )
        return self


# ------------------------------------------------------------------------------------------ data
# At most this many sources in a mixture. Every list and map a CEL rule walks needs a bound: the API server
# costs a rule at the largest size the schema allows and refuses a CRD whose rules could cost too much.
MAX_SOURCES = 64


MAX_VALIDATION_TARGETS = 16


class ShardsRef(SpecModel):
    """Prepared token shards by name: a uri, or a TrainingData the operator resolves to one."""

    name: Annotated[str, Field(min_length=1, max_length=63, pattern=SOURCE_NAME)]
    uri: (
        Annotated[
            str,
            Field(
                min_length=1,
                max_length=1024,
                description="Token shards of this source (output of `trainkit prepare`); with `dataset`, the "
                "operator fills it with the TrainingData's shard URI",
            ),
        ]
        | None
    ) = None
    dataset: (
        Annotated[
            str,
            Field(
                min_length=1,
                max_length=63,
                pattern=DNS1035_LABEL,
                description="A TrainingData in the run's namespace: the run waits until it is Ready, then reads its shards",
            ),
        ]
        | None
    ) = None
    fingerprint: Annotated[str, Field(max_length=128)] | None = Field(
        None, description="Tokenizer fingerprint of the TrainingData's shards (recorded by the operator)"
    )

    @field_validator("uri")
    @classmethod
    def known_scheme(cls, v: str | None) -> str | None:
        return v if v is None else check_uri(v, "uri")

    @field_validator("name")
    @classmethod
    def not_reserved(cls, v: str) -> str:
        if v == MEAN_NAME:
            raise ValueError(f"'{MEAN_NAME}' is reserved: val.{MEAN_NAME} is the mean over the sources")
        return v

    @model_validator(mode="after")
    def uri_or_dataset(self):
        if self.uri is None and self.dataset is None:
            raise ValueError(f"source '{self.name}': set uri (prepared shards) or dataset (a TrainingData's name)")
        return self

    @property
    def shards_uri(self) -> str:
        """The shards' URI once the run has one (the operator resolves `dataset` before the run starts)."""
        if self.uri is None:
            raise ValueError(f"source '{self.name}': TrainingData {self.dataset!r} is not resolved to a uri yet")
        return self.uri


class SourceSpec(ShardsRef):
    weight: Annotated[float, Field(gt=0, le=1e6, description="Token proportion, normalised over all sources")]


class ValidationTarget(ShardsRef):
    """A prepared source the run does not train on, whose held-out split it still measures: a downstream
    domain, or (in a sweep) a template source this mixture leaves out."""

    count_in_mean: bool = Field(
        False,
        description="Count this target in validation `mean` as if it were a source (sweeps set it for template "
        "sources a mixture leaves out, so every proxy's val.mean covers the same sources)",
    )


class DataSpec(SpecModel):
    seq_length: Annotated[int, Field(ge=8, le=131072)] = 1024
    total_tokens: Annotated[int, Field(ge=1, le=10**15)]
    sources: Annotated[list[SourceSpec], Field(min_length=1, max_length=MAX_SOURCES)]
    shard_format: Literal["trainkit-tokens-v1"] = "trainkit-tokens-v1"
    when_exhausted: Literal["fail", "repeat"] = Field(
        "fail",
        description="A source with fewer tokens than its share: fail before training starts, or repeat it in a new permutation",
    )

    validation_targets: Annotated[list[ValidationTarget], Field(max_length=MAX_VALIDATION_TARGETS)] = Field(
        [],
        description="Prepared sources not trained on whose held-out loss is measured beside the sources' "
        "(rankable as val.<name>)",
    )

    @field_validator("sources")
    @classmethod
    def unique_names(cls, sources: list[SourceSpec]) -> list[SourceSpec]:
        seen: set[str] = set()
        for s in sources:
            if s.name in seen:
                raise ValueError(f"duplicate source name '{s.name}'")
            seen.add(s.name)
        return sources

    @model_validator(mode="after")
    def targets_named_apart(self):
        seen = {s.name for s in self.sources}
        for t in self.validation_targets:
            if t.name in seen:
                raise ValueError(
                    f"validationTargets: duplicate name '{t.name}' (a source or another target has it; "
                    "val.<name> must name one set)"
                )
            seen.add(t.name)
        return self

    def held_out_sets(self) -> list[ShardsRef]:
        """Every set whose held-out split a run measures: the sources, then the validation targets."""
        return [*self.sources, *self.validation_targets]

    def shard_fields(self, prefix: str) -> list[tuple[str, ShardsRef]]:
        """(field path under `prefix`, ref) of every set a run reads shards of, for messages that name it."""
        return [(f"{prefix}.sources[{i}]", s) for i, s in enumerate(self.sources)] + [
            (f"{prefix}.validationTargets[{i}]", t) for i, t in enumerate(self.validation_targets)
        ]


# -------------------------------------------------------------------------------------- training
class LearningRateSpec(SpecModel):
    peak: Annotated[float, Field(gt=0, le=10)] = 5e-4
    final: Annotated[float, Field(ge=0, le=10)] = 5e-5
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: Annotated[int, Field(ge=0)] | None = None
    warmup_fraction: Annotated[float, Field(ge=0, lt=1)] | None = None

    @model_validator(mode="after")
    def consistent(self):
        if self.final > self.peak:
            raise ValueError(f"final learning rate {self.final} is above the peak {self.peak}")
        if self.warmup_steps is not None and self.warmup_fraction is not None:
            raise ValueError("set warmupSteps or warmupFraction, not both")
        return self


class OptimizerSpec(SpecModel):
    name: Literal["adamw"] = "adamw"
    betas: Annotated[list[Annotated[float, Field(ge=0, lt=1)]], Field(min_length=2, max_length=2)] = [0.9, 0.95]
    eps: Annotated[float, Field(gt=0, lt=1)] = 1e-8
    weight_decay: Annotated[float, Field(ge=0, le=1)] = 0.1
    fused: bool | None = Field(None, description="Fused AdamW kernel; default: on when training on GPU")


class TrainingSpec(SpecModel):
    micro_batch_size: Annotated[int, Field(ge=1, le=65536)]
    global_batch_size: Annotated[int, Field(ge=1, le=1 << 24)]
    learning_rate: LearningRateSpec = Field(default_factory=LearningRateSpec)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    gradient_clipping: Annotated[float, Field(ge=0, description="Max global grad norm; 0 turns clipping off")] = 1.0
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    compile: bool | None = Field(
        None,
        description="torch.compile the model; default: on when training on GPU (CUDA), off on CPU (where compiling "
        "costs more than it gains for the small models CPU runs are for)",
    )
    parallelism: Literal["ddp", "fsdp"] = Field(
        "ddp",
        description="ddp: a model replica per worker; fsdp: parameters, gradients and optimizer state sharded "
        "over the workers (PyTorch FSDP2), for models that do not fit one GPU",
    )
    log_every_steps: Annotated[int, Field(ge=1)] = 10


class CheckpointSpec(SpecModel):
    every_steps: Annotated[int, Field(ge=1)] = 500
    keep: Annotated[int, Field(ge=1, le=1000)] = 3


# ------------------------------------------------------------------------------------------ eval
class EvalTaskSpec(SpecModel):
    name: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")]
    num_fewshot: Annotated[int, Field(ge=0, le=64)] | None = None
    limit: Annotated[float, Field(gt=0, description="Examples per task: a count (>= 1) or a fraction (< 1)")] | None = (
        None
    )
    path: Annotated[str, Field(min_length=1, description="Folder of local lm-eval task YAMLs")] | None = None


# lm-eval task names of the model card's suite; trainkit.eval holds their settings.
SEED_SUITE_TASKS = ("mmlu", "hellaswag", "arc_challenge", "piqa", "winogrande", "truthfulqa_mc2")


class EvalSpec(SpecModel):
    suite: Literal["seed-suite", "none"] = Field(
        "none", description="seed-suite: MMLU 5-shot, HellaSwag, ARC-Challenge, PIQA, WinoGrande, TruthfulQA MC2"
    )
    tasks: Annotated[list[EvalTaskSpec], Field(max_length=64)] = []
    limit: (
        Annotated[float, Field(gt=0, description="Examples per task for every task without its own limit")] | None
    ) = None
    at_end: bool = True
    every_steps: Annotated[int, Field(ge=1)] | None = None
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 8
    validation_tokens: Annotated[
        int,
        Field(
            ge=0,
            le=1 << 30,
            description="Held-out tokens per source for validation loss at every eval step and at the end "
            "(the source's validation split from `trainkit prepare`); 0: none",
        ),
    ] = 65536

    @field_validator("tasks")
    @classmethod
    def unique_tasks(cls, tasks: list[EvalTaskSpec]) -> list[EvalTaskSpec]:
        names = [t.name for t in tasks]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate eval task(s): {', '.join(sorted(dup))}")
        return tasks


# ------------------------------------------------------------------------------------- resources
class Toleration(SpecModel):
    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: Annotated[int, Field(ge=0)] | None = None


class SecretKeyRef(SpecModel):
    """A key of a Secret in the run's own namespace (Kubernetes resolves it for the pod; the operator never reads it)."""

    name: Annotated[str, Field(min_length=1, max_length=253, pattern=DNS1123_SUBDOMAIN)]
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]


class EnvVar(SpecModel):
    name: Annotated[str, Field(min_length=1, max_length=256, pattern=ENV_NAME)]
    value: Annotated[str, Field(max_length=32768)] = ""
    secret_key_ref: SecretKeyRef | None = Field(
        None, description="Take the value from a key of a Secret in the run's namespace (how credentials are passed)"
    )

    @field_validator("name")
    @classmethod
    def not_the_operators(cls, v: str) -> str:
        if reserved_env_name(v):
            raise ValueError(
                f"env var '{v}': names starting with {' or '.join(RESERVED_ENV_PREFIXES)} are set by the operator "
                "(spec.storage.endpoint, spec.storage.region, spec.storage.credentialsSecret)"
            )
        return v

    @model_validator(mode="after")
    def credentials_only_from_secrets(self) -> "EnvVar":
        if self.secret_key_ref is not None and self.value:
            raise ValueError(f"env var '{self.name}': set value or secretKeyRef, not both")
        if self.secret_key_ref is None and CREDENTIAL_WORDS.search(self.name):
            raise ValueError(
                f"env var '{self.name}' looks like a credential; take it from a Secret in this namespace "
                "(secretKeyRef: {name, key}), never a value in the spec"
            )
        return self


class ResourcesSpec(SpecModel):
    workers: Annotated[int, Field(ge=1, le=4096)] = 1
    gpus_per_worker: Annotated[int, Field(ge=0, le=16)] = 1
    cpus_per_worker: Annotated[float, Field(gt=0, le=1024)] = 8
    memory_per_worker: Annotated[str, Field(pattern=QUANTITY)] = "64Gi"
    head_cpus: Annotated[float, Field(gt=0, le=1024)] = 2
    head_memory: Annotated[str, Field(pattern=QUANTITY)] = "8Gi"
    node_selector: dict[str, str] = {}
    tolerations: list[Toleration] = []
    image: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    image_pull_secrets: list[Annotated[str, Field(pattern=DNS1123_LABEL, max_length=253)]] = []
    env: Annotated[list[EnvVar], Field(max_length=128)] = []


# ------------------------------------------------------------------------ scheduling and storage
class SchedulingSpec(SpecModel):
    queue_name: Annotated[str, Field(pattern=DNS1123_LABEL, max_length=63)] | None = Field(
        None, description="Kueue LocalQueue: forwarded as the kueue.x-k8s.io/queue-name label"
    )
    priority_class_name: Annotated[str, Field(pattern=DNS1123_LABEL, max_length=253)] | None = None
    volcano_queue: Annotated[str, Field(pattern=DNS1123_LABEL, max_length=63)] | None = Field(
        None, description="Gang-schedule through KubeRay's Volcano integration in this queue"
    )
    suspend: bool = False
    backoff_limit: Annotated[int, Field(ge=0, le=100)] = 0
    active_deadline_seconds: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def suspend_is_not_for_queued_runs(self) -> "SchedulingSpec":
        # Kueue owns `suspend` of a RayJob in its queue and sets it to false when it admits the workload:
        # a user's suspend would show the run Suspended while queued and then run it anyway.
        if self.suspend and self.queue_name:
            raise ValueError(
                "suspend cannot be combined with queueName: Kueue unsuspends the RayJob "
                "when it admits it; hold a queued run through Kueue (e.g. the LocalQueue's stopPolicy), or "
                "drop queueName to suspend it yourself"
            )
        return self


class OutputSpec(SpecModel):
    uri: Annotated[str, Field(min_length=1, max_length=1024, description="Where checkpoints, progress and reports go")]

    @field_validator("uri")
    @classmethod
    def known_scheme(cls, v: str) -> str:
        return check_uri(v, "output.uri")


class StorageSpec(SpecModel):
    endpoint: Annotated[str, Field(pattern=r"^https?://[^\s/@]+(/.*)?$", max_length=1024)] | None = Field(
        None, description="S3 endpoint URL (MinIO, Ceph, moto); default: AWS"
    )
    region: Annotated[str, Field(pattern=r"^[a-z0-9-]+$", max_length=64)] | None = None
    credentials_secret: Annotated[str, Field(pattern=DNS1123_LABEL, max_length=253)] | None = Field(
        None, description="Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; never the keys themselves"
    )


class MlflowSpec(SpecModel):
    uri: Annotated[str, Field(pattern=r"^https?://[^\s/@]+(/.*)?$", max_length=1024)] = Field(
        description="MLflow tracking server URL (http or https); never user:password@: credentials come from credentialsSecret"
    )
    experiment: Annotated[str, Field(min_length=1, max_length=256)] = Field(
        "trainkit", description="MLflow experiment (created if absent)"
    )
    credentials_secret: Annotated[str, Field(pattern=DNS1123_LABEL, max_length=253)] | None = Field(
        None,
        description=(
            "Secret in the run's namespace with MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or "
            "MLFLOW_TRACKING_TOKEN, given to the Ray pods as secretKeyRefs; never the values themselves"
        ),
    )
    parent_run_name: Annotated[str, Field(min_length=1, max_length=253)] | None = Field(
        None,
        description="Nest this run under the MLflow run of this name (made if absent); a TrainingSweep sets its own name",
    )


class TrackingSpec(SpecModel):
    tensorboard: bool = Field(
        True, description="TensorBoard event files under <output>/tensorboard/ (written locally, uploaded at log steps)"
    )
    mlflow: MlflowSpec | None = Field(None, description="Also log params and metrics to an MLflow tracking server")


# ---------------------------------------------------------------------------------------- the run
class TrainingRunSpec(SpecModel):
    model: ModelSpec = Field(default_factory=ModelSpec)
    tokenizer: Annotated[
        str, Field(min_length=1, max_length=1024, description="'gpt2' or a folder with vocab.json + merges.txt")
    ] = "gpt2"
    data: DataSpec
    training: TrainingSpec
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    scheduling: SchedulingSpec = Field(default_factory=SchedulingSpec)
    output: OutputSpec
    storage: StorageSpec = Field(default_factory=StorageSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)

    @model_validator(mode="after")
    def cross_field(self):
        context = self.model.architecture()["n_positions"]
        if self.data.seq_length > context:
            raise ValueError(
                f"data.seqLength {self.data.seq_length} is above the model's context {context} "
                f"(model.preset {self.model.preset}; raise model.overrides.nPositions or shorten the sequence)"
            )
        per_step = self.training.micro_batch_size * self.resources.workers
        if self.training.global_batch_size % per_step:
            raise ValueError(
                f"training.globalBatchSize {self.training.global_batch_size} is not divisible by "
                f"training.microBatchSize x resources.workers = {self.training.micro_batch_size} x "
                f"{self.resources.workers} = {per_step}"
            )
        vocab = self.model.architecture()["vocab_size"]
        if self.tokenizer == "gpt2" and vocab < 50257:
            raise ValueError(f"model vocab size {vocab} is smaller than the gpt2 tokenizer's 50257")
        return self


class ObjectMeta(BaseModel):
    # Objects read back from a cluster carry uid, resourceVersion, ...; only these are ours to check.
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: Annotated[str, Field(min_length=1)]
    namespace: Annotated[str, Field(pattern=DNS1123_LABEL, max_length=63)] | None = None
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}

    @field_validator("name")
    @classmethod
    def dns_label(cls, v: str) -> str:
        why = "the RayJob, RayCluster and Service names and label values derived from it must stay within 63"
        return object_name(v, MAX_RUN_NAME_LENGTH, why)


class TrainingRun(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    api_version: Literal["trainkit.dev/v1alpha1"]
    kind: Literal["TrainingRun"]
    metadata: ObjectMeta
    spec: TrainingRunSpec
    # Present when the object is read back from a cluster; validated by the operator, not here.
    status: dict | None = None


def known_preset_contexts() -> dict[str, int]:
    return {name: int(arch["n_positions"]) for name, arch in MODEL_PRESETS.items()}
