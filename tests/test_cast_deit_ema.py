"""CAST DeiT's model EMA: the recurrence through the engine's train step, the trainable set,
evaluation on the EMA weights, the checkpoint round trip and the config checks."""
import importlib
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jhseg.tasks import cast_deit
from jhseg.train import checkpointing, loop, optim

configs = importlib.import_module("experiments.configs.cast_deit")

DECAY = 0.75  # far from 1 so that k = 3 updates move the EMA measurably


def _config(decay=DECAY, use_ema=False):
  config = configs.get_config("tiny")
  config.model.dim, config.model.num_heads = 16, 2
  config.model.depths, config.model.num_clusters = (1,), (3,)
  config.data.augment.crop_size = 32
  config.model.position_grid = 4
  config.model.superpixels.num_superpixels = 16
  config.model.drop_path_rate = 0.0
  config.model.ema_decay = decay
  config.eval.use_ema = use_ema
  config.loss.mixing.mix_prob = 0.0  # plain label-smoothed cross-entropy: fewer ops
  config.optim.warmup_steps = 0
  config.num_train_steps = 3
  return config


def _batch(size=2):
  rng = np.random.default_rng(0)
  cells = (np.arange(32)[:, None] // 8) * 4 + np.arange(32)[None, :] // 8  # 4x4 grid, 16 ids
  return {"image": jnp.asarray(rng.normal(size=(size, 32, 32, 3)), jnp.float32),
          "superpixels": jnp.asarray(np.broadcast_to(cells, (size, 32, 32)), jnp.int32),
          "segment_mask": jnp.ones((size, 16), bool),
          "label": jnp.arange(size, dtype=jnp.int32) % 5}


def _averaged(module):
  return jax.tree.map(np.array,
                      nnx.state(module, nnx.Any(nnx.Param, nnx.BatchStat)).to_pure_dict())


@pytest.fixture(scope="module")
def trained():
  """Three engine train steps with EMA: the online encoder after each step and the state."""
  config = _config()
  task = cast_deit.CASTDeiT(config)
  graphdef, state, wrt = loop.build_state(task, config, config.num_train_steps)
  model, _ = nnx.merge(graphdef, state)
  initial = _averaged(model.encoder)
  # timm's ModelEma starts as a copy of the initialised model
  jax.tree.map(np.testing.assert_array_equal, initial, _averaged(model.ema_encoder))
  step_fn = jax.jit(loop.make_train_step(graphdef, task, wrt=wrt, seed=0, total_steps=3))
  online = []
  for step in (1, 2, 3):
    state, _ = step_fn(state, _batch(), np.int32(step), np.float32(1.0))
    online.append(_averaged(nnx.merge(graphdef, state)[0].encoder))
  return types.SimpleNamespace(task=task, graphdef=graphdef, state=state, initial=initial,
                               online=online, wrt=wrt)


def test_ema_follows_the_recurrence_after_each_update(trained):
  expected = trained.initial
  for theta in trained.online:  # ema_k = d ema_{k-1} + (1 - d) theta_k, in float64
    expected = jax.tree.map(lambda e, t: DECAY * np.float64(e) + (1 - DECAY) * t,
                            expected, theta)
  model, _ = nnx.merge(trained.graphdef, trained.state)
  got = _averaged(model.ema_encoder)
  jax.tree.map(lambda g, e: np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6), got,
               expected)
  # The online weights really moved (else the recurrence above would be trivial), and the
  # EMA is strictly between the initial and the online weights for the head.
  moved = np.abs(trained.online[-1]["head"]["kernel"]
                 - trained.initial["head"]["kernel"]).max()
  assert moved > 1e-4
  assert np.abs(got["head"]["kernel"] - trained.online[-1]["head"]["kernel"]
                ).max() > 1e-5


