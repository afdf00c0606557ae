"""The memory-fit estimate: plain arithmetic, reachable from `trainkit validate --explain`."""

import pytest

from trainkit.spec import derive_plan, load_run
from trainkit.spec.explain import explain
from trainkit.spec.models import TrainingRunSpec
from trainkit.spec.memory import GiB, MemoryFitError, check_fits, estimate_memory, parse_quantity


def spec_with(training=None, **resources):
    run = load_run("jobs/quickstart.yaml")
    doc = run.spec.model_dump(by_alias=True, exclude_none=True)
    doc["resources"].update(resources)
    doc["training"].update(training or {})
    return TrainingRunSpec.model_validate(doc)


def test_quantities():
    assert parse_quantity("4Gi") == 4 * GiB
    assert parse_quantity("512Mi") == 512 * 2**20
    assert parse_quantity("8G") == 8_000_000_000
    with pytest.raises(ValueError):
        parse_quantity("4GB")


def test_state_scales_with_parameters_and_logits_with_batch():
    spec = spec_with()
    plan = derive_plan(spec)
    est = estimate_memory(spec, plan)
    assert est.weights == 4 * plan.parameters and est.optimizer == 8 * plan.parameters
    assert est.logits == 3 * 4 * 8 * 128 * 50257
    assert est.ddp_buckets == 0
    two = spec_with(training={"microBatchSize": 4}, workers=2)
    assert estimate_memory(two, derive_plan(two)).ddp_buckets == 4 * plan.parameters


def test_quickstart_fits_and_small_memory_is_refused_with_the_fields_named():
    spec = spec_with()
    check_fits(spec, derive_plan(spec))
    small = spec_with(memoryPerWorker="1Gi")
    with pytest.raises(MemoryFitError) as e:
        check_fits(small, derive_plan(small))
    msg = str(e.value)
    assert "resources.memoryPerWorker 1Gi" in msg and "training.microBatchSize" in msg and "data.seqLength" in msg


def test_gpu_runs_check_the_gpu_when_its_size_is_known():
    run = load_run("jobs/gpt2-70m-50-30-20.yaml")
    plan = derive_plan(run.spec)
    est = check_fits(run.spec, plan, device_memory=80 * GiB)
    assert 20 * GiB < est.device_bytes < 60 * GiB
    with pytest.raises(MemoryFitError, match="GPU memory"):
        check_fits(run.spec, plan, device_memory=16 * GiB)


def test_explain_shows_the_estimate():
    run = load_run("jobs/quickstart.yaml")
    plan = derive_plan(run.spec)
    assert "memory/worker" in explain(run, plan, [0] * len(plan.sources))


def test_fsdp_shards_weights_gradients_and_optimizer_over_workers():
    from trainkit.spec import derive_plan, load_run
    from trainkit.spec.memory import estimate_memory

    spec = load_run("jobs/gpt2-70m-50-30-20.yaml").spec
    ddp = estimate_memory(spec, derive_plan(spec))
    doc = spec.model_dump(mode="json", by_alias=True)
    doc["resources"]["workers"], doc["training"]["microBatchSize"] = 4, 6
    doc["training"]["parallelism"] = "fsdp"
    from trainkit.spec import parse_spec

    fsdp_spec, plan = parse_spec(doc)
    fsdp = estimate_memory(fsdp_spec, plan)
    assert fsdp.optimizer < ddp.optimizer / 3.9  # AdamW state split over 4 workers
    assert fsdp.weights < ddp.weights / 3 and fsdp.ddp_buckets == 0
