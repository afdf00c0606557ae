"""The TrainingSweep status the operator writes: run counts, the leaderboard and the best run."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from trainkit.spec.status import Condition, StatusModel

SweepPhase = Literal["Pending", "Running", "Succeeded", "Failed"]


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


class TrainingSweepStatus(StatusModel):
    phase: SweepPhase = "Pending"
    message: str | None = None
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    runs: RunCounts | None = None
    leaderboard: list[LeaderboardRow] = []
    best: BestRun | None = None
    conditions: list[Condition] = []
