"""Each architecture owns its config: the `model` section of a config holds exactly the
fields of its arch's config dataclass, every config file's model section builds, and a key
the arch does not declare is refused (never dropped) with the closest key it has.

Classifier configs (configs/arena_classifier.py): the `classify` job reads the
`classifier` section, never `model`; their `model` section is the schema's default GPT,
which the job refuses to have set and which builds like any other.
"""

import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import pytest
from flax import nnx

from llmjax import models
from llmjax.cli import common as cli_common
from llmjax.config import docs as config_docs
from llmjax.config import load as config_load
from llmjax.config import schema as config_schema
from llmjax.config import validate as config_validate
from llmjax.experiments import arch_compare
from llmjax.models import conv_attention, gpt, progressive
from llmjax.util import errors

NOTES_SIZES = (None, "large", "cpu", "cpu_bpe", "smoke")
# Every config file and its variants (from each file's get_config).
VARIANTS = {
  "arch_compare.py": (None, "original", "matched", "cpu", "smoke"),
  "arena_classifier.py": (None, "smoke", "run1", "original", "deberta-v3,frozen", "set1"),
  "blank_notes.py": NOTES_SIZES,
  "book.py": (None, "cpu", "smoke"),
  "book_finetune.py": (None, "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "smoke"),
  "conv_attention.py": (None, "cpu", "smoke"),
  "no_notes.py": NOTES_SIZES,
  "notes_experiment.py": NOTES_SIZES,
  "notes_richness.py": (None, "cpu", "czech", "polish", "smoke"),
  "post_notes.py": NOTES_SIZES,
  "pre_notes.py": NOTES_SIZES,
  "progressive.py": (None, "cpu", "smoke"),
  "shakespeare.py": (None, "cpu", "smoke"),
  "wikitext2.py": (None, "cpu", "smoke"),
}
SPECS = [f"configs/{f}:{v}" if v else f"configs/{f}" for f, vs in VARIANTS.items() for v in vs]
ARCH_OF = {"arch_compare.py": "progressive", "conv_attention.py": "conv_attention"}
ARCH_OF["progressive.py"] = "progressive"
MODULES = {"gpt": gpt.GPT, "conv_attention": conv_attention.ConvAttention}
MODULES["progressive"] = progressive.ProgressiveGPT


def test_every_config_file_is_listed():
  assert sorted(p.name for p in pathlib.Path("configs").glob("*.py")) == sorted(VARIANTS)


@pytest.mark.parametrize("spec", SPECS)
def test_every_config_variant_builds_its_model_section(spec):
  config = config_load.load_config(spec)
  arch = ARCH_OF.get(pathlib.Path(spec.partition(":")[0]).name, "gpt")
  assert config.model.arch == arch
  assert sorted(config.model) == sorted(["arch", *models.keys(arch)])
  # Shapes only: the GPU variants hold up to 1.5B parameters.
  model = nnx.eval_shape(lambda: models.build(config.model, 0))
  assert type(model) is MODULES[arch]
  if spec.endswith(":smoke") and config.job != "classify":  # Small: build it for real.
    built = models.build(config.model, 0)
    logits = jax.eval_shape(built, jax.ShapeDtypeStruct((1, 8), jnp.int32))
    assert logits.shape == (1, 8, config.model.vocab_size)


def test_each_arch_section_holds_exactly_its_own_fields():
  gpt_keys = list(config_schema.base_config().model)
  conv_keys = list(config_schema.base_config("conv_attention").model)
  prog_keys = list(config_schema.base_config("progressive").model)
  assert "fan_in" in conv_keys and "fan_in" not in gpt_keys + prog_keys
  assert "target_offset" in conv_keys and "target_offset" not in gpt_keys
  assert {"init_from", "scan_layers"} <= set(gpt_keys) and "init_from" not in prog_keys
  assert {"stage_groups", "lora_rank"} <= set(prog_keys) and "stage_groups" not in gpt_keys
  assert "n_layer" not in conv_keys  # Its depth is 4 * n_levels blocks.
  assert "stage_groups" not in config_schema.schema(("progressive",)).progressive
  assert "lora" not in config_schema.OPTIONAL_SECTIONS
  assert models.defaults("gpt")["dtype"] == "float32"


def test_help_shows_each_model_key_with_its_field_comment():
  conv = config_load.load_config("configs/conv_attention.py:smoke")
  text = config_docs.help_text(conv, "configs/conv_attention.py")
  line = next(x for x in text.splitlines() if x.strip().startswith("model.fan_in "))
  assert line.split("  ")[-1].strip() == "Positions merged per compression step."
  gpt_text = config_docs.help_text(config_load.load_config("configs/shakespeare.py:smoke"))
  assert "model.fan_in" not in gpt_text and "model.init_from" in gpt_text
  for arch in models.REGISTRY:
    assert sorted(models.comments(arch)) == sorted(models.keys(arch)), arch


def fan_in_message(closest="attention"):
  return (
    "model.fan_in is not a key of model.arch='gpt' (a key of conv_attention only). "
    f"The closest it has is 'model.{closest}'. List every key with --config_help."
  )


def test_a_key_the_arch_does_not_declare_is_refused_naming_the_closest_key():
  config = config_load.load_config("configs/shakespeare.py:smoke")
  with pytest.raises(errors.ConfigError) as e:
    cli_common.check_config_flags(
      ["--config=configs/shakespeare.py:smoke", "--config.model.fan_in=4"]
    )
  assert str(e.value) == fan_in_message()
  with pytest.raises(errors.ConfigError) as e:
    config_load.apply_overrides(ml_collections.ConfigDict(config.to_dict()), {"model__fan_in": 4})
  assert str(e.value) == fan_in_message()
  config = config.unlock()
  config.model.fan_in = 4  # Set inside a config file.
  with pytest.raises(errors.ConfigError) as e:
    config_validate.validate(config)
  assert str(e.value) == fan_in_message()
  with pytest.raises(errors.ConfigError) as e:
    models.build(config.model, 0)
  assert str(e.value) == fan_in_message()


def test_unknown_keys_given_to_a_model_config_are_refused_not_dropped():
  section = {"arch": "conv_attention", "n_embd": 16, "n_head": 2, "n_layr": 2}
  with pytest.raises(errors.ConfigError, match=r"^model.n_layr is not a key of model.arch="):
    models.build(section, 0)
  with pytest.raises(errors.ConfigError, match="closest it has is 'model.n_layer'"):
    gpt.GPTConfig.from_config({"n_layr": 2})
  with pytest.raises(errors.ConfigError, match="model.scan_layers is not a key of model.arch="):
    progressive.ProgressiveConfig.from_config({"scan_layers": False})  # Blocks are shared.
  with pytest.raises(errors.ConfigError, match=r"model.scan_layers .*\(a key of gpt only\)"):
    models.model_config({"arch": "progressive", "scan_layers": False})
  config = config_schema.base_config()
  config.model.arch = "rnn"
  with pytest.raises(errors.ConfigError, match="Unknown model.arch='rnn'; available: "):
    config_validate.validate(config)


def test_progressive_structure_is_in_its_model_section():
  config = config_load.load_config("configs/progressive.py:smoke")
  assert tuple(config.model.stage_groups) == (1, 2, 4) and config.model.lora_rank == 4
  assert list(config.progressive) == ["stage_fractions"]
  assert len(models.build(config.model, 0).h) == 4  # stage 0 = the last stage.
  section = ml_collections.ConfigDict(config.model.to_dict())
  section.stage = 1
  first = models.build(section, 0)
  assert (
    len(first.h) == 1 and "lora_qkv_a" not in nnx.to_pure_dict(nnx.state(first))["h"][0]["attn"]
  )
  config = config.unlock()
  config.model.stage_groups = (1, 2)
  with pytest.raises(errors.ConfigError, match="model.stage_groups=.*progressive.stage_fractions"):
    config_validate.validate(config)
  config.model.stage_groups = (1, 3, 4)
  with pytest.raises(errors.ConfigError, match=r"model.stage_groups=\(1, 3, 4\) must each divide"):
    config_validate.validate(config)


def test_arch_compare_rows_get_their_own_arch_sections():
  config = config_load.load_config("configs/arch_compare.py:smoke")
  by_arch = {r.arch: arch_compare.run_config(config, r) for r in arch_compare.parse_rows(config)}
  for arch, rc in by_arch.items():
    assert sorted(rc.model) == sorted(["arch", *models.keys(arch)])
    config_validate.validate(rc)
  assert (by_arch["gpt"].model.n_layer, by_arch["gpt"].model.n_embd) == (4, 16)
  conv = by_arch["conv_attention"].model
  assert (conv.n_embd, conv.block_size, conv.fan_in, conv.target_offset) == (8, 64, 2, 8)