def test_ema_copy_is_outside_the_gradient_and_the_optimizer(trained):
  model, optimizer = nnx.merge(trained.graphdef, trained.state)
  trained_names = {optim.parameter_name(p) for p, _ in
                   jax.tree_util.tree_flatten_with_path(nnx.state(model, trained.wrt))[0]}
  assert trained_names and not any(n.startswith("ema_encoder/") for n in trained_names)
  assert any(n.startswith("encoder/head/") for n in trained_names)
  opt_names = {optim.parameter_name(p) for p, _ in
               jax.tree_util.tree_flatten_with_path(nnx.state(optimizer))[0]}
  assert not any("ema_encoder" in n for n in opt_names)


def test_checkpoint_round_trip_keeps_the_ema(trained, tmp_path):
  checkpointer = checkpointing.Checkpointer(str(tmp_path), {})
  checkpointer.save(3, trained.state, {"step": 3})
  checkpointer.close()
  task = trained.task
  _, fresh, _ = loop.build_state(task, task.config, 3)  # another initial state as template
  restored, meta = checkpointing.Checkpointer(str(tmp_path), {}).restore(fresh)
  assert meta["step"] == 3
  want = _averaged(nnx.merge(trained.graphdef, trained.state)[0].ema_encoder)
  got = _averaged(nnx.merge(trained.graphdef, restored)[0].ema_encoder)
  jax.tree.map(np.testing.assert_array_equal, got, want)
  # and it differs from a fresh model's EMA, so the comparison is not vacuous
  assert np.abs(got["head"]["kernel"]
                - _averaged(nnx.merge(trained.graphdef, fresh)[0].ema_encoder)["head"]
                ["kernel"]).max() > 1e-5


class _Context:
  """The part of EvalContext that `evaluate_classification` uses."""

  def __init__(self, batch, out_dir):
    self._batch, self.out_dir, self.name, self.step = batch, str(out_dir), "classification", 1

  def batches(self):
    yield self._batch


def test_evaluation_runs_on_the_ema_weights_only_when_asked(tmp_path):
  batch = {**_batch(4), "example_mask": jnp.ones((4,), bool)}
  batch["label"] = jnp.full((4,), 2, jnp.int32)
  task = cast_deit.CASTDeiT(_config(use_ema=True))
  model = task.make_model(nnx.Rngs(0))
  model.eval()
  # The online head always predicts class 4 (wrong), the EMA head class 2 (right).
  model.encoder.head.bias[...] = jnp.asarray([0, 0, 0, 0, 1e4], jnp.float32)
  model.ema_encoder.head.kernel[...] = jnp.zeros_like(model.ema_encoder.head.kernel[...])
  model.ema_encoder.head.bias[...] = jnp.asarray([0, 0, 1e4, 0, 0], jnp.float32)
  scalars = task.evaluations()["classification"].run(model, _Context(batch, tmp_path))
  assert scalars["top1"] == 1.0 and scalars["loss"] < 1e-3
  online = np.asarray(task._logits(model, batch["image"], batch["superpixels"],
                                   batch["segment_mask"]))
  assert (online.argmax(-1) == 4).all()  # the model itself would score top-1 0
  # Every evaluation of the task is wrapped; without use_ema none is.
  plain_task = cast_deit.CASTDeiT(_config())
  plain = plain_task.evaluations()
  assert set(task.evaluations()) == set(plain)
  assert plain["classification"].run == plain_task.evaluate_classification
  on_ema = [e.run.__qualname__.startswith("CASTDeiT._on_ema") for e in plain.values()]
  assert not any(on_ema)
  assert all(e.run.__qualname__.startswith("CASTDeiT._on_ema")
             for e in task.evaluations().values())


def test_ema_config_checks():
  with pytest.raises(ValueError, match="config.model.ema_decay"):
    cast_deit.CASTDeiT(_config(decay=1.0))
  with pytest.raises(ValueError, match="use_ema"):
    cast_deit.CASTDeiT(_config(decay=0.0, use_ema=True))
  task = cast_deit.CASTDeiT(_config(decay=0.0))
  assert nnx.eval_shape(lambda: task.make_model(nnx.Rngs(0))).ema_encoder is None
  assert configs.get_config("imagenet").model.ema_decay == 0.99996
  assert not configs.get_config("imagenet").eval.use_ema
  assert configs.get_config("tiny").model.ema_decay == 0.0
