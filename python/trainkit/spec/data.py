"""The TrainingData spec and status: a prepared, content-addressed token dataset as a custom resource.

A TrainingData names raw text (object-store, local or `hf://datasets/ORG/NAME[@revision]` inputs), the
tokenizer and an optional document filter. Those, and nothing else, decide the shards: `content_hash`
hashes them, and the shards live at `<output.uri>/<hash>/` (`resolved_uri`). So two TrainingData for the
same thing share one prepared copy, and a second one is Ready as soon as the first one's index.json is.

The hash covers the spec's *names* of its inputs and tokenizer, not their bytes: an `hf://` input
without `@revision` follows the branch `main` by name (pin a revision for reproducible shards); the
index.json written under the hash records the tokenizer's real fingerprint, which a run checks.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from trainkit.spec.models import (
    DNS1123_LABEL,
    QUANTITY,
    SpecModel,
    StorageSpec,
    check_uri,
    object_name,
)
from trainkit.spec.status import Condition

MAX_DATA_NAME_LENGTH = 35  # its prepare RayJob is "data-NAME": within the 40 a run may have (see models.py)
MAX_INPUTS = 64
HASH_LENGTH = 16  # hex characters of the content hash in the shard path (64 bits: no accidental collision)
CONTENT_HASH_VERSION = 1  # bump when what the hash covers changes
HF_TOKEN_KEY = "HF_TOKEN"  # the key read from spec.hfTokenSecret
# Progress is counted in finished input files: one file of a few GB takes minutes per core, and a Ray cluster's
# first image pull minutes more. Like a Deployment's progressDeadlineSeconds, exceeding it only says so.
DEFAULT_PROGRESS_DEADLINE_SECONDS = 1800
# hf://datasets/ORG/NAME, optional @revision, optional /path inside the repo (a folder or one file).
HF_INPUT = re.compile(
    r"^hf://datasets/(?P<repo>[A-Za-z0-9][-A-Za-z0-9_.]*/[A-Za-z0-9][-A-Za-z0-9_.]*)"
    r"(@(?P<revision>[A-Za-z0-9][-A-Za-z0-9_./]*?))?(?P<path>/[^@]*)?$"
)
INPUT_SCHEMES = ("s3://", "gs://", "gcs://", "file://", "hf://")
COLUMN_NAME = r"^[A-Za-z_][A-Za-z0-9_.-]*$"

# A prepared source's layout (trainkit.data.shards re-exports these): `index.json` written last is the
# commit marker; `prepare-progress.json` is kept by the prepare job (files done, tokens, documents; the
# error when it fails) for the operator's status.
SHARD_FORMAT = "trainkit-tokens-v1"
INDEX_FILE = "index.json"
PROGRESS_FILE = "prepare-progress.json"


def index_training_tokens(doc: object) -> int | None:
    """A prepared source's training tokens (held-out split excluded) from its index.json document:
    `totalTokens`, which `trainkit prepare` writes as the sum of the training shards' tokens (the count
    trainkit.data.shards.ShardIndex.total_tokens reads). None when the document is not such an index."""
    if not isinstance(doc, dict) or doc.get("format") != SHARD_FORMAT:
        return None
    total = doc.get("totalTokens")
    return total if isinstance(total, int) and not isinstance(total, bool) and total > 0 else None


def check_input(value: str, field: str) -> str:
    """s3://, gs://, file://, a local path, or hf://datasets/ORG/NAME[@revision][/path]."""
    if value.startswith("hf://"):
        if not HF_INPUT.fullmatch(value):
            raise ValueError(
                f"{field}: '{value}' is not hf://datasets/ORG/NAME[@revision][/path] "
                "(only dataset repositories can be prepared)"
            )
        return value
    if value.startswith(("gs://", "gcs://")):
        bucket = value.split("://", 1)[1].split("/", 1)[0]
        if "@" in bucket or ":" in bucket or not bucket:
            raise ValueError(f"{field}: '{value}' has no valid bucket (and must not carry credentials)")
        return value
    if "://" in value and not value.startswith(INPUT_SCHEMES):
        scheme = value.split("://", 1)[0]
        raise ValueError(f"unknown URI scheme '{scheme}://' in {field}; use s3://, gs://, file://, hf:// or a path")
    return check_uri(value, field)


class DataFilterSpec(SpecModel):
    min_length: Annotated[int, Field(ge=0, le=10_000_000, description="Drop documents shorter (characters)")] = 0
    language_field: (
        Annotated[str, Field(min_length=1, max_length=128, pattern=COLUMN_NAME, description="Column/field")] | None
    ) = None
    language: (
        Annotated[str, Field(min_length=1, max_length=64, description="Keep documents with this value")] | None
    ) = None
    dedup: Literal["none", "exact"] = Field(
        "none", description="exact: drop a document whose text hash was seen before in the same input file"
    )

    @model_validator(mode="after")
    def language_pair(self):
        if (self.language_field is None) != (self.language is None):
            raise ValueError("set filter.languageField and filter.language together")
        return self

    @property
    def active(self) -> bool:
        return bool(self.min_length or self.language_field or self.dedup != "none")


class DataOutputSpec(SpecModel):
    uri: Annotated[
        str,
        Field(min_length=1, max_length=1024, description="Base URI: the shards go to <uri>/<content hash>/"),
    ]

    @field_validator("uri")
    @classmethod
    def known_scheme(cls, v: str) -> str:
        return check_uri(v, "output.uri")


