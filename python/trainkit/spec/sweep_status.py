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


# ------------------------------------------------------------------ mixture search (trainkit.spec.search)
MAX_SHOWN_REASONS = 5
MAX_REASON_CHARS = 500


class RecommendationStatus(StatusModel):
    """The current recommended mixture, as `trainkit.mixture.recommend` fitted it on the finished runs."""

    weights: dict[str, float] = {}
    predicted: float | None = Field(None, description="The rankBy metric the chosen model predicts there")
    model: str | None = Field(None, description="The model chosen by cross-validation (linear, quadratic, gbt)")
    cv_spearman: float | None = Field(
        None, description="k-fold cross-validated Spearman rank correlation of the chosen model on the sweep's runs"
    )
    cv_interval: list[float] | None = Field(None, description="Bootstrap 5%-95% of cvSpearman")
    runs: Annotated[int, Field(ge=0)] = 0
    trusted: bool = False
    reasons: list[str] = Field([], description="Why it is not trusted (empty when trusted)")
    nearest_run: str | None = None
    nearest_distance: float | None = Field(None, description="Total-variation distance to the nearest tried mixture")


class RoundStatus(StatusModel):
    round: Annotated[int, Field(ge=1)]
    runs: Annotated[int, Field(ge=0)] = Field(0, description="Runs the fit after this round used")
    model: str | None = None
    cv_spearman: float | None = None
    moved: float | None = Field(None, description="Total-variation distance the recommendation moved in this round")


class SearchStatus(StatusModel):
    round: Annotated[int, Field(ge=1)] = Field(1, description="The round now running or last finished (1-based)")
    rounds: Annotated[int, Field(ge=1)] = Field(1, description="Rounds at most (spec.search.rounds)")
    stopped: str | None = Field(None, description="Why the search ended")
    recommendation: RecommendationStatus | None = None
    history: list[RoundStatus] = []


class ConfirmationStatus(StatusModel):
    run: str
    phase: str = "Pending"
    weights: dict[str, float] = {}
    predicted: float | None = Field(None, description="The proxies' model's prediction at this mixture")
    value: float | None = Field(None, description="The rankBy metric the confirmation run measured")
    rank_among_proxies: Annotated[int, Field(ge=1)] | None = Field(
        None, description="Where value would rank among the proxies' values (1: better than every proxy)"
    )
    proxies: Annotated[int, Field(ge=0)] = 0


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
    search: SearchStatus | None = None
    confirmation: ConfirmationStatus | None = None
    prior_tokens: dict[str, int] | None = Field(
        None, description="Each source's token count the natural prior was built from (read once, then kept)"
    )
