"""cast_seg's position embedding follows the `init_from` run: from its config.json (DeiT:
learned table, MoCo: sin-cos) or its checkpoint's `pos_embed` shape; explicit values that
disagree fail naming the field and the source's value (no compiled forward)."""
import importlib
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from jhseg.tasks import cast_deit
from jhseg.tasks import cast_seg
from jhseg.train import checkpointing, run_config

configs = importlib.import_module("experiments.configs.cast_seg")
deit_configs = importlib.import_module("experiments.configs.cast_deit")
moco_configs = importlib.import_module("experiments.configs.cast")


def _tiny(config):
  config.model.dim, config.model.num_heads = 16, 2
  config.model.depths, config.model.num_clusters = (1, 1), (4, 2)
  return config


def _write_config(workdir, config):
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / run_config.CONFIG_FILE).write_text(json.dumps(run_config.as_json(config)))
  return str(workdir)


def _seg_config(init_from):
  config = _tiny(configs.get_config("tiny"))
  del config["init_from"]  # a str field in the engine's defaults
  config.init_from = init_from
  return config


def _save(workdir, state):
  checkpointer = checkpointing.Checkpointer(str(workdir),
                                            ml_collections.ConfigDict({"async": False}))
  checkpointer.save(1, state, {"step": 1})
  checkpointer.close()


def test_follows_a_deit_run_config_and_loads_its_table(tmp_path):
  deit_config = _tiny(deit_configs.get_config("tiny"))
  assert (deit_config.model.position_embedding, deit_config.model.position_grid) == (
      "learned", 8)
  deit = nnx.eval_shape(lambda: cast_deit.CASTDeiT(deit_config).make_model(nnx.Rngs(0)))
  state = jax.tree.map(lambda x: jnp.ones(x.shape, x.dtype)
                       if not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
                       else jax.random.key(0), nnx.state((deit,)))
  _save(tmp_path / "deit", state)
  source = _write_config(tmp_path / "deit", deit_config)
  seg_config = _seg_config(configs.encoder_from_run(source))
  assert seg_config.model.position_embedding is None  # unset: follow the source
  task = cast_seg.CASTSegmentation(seg_config)
  assert (task.cast_config.position_embedding, task.cast_config.position_grid) == ("learned", 8)
  # written into the config, so the run's config.json records the model
  assert (seg_config.model.position_embedding, seg_config.model.position_grid) == ("learned", 8)
  segmenter = nnx.eval_shape(lambda: task.make_model(nnx.Rngs(1)))
  assert segmenter.encoder.pos_embed.shape == (1, 1 + 64, 16)
  target = jax.tree.map(lambda x: jax.random.key(3)
                        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
                        else jnp.zeros(x.shape, x.dtype), nnx.state(segmenter))
  params, missing, unused = checkpointing.load_params_from(
      source, target, prefixes=seg_config.init_from.prefixes, with_unused=True)
  assert missing == [] and all(n.startswith("encoder/head/") for n in unused)
  loaded = params["encoder"]["pos_embed"]
  np.testing.assert_array_equal(np.asarray(jax.tree.leaves(loaded)[0]), 1.0)


def test_follows_a_moco_run_config_sincos(tmp_path):
  source = _write_config(tmp_path / "moco", _tiny(moco_configs.get_config("tiny")))
  seg_config = _seg_config(source)  # a plain path: every variable by its own name
  task = cast_seg.CASTSegmentation(seg_config)
  assert task.cast_config.position_embedding == "sincos"
  assert seg_config.model.position_grid is None  # no table: the grid stays unset
  assert nnx.eval_shape(lambda: task.make_model(nnx.Rngs(0))).encoder.pos_embed is None


def test_explicit_values_that_disagree_fail_naming_field_and_value(tmp_path):
  deit = _write_config(tmp_path / "deit", _tiny(deit_configs.get_config("tiny")))
  config = _seg_config(configs.encoder_from_run(deit))
  config.model.position_grid = 28
  with pytest.raises(ValueError, match=r"config.model.position_grid=28, but the config."
                     r"init_from run has 8 \(.*config.json"):
    cast_seg.CASTSegmentation(config)
  moco = _write_config(tmp_path / "moco", _tiny(moco_configs.get_config("tiny")))
  config = _seg_config(moco)
  config.model.position_embedding = "learned"
  with pytest.raises(ValueError, match="config.model.position_embedding='learned'.*'sincos'"):
    cast_seg.CASTSegmentation(config)
  config = _seg_config(configs.encoder_from_run(deit))
  config.model.position_embedding, config.model.position_grid = "learned", 8  # agrees
  assert cast_seg.CASTSegmentation(config).cast_config.position_grid == 8


def test_checkpoint_without_config_json_uses_the_table_shape(tmp_path):
  table = {"0": {"encoder": {"pos_embed": {"value": np.zeros((1, 1 + 36, 16), np.float32)}},
                 "ema_encoder": {"pos_embed": {"value": np.zeros((1, 5, 16), np.float32)}}},
           "1": {"mu": {"encoder": {"pos_embed": {"value": np.zeros((1, 5, 16))}}}}}
  _save(tmp_path / "run", table)
  for init_from in (str(tmp_path / "run"), str(tmp_path / "run" / "checkpoints" / "1" /
                                                "state")):
    fields, where = cast_seg.source_position_embedding(init_from)
    assert fields == {"position_embedding": "learned", "position_grid": 6}
    assert "encoder/pos_embed" in where
  # Through a prefix map the source's own prefix is read: ema_encoder/ has 4 cells.
  fields, _ = cast_seg.source_position_embedding(
      {"workdir": str(tmp_path / "run"), "prefixes": {"ema_encoder/": "encoder/"}})
  assert fields == {"position_embedding": "learned", "position_grid": 2}
  _save(tmp_path / "plain", {"0": {"encoder": {"cls_token": {"value": np.zeros((1, 1, 4))}}}})
  assert cast_seg.source_position_embedding(str(tmp_path / "plain"))[0] == {
      "position_embedding": "sincos"}
  _save(tmp_path / "odd", {"0": {"encoder": {"pos_embed": {"value": np.zeros((1, 6, 4))}}}})
  with pytest.raises(ValueError, match="5 grid cells is not a square"):
    cast_seg.source_position_embedding(str(tmp_path / "odd"))


def test_a_missing_source_fails_only_when_a_field_is_unset(tmp_path):
  gone = str(tmp_path / "gone")
  with pytest.raises(FileNotFoundError, match="config.init_from='.*gone'"):
    cast_seg.CASTSegmentation(_seg_config(gone))
  config = _seg_config(gone)  # e.g. jhseg.infer on a run whose source was deleted
  config.model.position_embedding, config.model.position_grid = "learned", 8
  assert cast_seg.CASTSegmentation(config).cast_config.position_grid == 8
  config = _seg_config(gone)
  config.model.position_embedding = "sincos"
  assert cast_seg.CASTSegmentation(config).cast_config.position_embedding == "sincos"
  assert cast_seg.CASTSegmentation(_seg_config("")).cast_config.position_embedding == "sincos"
