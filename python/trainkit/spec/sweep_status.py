"""The TrainingSweep status the operator writes: run counts, the leaderboard and the best run."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from trainkit.spec.status import Condition, StatusModel

SweepPhase = Literal["Pending", "Running", "Succeeded", "Failed"]
# The status carries the best rows only, so it stays a few KB whatever the sweep's size (an object must stay
# below etcd's 1.5 MiB request limit); the whole leaderboard is in object storage (`fullLeaderboard.uri`).
STATUS_LEADERBOARD_ROWS = 20


class RunCounts(StatusModel):
    total: Annotated[int, Field(ge=0)] = 0
    created: Annotated[int, Field(ge=0)] = 0
    active: Annotated[int, Field(ge=0)] = 0
    succeeded: Annotated[int, Field(ge=0)] = 0
    failed: Annotated[int, Field(ge=0)] = 0


class LeaderboardRow(StatusModel):
    run: str
    weights: dict[str, float] = {}
    phase: str = "Pending"
    loss: float | None = None
    eval_average: float | None = None
    value: float | None = Field(None, description="The value of the sweep's rankBy metric")
    rank: Annotated[int, Field(ge=1)] | None = None


class BestRun(StatusModel):
    run: str
    metric: str
    value: float


class FullLeaderboard(StatusModel):
    """Where the operator keeps the whole leaderboard (every run, ranked) in the sweep's object storage."""

    uri: str | None = None
    rows: Annotated[int, Field(ge=0)] = 0
    digest: str | None = Field(None, description="Of the rows last written: a changed leaderboard is written again")
    written_at: str | None = None
    message: str | None = Field(None, description="Why it could not be written, when it could not")


class PackCounts(StatusModel):
    """Packed runs (spec.packing): packs of runsPerCluster runs, one RayJob each."""

    runs_per_cluster: Annotated[int, Field(ge=1)]
    total: Annotated[int, Field(ge=0)] = 0
    created: Annotated[int, Field(ge=0)] = 0


class TrainingSweepStatus(StatusModel):
    phase: SweepPhase = "Pending"
    message: str | None = None
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    runs: RunCounts | None = None
    leaderboard: Annotated[
        list[LeaderboardRow],
        Field(max_length=STATUS_LEADERBOARD_ROWS, description="The best rows; every run's in fullLeaderboard.uri"),
    ] = []
    full_leaderboard: FullLeaderboard | None = None
    packs: PackCounts | None = None
    best: BestRun | None = None
    conditions: list[Condition] = []
