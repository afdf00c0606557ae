"""Which checkpoint is resumed from, and which are pruned: pure decisions over a listing."""

from trainkit.train.checkpoint import complete_steps, is_complete, parse_listing, step_dir_name, steps_to_prune


def listing_for(step, files, with_manifest=True):
    d = {f"{step_dir_name(step)}/{k}": v for k, v in files.items()}
    if with_manifest:
        d[f"{step_dir_name(step)}/checkpoint.json"] = 100
    return d


FILES = {"config.json": 10, "model.safetensors": 2000, "trainer/optimizer.pt": 4000, "trainer/state.json": 50}


def test_latest_complete_skips_interrupted_uploads():
    listing = {}
    listing |= listing_for(4, FILES)
    listing |= listing_for(8, FILES)
    listing |= listing_for(12, FILES, with_manifest=False)  # upload cut before the commit marker
    short = dict(FILES, **{"model.safetensors": 1000})       # a listed file only half there
    listing |= listing_for(16, short)
    gone = {k: v for k, v in FILES.items() if k != "trainer/optimizer.pt"}  # a listed file missing
    listing |= listing_for(20, gone)
    manifests = {s: {"step": s, "files": FILES} for s in (4, 8, 16, 20)}
    assert complete_steps(listing, manifests) == [4, 8]


def test_manifest_must_match_its_folder():
    assert is_complete(4, FILES, {"step": 4, "files": FILES})
    assert not is_complete(4, FILES, {"step": 8, "files": FILES})
    assert not is_complete(4, FILES, {"step": 4, "files": {}})
    assert not is_complete(4, FILES, None)


def test_parse_listing_ignores_foreign_names():
    parsed = parse_listing({"step-00000004/a": 1, "step-4/b": 1, "notes.txt": 3, "step-00000008/trainer/x": 2})
    assert parsed == {4: {"a": 1}, 8: {"trainer/x": 2}}


def test_prune_keeps_newest_complete_and_drops_leftovers():
    assert steps_to_prune([4, 8, 12, 16], [4, 8, 16], keep=2) == [4, 12]
    assert steps_to_prune([4], [4], keep=3) == []
    assert steps_to_prune([4, 8], [], keep=1) == [4, 8]


def test_checkpoints_under_eval_are_not_pruned():
    from trainkit.train.checkpoint import steps_to_prune

    assert steps_to_prune([4, 8, 12], [4, 8, 12], keep=1) == [4, 8]
    assert steps_to_prune([4, 8, 12], [4, 8, 12], keep=1, protect=frozenset({4})) == [8]


def test_periodic_eval_due_only_between_start_and_final():
    from trainkit.train.loop import periodic_eval_due

    assert [s for s in range(1, 13) if periodic_eval_due(s, 4, final=s == 12)] == [4, 8]
    assert not any(periodic_eval_due(s, None, final=False) for s in range(1, 13))
