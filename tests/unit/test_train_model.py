"""GPT-2 from presets: parameter counts agree with the plan, overrides and dropout apply."""

from trainkit.model import ModelConfig, build_model, gpt2_config, trainable_parameters
from trainkit.spec.models import ModelSpec
from trainkit.spec.plan import parameter_count


def test_tiny_matches_the_plan_and_dropout_is_set():
    spec = ModelSpec.model_validate({"preset": "tiny", "overrides": {"nLayer": 3}})
    model = build_model(ModelConfig.from_spec(spec, dropout=0.1))
    assert model.config.n_layer == 3 and len(model.transformer.h) == 3
    assert trainable_parameters(model) == parameter_count(spec.architecture())
    assert model.config.resid_pdrop == model.config.attn_pdrop == model.config.embd_pdrop == 0.1
    assert model.lm_head.weight is model.transformer.wte.weight


def test_seed_preset_config_is_the_model_card():
    cfg = gpt2_config(ModelConfig.from_spec(ModelSpec(preset="gpt2-70m")))
    assert (cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.n_positions, cfg.vocab_size) == (12, 512, 8, 1024, 50257)
    assert parameter_count(ModelSpec(preset="gpt2-70m").architecture()) == 64_085_504


def test_attention_goes_through_pytorch_sdpa():
    """SDPA: flash / memory-efficient kernels on a GPU (bf16), the fused path on CPU; never the eager matmuls."""
    model = build_model(ModelConfig.from_spec(ModelSpec(preset="tiny")))
    assert model.config._attn_implementation == "sdpa"