class PrepareResourcesSpec(SpecModel):
    workers: Annotated[int, Field(ge=1, le=1024)] = 1
    cpus_per_worker: Annotated[float, Field(gt=0, le=1024)] = 4
    memory_per_worker: Annotated[str, Field(pattern=QUANTITY)] = "8Gi"
    head_cpus: Annotated[float, Field(gt=0, le=1024)] = 1
    head_memory: Annotated[str, Field(pattern=QUANTITY)] = "4Gi"
    image: Annotated[str, Field(min_length=1, max_length=1024)] | None = None


class TrainingDataSpec(SpecModel):
    inputs: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=1024)]],
        Field(min_length=1, max_length=MAX_INPUTS, description="Raw text: parquet or jsonl files or folders"),
    ]
    text_column: Annotated[str, Field(min_length=1, max_length=128, pattern=COLUMN_NAME)] = "text"
    tokenizer: Annotated[
        str, Field(min_length=1, max_length=1024, description="'gpt2' or a folder with vocab.json + merges.txt")
    ] = "gpt2"
    filter: DataFilterSpec = Field(default_factory=DataFilterSpec)
    shard_tokens: Annotated[int, Field(ge=1, le=1 << 30)] = 1 << 24
    output: DataOutputSpec
    storage: StorageSpec = Field(default_factory=StorageSpec)
    hf_token_secret: Annotated[str, Field(pattern=DNS1123_LABEL, max_length=253)] | None = Field(
        None, description="Secret with key HF_TOKEN for private hf:// inputs; never the token itself"
    )
    resources: PrepareResourcesSpec = Field(default_factory=PrepareResourcesSpec)
    progress_deadline_seconds: Annotated[int, Field(ge=1, le=7 * 86400)] = Field(
        DEFAULT_PROGRESS_DEADLINE_SECONDS,
        description="Seconds a prepare may go without finishing another input file (or, first, since its RayJob "
        "was created) before its Progressing condition turns False; it keeps running",
    )

    @field_validator("inputs")
    @classmethod
    def known_inputs(cls, inputs: list[str]) -> list[str]:
        for i, value in enumerate(inputs):
            check_input(value, f"inputs[{i}]")
        if len(set(inputs)) != len(inputs):
            raise ValueError("inputs must not repeat")
        return inputs


class DataMetadata(SpecModel):
    name: Annotated[str, Field(min_length=1)]
    namespace: str | None = None
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}

    @field_validator("name")
    @classmethod
    def dns_label(cls, v: str) -> str:
        return object_name(v, MAX_DATA_NAME_LENGTH, "its prepare RayJob's names derive from it")


class TrainingData(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    api_version: Literal["trainkit.dev/v1alpha1"]
    kind: Literal["TrainingData"]
    metadata: DataMetadata
    spec: TrainingDataSpec
    status: dict | None = None


# ------------------------------------------------------------------------------- content address
def content_key(spec: TrainingDataSpec) -> dict:
    """Everything that decides the shards' bytes, canonical; storage, secrets and resources do not."""
    return {
        "v": CONTENT_HASH_VERSION,
        "inputs": sorted(i.rstrip("/") for i in spec.inputs),
        "textColumn": spec.text_column,
        "tokenizer": spec.tokenizer,
        "filter": spec.filter.model_dump(by_alias=True, mode="json"),
        "shardTokens": spec.shard_tokens,
    }


def content_hash(spec: TrainingDataSpec) -> str:
    canonical = json.dumps(content_key(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:HASH_LENGTH]


def resolved_uri(spec: TrainingDataSpec) -> str:
    """Where the shards and index.json of this content live: `<output.uri>/<content hash>/`."""
    return spec.output.uri.rstrip("/") + "/" + content_hash(spec) + "/"


# ---------------------------------------------------------------------------------------- status
DataPhase = Literal["Pending", "Preparing", "Ready", "Failed"]
DATA_CONDITION_TYPES = ("SpecValid", "Progressing", "Ready", "Failed")
REASON_NO_PROGRESS = "ProgressDeadlineExceeded"  # the Progressing condition's reason past the deadline


class DataStatusModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class DataProgress(DataStatusModel):
    files_done: Annotated[int, Field(ge=0)] = 0
    files_total: Annotated[int, Field(ge=0)] = 0
    tokens: Annotated[int, Field(ge=0)] = 0
    documents: Annotated[int, Field(ge=0)] = 0


class TrainingDataStatus(DataStatusModel):
    phase: DataPhase = "Pending"
    reason: Annotated[str, Field(max_length=128)] | None = None
    message: Annotated[str, Field(max_length=4096)] = ""
    content_hash: Annotated[str, Field(max_length=64)] | None = None
    uri: Annotated[str, Field(max_length=2048)] | None = None
    fingerprint: Annotated[str, Field(max_length=128)] | None = Field(None, description="tokenizer fingerprint")
    total_tokens: Annotated[int, Field(ge=0)] | None = None
    total_documents: Annotated[int, Field(ge=0)] | None = None
    shards: Annotated[int, Field(ge=0)] | None = None
    progress: DataProgress = Field(default_factory=DataProgress)
    last_progress_time: str | None = Field(
        None, description="when the operator last saw the progress counts change (first: when it created the RayJob)"
    )
    ray_job_name: Annotated[str, Field(max_length=253)] | None = None
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    conditions: Annotated[list[Condition], Field(max_length=16)] = []
