"""Optimizer construction: groups, freezing, phases, accumulation, plateau."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jhseg.train import optim


def config(**fields):
  c = ml_collections.ConfigDict({"name": "sgd", "learning_rate": 0.1, "schedule": "constant"})
  c.update(fields)
  return c


PARAMS = {"encoder": {"conv": {"kernel": jnp.ones(3)}, "last": {"kernel": jnp.ones(2)}},
          "head": {"kernel": jnp.ones(4)}}
GRADS = jax.tree.map(jnp.ones_like, PARAMS)


def one_update(c, *, steps=1, total=100, **extra):
  tx = optim.make_optimizer(c, total)
  state = tx.init(PARAMS)
  out = []
  for _ in range(steps):
    updates, state = tx.update(GRADS, state, PARAMS, **extra)
    out.append(updates)
  return out


def test_plain_sgd_update_is_minus_lr_times_gradient():
  (u,) = one_update(config())
  np.testing.assert_allclose(u["head"]["kernel"], -0.1)


def test_groups_scale_learning_rate_and_frozen_parameters_do_not_move():
  c = config(groups=[ml_collections.ConfigDict({"name": "head", "pattern": "head/.*",
                                                "lr_mults": 10.0})],
             frozen=[r"encoder/conv/.*"])
  (u,) = one_update(c)
  np.testing.assert_allclose(u["head"]["kernel"], -1.0)
  np.testing.assert_allclose(u["encoder"]["last"]["kernel"], -0.1)
  np.testing.assert_allclose(u["encoder"]["conv"]["kernel"], 0.0)
  labels = optim.param_labels(PARAMS, c)
  assert labels == {"encoder": {"conv": {"kernel": "frozen"}, "last": {"kernel": "default"}},
                    "head": {"kernel": "head"}}


def test_phases_switch_multipliers_at_the_boundary():
  # Ultrametric schedule: encoder body frozen in phase 1, everything at 1/10 in phase 2.
  c = config(phase_boundaries=(2,), default_lr_mults=(1.0, 0.1),
             groups=[ml_collections.ConfigDict({"name": "body", "pattern": "encoder/conv/.*",
                                                "lr_mults": (0.0, 0.1)})])
  updates = one_update(c, steps=3)
  assert [float(u["encoder"]["conv"]["kernel"][0]) for u in updates] == pytest.approx(
      [0.0, 0.0, -0.01])
  assert [float(u["head"]["kernel"][0]) for u in updates] == pytest.approx([-0.1, -0.1, -0.01])


def test_wrong_number_of_phase_multipliers_is_reported():
  c = config(phase_boundaries=(2, 4), default_lr_mults=(1.0, 0.1))
  with pytest.raises(ValueError, match="default.*lr_mults has 2 values; expected 1 or one per phase"):
    optim.make_optimizer(c, 10)


def test_gradient_accumulation_applies_the_mean_every_k_steps():
  updates = one_update(config(grad_accum_steps=3), steps=3)
  assert [float(u["head"]["kernel"][0]) for u in updates] == pytest.approx([0.0, 0.0, -0.1])


def test_lr_scale_extra_argument_scales_the_update():
  (u,) = one_update(config(name="adam"), lr_scale=jnp.float32(0.5))
  # Adam's first step moves by lr in the gradient's sign; halved by lr_scale.
  np.testing.assert_allclose(u["head"]["kernel"], -0.05, rtol=1e-5)


def test_step_decay_schedule_follows_the_fractions():
  c = config(schedule="step_decay", decay_fractions=(0.5,), decay_factor=0.1)
  updates = one_update(c, steps=4, total=4)
  assert [float(u["head"]["kernel"][0]) for u in updates] == pytest.approx(
      [-0.1, -0.1, -0.01, -0.01])


def test_unknown_optimizer_lists_valid_names():
  with pytest.raises(ValueError, match=r"unknown optimizer.*'adam'.*'sgd'.*optax's.*'lion'"):
    optim.make_optimizer(config(name="lambada"), 10)


def _random_grads(seed):
  keys = iter(jax.random.split(jax.random.key(seed), 8))
  return jax.tree.map(lambda p: jax.random.normal(next(keys), p.shape), PARAMS)


def _run(tx, steps=3):
  state, params, out = tx.init(PARAMS), PARAMS, []
  for step in range(steps):
    updates, state = tx.update(_random_grads(step), state, params)
    params = optax.apply_updates(params, updates)
    out.append(updates)
  return out


def test_any_optax_optimiser_by_name_with_its_kwargs():
  c = config(name="lion", learning_rate=0.01, kwargs={"b1": 0.8, "weight_decay": 0.1})
  ours = _run(optim.make_optimizer(c, 10))
  reference = _run(optax.lion(0.01, b1=0.8, weight_decay=0.1))
  for a, b in zip(ours, reference):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6), a, b)
  with pytest.raises(ValueError, match=r"optax.lion rejects .*kwargs.*momentum"):
    optim.make_optimizer(config(name="lion", kwargs={"momentum": 0.9}), 10)
  with pytest.raises(ValueError, match=r"only optax optimisers take kwargs"):
    optim.make_optimizer(config(name="adam", kwargs={"b1": 0.8}), 10)


def test_groups_may_have_their_own_update_rule():
  # AdamW for the encoder (the global rule), plain SGD at 0.5 for the head (a probe).
  c = config(name="adamw", learning_rate=0.01, weight_decay=0.1,
             groups=[ml_collections.ConfigDict({
                 "name": "probe", "pattern": "head/.*", "lr_mults": 1.0,
                 "optim": {"name": "sgd", "learning_rate": 0.5}})])
  ours = _run(optim.make_optimizer(c, 10))
  adamw = optax.adamw(0.01, weight_decay=0.1)
  state, params = adamw.init(PARAMS["encoder"]), PARAMS["encoder"]
  for step, update in enumerate(ours):
    grads = _random_grads(step)
    np.testing.assert_allclose(update["head"]["kernel"], -0.5 * grads["head"]["kernel"],
                               rtol=1e-6)
    expected, state = adamw.update(grads["encoder"], state, params)
    params = optax.apply_updates(params, expected)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5), update["encoder"],
                 expected)
  with pytest.raises(ValueError, match=r"groups\[probe\].optim: unknown field.*'lr'"):
    optim.make_optimizer(config(groups=[ml_collections.ConfigDict({
        "name": "probe", "pattern": "head/.*", "lr_mults": 1.0, "optim": {"lr": 0.5}})]), 10)


def test_layer_wise_learning_rate_decay():
  params = {"embed": {"kernel": jnp.ones(2)}, "head": {"kernel": jnp.ones(2)},
            "blocks": {"0": {"kernel": jnp.ones(2)}, "1": {"kernel": jnp.ones(2)}}}
  c = config(learning_rate=1.0, layer_decay={
      "rate": 0.5, "num_layers": 2, "layer_pattern": r"blocks/(\d+)/.*",
      "embedding_pattern": "embed/.*"})
  tx = optim.make_optimizer(c, 10)
  updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
  # Layers: embed 0, blocks/0 1, blocks/1 2, head 3 = num_layers + 1 (rate^0).
  assert float(updates["head"]["kernel"][0]) == pytest.approx(-1.0)
  assert float(updates["blocks"]["1"]["kernel"][0]) == pytest.approx(-0.5)
  assert float(updates["blocks"]["0"]["kernel"][0]) == pytest.approx(-0.25)
  assert float(updates["embed"]["kernel"][0]) == pytest.approx(-0.125)
  labels = optim.param_labels(params, c)
  assert labels["blocks"]["1"]["kernel"] == "default@layer2"


def test_plateau_divides_after_patience_without_improvement():
  p = optim.PlateauController(factor=1 / 3, patience=2)
  scales = [p.update(v) for v in [1.0, 0.9, 0.95, 0.92, 0.91, 0.99, 0.5]]
  assert scales == pytest.approx([1, 1, 1, 1 / 3, 1 / 3, 1 / 9, 1 / 9])
  restored = optim.PlateauController(factor=1 / 3, patience=2)
  restored.load_state_dict(p.state_dict())
  assert restored.update(0.6) == p.update(0.6)


def test_momentum_weight_decay_spares_biases():
  params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}
  tx = optim.make_optimizer(config(name="momentum", weight_decay=0.5, momentum=0.9), 10)
  zero = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  np.testing.assert_allclose(updates["kernel"], -0.1 * 0.5)  # -lr * wd * w
  np.testing.assert_allclose(updates["bias"], 0.0)


def test_step_decay_warmup_then_decays_on_the_original_steps():
  c = config(schedule="step_decay", decay_fractions=(0.5,), decay_factor=0.1, warmup_steps=2)
  updates = one_update(c, steps=6, total=8)
  assert [float(u["head"]["kernel"][0]) for u in updates] == pytest.approx(
      [0.0, -0.05, -0.1, -0.1, -0.01, -0.01])
