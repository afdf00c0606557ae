"""`trainkit bench sweep` (packed proxies vs one Ray cluster each).

The fast tests check what the bench compares: both peers train the very same proxy specs (only the output
differs), the packed peer gives each proxy 1/K of the pod, and the figures it prints. The run itself starts
a Ray cluster per proxy and per pack (~1-2 min for 2 proxies on an idle 2-core machine), so it is opt-in:
TRAINKIT_BENCH_SWEEP=1. Speed is reported by the bench, never asserted."""

from __future__ import annotations

import json
import os

import pytest

from trainkit.bench.sweep import ONE_EACH, PACKED, mixtures, proxy_spec, sweep_figures
from trainkit.spec import parse_spec
from trainkit.spec.packing import PackMember, TrainingPack, pack_document, packed_share

URIS = {"web": "s3://bench/shards/web", "manuals": "s3://bench/shards/manuals", "edu": "s3://bench/shards/edu"}


def test_both_peers_train_the_same_valid_proxies_and_the_pack_gives_each_a_kth_of_the_pod():
    weights = mixtures(4)
    assert len(set(weights)) == 4 and all(abs(sum(w) - 1) < 1e-3 for w in weights)
    single = proxy_spec(URIS, weights[1], 10, "s3://bench/single/proxy-001", 2.0)
    packed = proxy_spec(URIS, weights[1], 10, "s3://bench/packed/proxy-001", 2.0)
    spec, _ = parse_spec(single)
    assert spec.data.total_tokens == 10 * 8 * 128 and spec.resources.cpus_per_worker == 2.0
    assert {**single, "output": None} == {**packed, "output": None}
    doc = pack_document("bench-p000", "default", [PackMember(name="proxy-001", spec=packed)], packed_share(2.0, 0, 4))
    pack = TrainingPack.model_validate(doc)
    assert pack.spec.worker_share["CPU"] == 0.5


def test_the_figures_are_proxies_per_hour_and_their_ratio():
    figures = sweep_figures(
        {ONE_EACH: 120.0, PACKED: 40.0}, proxies=8, steps=20, runs_per_cluster=4, packs=2, same=True
    )
    assert figures["proxies_per_hour"] == {ONE_EACH: 240.0, PACKED: 720.0}
    assert figures["ratio_packed_vs_one_each"] == 3.0
    assert figures["ray_clusters"] == {ONE_EACH: 8, PACKED: 2}


@pytest.mark.benchmark
@pytest.mark.skipif(os.environ.get("TRAINKIT_BENCH_SWEEP") != "1", reason="opt-in: TRAINKIT_BENCH_SWEEP=1 (docstring)")
def test_bench_sweep_runs_both_peers_on_the_same_proxies(tmp_path, capsys):
    from trainkit.cli import main

    out = tmp_path / "sweep.json"
    argv = ["bench", "sweep", "--proxies", "2", "--pack", "2", "--steps", "4", "--work", str(tmp_path / "w")]
    assert main([*argv, "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["same_training_data"] is True and figures["ray_clusters"] == {ONE_EACH: 2, PACKED: 1}
    assert figures["ratio_packed_vs_one_each"] > 0
    assert "packed / one cluster each" in capsys.readouterr().out
