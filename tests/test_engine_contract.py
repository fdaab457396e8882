"""The Task contract by behaviour: step context, trainable set, after_update under
accumulation, named evaluators (second dataset, start-up check, crash safety), the
non-finite check of every variable, init_from with a prefix map.

A toy regression task on in-memory data sources (no TFDS), 4 fake devices.
"""
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from experiments.configs import _engine
import jhseg.data
from jhseg import tasks as tasks_lib
from jhseg.tasks import outputs
from jhseg.tasks.base import Evaluation, Task
from jhseg.train import NonFiniteLossError, checkpointing, train_and_evaluate
from jhseg.train import loop

W_TRUE = np.arange(8, dtype=np.float32).reshape(4, 2) / 8.0


def toy_examples(n, *, seed, fill=None, fields=("x", "y")):
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    x = rng.normal(size=4).astype(np.float32) if fill is None else np.full(4, fill, np.float32)
    example = {"x": x, "y": x @ W_TRUE}
    out.append({k: v for k, v in example.items() if k in fields})
  return out


SOURCES = {
    ("toy", "train"): toy_examples(16, seed=0),
    ("toy", "validation"): toy_examples(8, seed=1),
    ("toy/second", "test"): toy_examples(4, seed=2, fill=7.0),
    ("toy/nolabels", "test"): toy_examples(4, seed=3, fields=("x",)),
}


@pytest.fixture(autouse=True)
def toy_world(monkeypatch):
  def load_source(data, split):
    return SOURCES[data.name, split]
  monkeypatch.setattr(jhseg.data, "load_source", load_source)
  monkeypatch.setitem(tasks_lib.TASKS, "toy", ToyTask)


class Memory(nnx.Variable):
  """A non-trained variable (like a prototype memory)."""


class ToyModel(nnx.Module):
  def __init__(self, rngs, *, trunk="backbone", width=4):
    setattr(self, trunk, nnx.Linear(4, width, use_bias=False, rngs=rngs))
    self.trunk_name = trunk
    self.head = nnx.Linear(width, 2, use_bias=False, rngs=rngs)
    self.memory = Memory(jnp.zeros((2,)))
    self.updates = Memory(jnp.zeros((), jnp.int32))

  def __call__(self, x):
    return self.head(getattr(self, self.trunk_name)(x))


class ToyTask(Task):
  """Squared error of a two-layer linear model; options in config.model."""

  def make_model(self, rngs):
    m = self.config.get("model", {})
    return ToyModel(rngs, trunk=m.get("trunk", "backbone"), width=m.get("width", 4))

  def train_transforms(self):
    return [lambda e: {"x": e["x"], "y": e["y"]}]

  def trainable(self):
    if self.config.get("model", {}).get("head_only"):
      return nnx.All(nnx.Param, nnx.PathContains("head"))
    return nnx.Param

  def loss(self, model, batch, ctx):
    error = model(batch["x"]) - batch["y"]
    return jnp.mean(error ** 2), {"step": ctx.step.astype(jnp.float32),
                                  "noise": jax.random.uniform(ctx.rng)}

  def after_update(self, model, ctx):
    m = self.config.get("model", {})
    model.updates[...] += 1
    # An EMA of the head, moved once per optimizer update.
    model.memory[...] = 0.5 * model.memory[...] + 0.5 * model.head.kernel[...][0]
    if m.get("nan_at_step"):
      model.memory[...] = jnp.where(ctx.step == m.nan_at_step, jnp.nan, model.memory[...])

  def evaluations(self):
    return {"default": Evaluation(self.evaluate, self.eval_transforms),
            "inputs": Evaluation(self.mean_input, lambda: [lambda e: {"x": e["x"]}]),
            "crash": Evaluation(self.crash, self.eval_transforms)}

  def evaluate(self, model, ctx):
    total, count = 0.0, 0
    for batch in ctx.batches():
      error = jax.device_get((model(batch["x"]) - batch["y"]) ** 2).sum(-1)
      mask = jax.device_get(batch["example_mask"])
      total, count = total + float(error[mask].sum()), count + int(mask.sum())
    outputs.write_summary(ctx.out_dir, {"mse": total / count, "count": count})
    return {"mse": total / count}

  def mean_input(self, model, ctx):
    del model
    xs = [jax.device_get(b["x"])[jax.device_get(b["example_mask"])] for b in ctx.batches()]
    mean = float(np.concatenate(xs).mean())
    outputs.write_summary(ctx.out_dir, {"mean_x": mean, "step": ctx.step})
    return {"mean_x": mean}

  def crash(self, model, ctx):
    raise RuntimeError(f"evaluation crashed at step {ctx.step}")


def toy_config(**overrides):
  config = _engine.engine_config("toy")
  config.num_train_steps = 4
  config.log_every_steps = 2
  config.data.name = "toy"
  config.data.batch_size = 4
  config.data.num_threads = 0
  config.optim.name = "sgd"
  config.optim.learning_rate = 0.05
  config.evals.val = _engine.evaluator("validation", every_steps=2, batch_size=4)
  config.checkpoint["async"] = False
  config.model = ml_collections.ConfigDict()
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


def read_jsonl(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def state_arrays(workdir, step):
  return checkpointing.read_state_arrays(os.path.join(workdir, "checkpoints", str(step), "state"))


# ----------------------------------------------------------------------------- evaluators


def test_an_evaluator_on_a_second_dataset_writes_its_own_folder(tmp_path):
  config = toy_config()
  config.evals.second = _engine.evaluator("test", dataset="toy/second", method="inputs",
                                          batch_size=4)
  summary = train_and_evaluate(config, str(tmp_path))
  # The second dataset's inputs are all 7: its batches came from there.
  assert summary["eval/second/mean_x"] == 7.0
  assert sorted(os.listdir(tmp_path / "eval" / "second")) == ["4"]  # every_steps None: last
  assert sorted(os.listdir(tmp_path / "eval" / "val")) == ["2", "4"]
  report = json.loads((tmp_path / "eval" / "second" / "4" / "summary.json").read_text())
  assert report == {"mean_x": 7.0, "step": 4}
  val = json.loads((tmp_path / "eval" / "val" / "4" / "summary.json").read_text())
  assert val["count"] == 8 and val["mse"] == pytest.approx(summary["eval/val/mse"])


def test_a_missing_field_fails_at_start_up_naming_field_and_dataset(tmp_path):
  config = toy_config()
  config.evals.broken = _engine.evaluator("test", dataset="toy/nolabels")
  with pytest.raises(ValueError, match=r"evaluator 'broken'.*'toy/nolabels'.*KeyError: 'y'"):
    train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "metrics.jsonl").exists()


def test_unknown_evaluation_method_lists_the_valid_ones(tmp_path):
  config = toy_config()
  config.evals.val.method = "knn"
  with pytest.raises(ValueError, match=r"evals.val.method.*'knn'.*\['crash', 'default'"):
    train_and_evaluate(config, str(tmp_path))


def test_legacy_eval_fields_say_where_they_went(tmp_path):
  config = toy_config()
  config.eval_every_steps = 2
  with pytest.raises(ValueError, match=r"config.eval_every_steps -> config.evals.<name>"):
    train_and_evaluate(config, str(tmp_path))


def test_a_crashing_evaluation_leaves_the_step_restorable(tmp_path):
  config = toy_config(num_train_steps=2)
  config.evals.val.method = "crash"
  with pytest.raises(RuntimeError, match="evaluation crashed at step 2"):
    train_and_evaluate(config, str(tmp_path))
  trained = state_arrays(str(tmp_path), 2)  # saved before the evaluation
  # Resuming with a working evaluation: no training step again, the evaluation of step 2.
  config.evals.val.method = "default"
  summary = train_and_evaluate(config, str(tmp_path))
  assert "eval/val/mse" in summary and "train/loss" not in summary
  assert (tmp_path / "eval" / "val" / "2" / "summary.json").exists()
  for a, b in zip(jax.tree.leaves(trained), jax.tree.leaves(state_arrays(str(tmp_path), 2))):
    np.testing.assert_array_equal(a, b)


def test_best_checkpoint_names_an_evaluator_metric(tmp_path):
  config = toy_config(num_train_steps=6, **{"checkpoint.keep": 1})
  config.checkpoint.best_metric = "eval/val/mse"
  config.checkpoint.best_mode = "min"
  train_and_evaluate(config, str(tmp_path))
  mse = {r["step"]: r["eval/val/mse"] for r in read_jsonl(str(tmp_path)) if "eval/val/mse" in r}
  best = min(mse, key=mse.get)
  kept = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit())
  assert kept == sorted({6, best})
  config.checkpoint.best_metric = "eval/test/mse"
  with pytest.raises(ValueError, match=r"best_metric.*evaluator of config.evals \['val'\]"):
    train_and_evaluate(config, str(tmp_path / "other"))


# ----------------------------------------------------------------------------- non-finite


def test_a_non_finite_memory_variable_stops_the_run(tmp_path):
  config = toy_config(num_train_steps=6, log_every_steps=1, checkpoint_every_steps=1,
                      **{"model.nan_at_step": 3})
  with pytest.raises(NonFiniteLossError,
                     match=r"step 3 made 1 model variable.*memory.*last good checkpoint is step 2"):
    train_and_evaluate(config, str(tmp_path))
  assert np.all(np.isfinite(state_arrays(str(tmp_path), 2)["0"]["memory"]["value"]))


# ----------------------------------------------------------------------------- train step


def _step_fn(config, task=None):
  task = task or ToyTask(config)
  graphdef, state, wrt = loop.build_state(task, config, config.num_train_steps)
  step = jax.jit(loop.make_train_step(graphdef, task, wrt=wrt, seed=config.seed,
                                      total_steps=config.num_train_steps))
  return graphdef, state, step


def _batch(seed=0):
  examples = toy_examples(4, seed=seed)
  return {k: jnp.stack([e[k] for e in examples]) for k in ("x", "y")}


def test_loss_sees_the_step_and_a_key_per_step():
  config = toy_config(num_train_steps=3)
  _, state, step_fn = _step_fn(config)
  noises = []
  for step in (1, 2, 3):
    state, metrics = step_fn(state, _batch(), np.int32(step), np.float32(1.0))
    assert float(metrics["step"]) == step
    noises.append(float(metrics["noise"]))
  assert len(set(noises)) == 3
  _, state, step_fn = _step_fn(config)  # the same step gives the same key
  _, metrics = step_fn(state, _batch(), np.int32(2), np.float32(1.0))
  assert float(metrics["noise"]) == noises[1]


def _count_primitive(jaxpr, name):
  count = 0
  for eqn in jaxpr.eqns:
    count += eqn.primitive.name == name
    for param in eqn.params.values():
      for sub in (param if isinstance(param, (tuple, list)) else (param,)):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          count += _count_primitive(inner, name)
  return count


def test_non_trainable_parameters_are_not_differentiated():
  counts = {}
  for case in ("all", "head_only", "optim.frozen"):
    config = toy_config(**{"model.head_only": case == "head_only"})
    if case == "optim.frozen":
      config.optim.frozen = ["backbone/.*"]
    task = ToyTask(config)
    graphdef, state, wrt = loop.build_state(task, config, 4)
    fn = loop.make_train_step(graphdef, task, wrt=wrt, seed=0, total_steps=4)
    jaxpr = jax.make_jaxpr(fn)(state, _batch(), np.int32(1), np.float32(1.0)).jaxpr
    counts[case] = _count_primitive(jaxpr, "dot_general")
  # Forward: 2 products. Head gradient: 1. Backbone: 1 to backpropagate through the head
  # and 1 for its kernel's gradient -- absent when only the head is trained.
  assert counts == {"all": 5, "head_only": 3, "optim.frozen": 3}


def test_clipping_and_grad_norm_cover_only_the_trainable_set():
  clip = 0.01
  config = toy_config(**{"model.head_only": True, "optim.learning_rate": 1.0})
  config.optim.grad_clip_norm = clip
  graphdef, state, step_fn = _step_fn(config)
  model, _ = nnx.merge(graphdef, state)
  w_b = np.asarray(model.backbone.kernel[...])
  w_h = np.asarray(model.head.kernel[...])
  batch = _batch()
  x, y = np.asarray(batch["x"]), np.asarray(batch["y"])
  # Hand computation: loss = mean over (4 x 2) of (x W_b W_h - y)^2.
  hidden = x @ w_b
  residual = hidden @ w_h - y
  grad_h = hidden.T @ (2 * residual / residual.size)
  norm = np.linalg.norm(grad_h)
  expected = w_h - grad_h * min(1.0, clip / norm)
  state, metrics = step_fn(state, batch, np.int32(1), np.float32(1.0))
  model, _ = nnx.merge(graphdef, state)
  np.testing.assert_allclose(float(metrics["grad_norm"]), norm, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(model.head.kernel[...]), expected, rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(np.asarray(model.backbone.kernel[...]), w_b)


def test_after_update_runs_once_per_optimizer_step_under_accumulation():
  config = toy_config(num_train_steps=8, **{"optim.grad_accum_steps": 4})
  graphdef, state, step_fn = _step_fn(config)
  heads, memories, counts = [], [], []
  for step in range(1, 9):
    state, _ = step_fn(state, _batch(step), np.int32(step), np.float32(1.0))
    model, _ = nnx.merge(graphdef, state)
    heads.append(np.asarray(model.head.kernel[...][0]))
    memories.append(np.asarray(model.memory[...]))
    counts.append(int(model.updates[...]))
  assert counts == [0, 0, 0, 1, 1, 1, 1, 2]
  # The head moves at micro-steps 4 and 8 only; the EMA follows it then.
  for same in ((0, 1, 2), (3, 4, 5, 6)):
    for i in same[1:]:
      np.testing.assert_array_equal(heads[i], heads[same[0]])
  assert not np.array_equal(heads[3], heads[2]) and not np.array_equal(heads[7], heads[6])
  first = 0.5 * heads[3]
  np.testing.assert_allclose(memories[3], first, rtol=1e-6)
  np.testing.assert_allclose(memories[7], 0.5 * first + 0.5 * heads[7], rtol=1e-6)
  np.testing.assert_array_equal(memories[4], memories[3])


# ----------------------------------------------------------------------------- init_from


def test_init_from_with_a_prefix_map_loads_a_backbone_into_a_larger_model(tmp_path):
  source = str(tmp_path / "source")
  train_and_evaluate(toy_config(num_train_steps=2), source)
  trained = state_arrays(source, 2)["0"]
  # A bigger model: the trunk is called `encoder`, its head is wider (4 -> 2 from 4 -> 2,
  # but a new 'extra' variable would be unmatched); only encoder/ comes from the source.
  config = toy_config(num_train_steps=1, **{"model.trunk": "encoder",
                                            "optim.learning_rate": 0.0})
  del config["init_from"]
  config.init_from = ml_collections.ConfigDict(
      {"workdir": source, "prefixes": {"backbone/": "encoder/"}})
  target = str(tmp_path / "target")
  train_and_evaluate(config, target)
  loaded = state_arrays(target, 1)["0"]
  np.testing.assert_array_equal(loaded["encoder"]["kernel"]["value"],
                                trained["backbone"]["kernel"]["value"])
  assert not np.array_equal(loaded["head"]["kernel"]["value"], trained["head"]["kernel"]["value"])

  task = ToyTask(toy_config(**{"model.trunk": "encoder", "model.width": 4}))
  _, state, _ = loop.build_state(task, task.config, 1)
  params, missing, unused = checkpointing.load_params_from(
      source, state[0], prefixes=[("backbone/", "encoder/"), ("nothing/", "head/")],
      with_unused=True)
  assert missing == ["head/kernel/value"]  # looked up as nothing/kernel/value: absent
  assert unused == []                          # every backbone/ variable was used
  np.testing.assert_array_equal(np.asarray(params["encoder"]["kernel"][...]),
                                trained["backbone"]["kernel"]["value"])


# ----------------------------------------------------------------------------- HSG paper configs


@pytest.mark.parametrize("variant", ["coco_stage1", "coco", "cityscapes"])
def test_hsg_paper_configs_evaluate_datasets_with_the_decoded_fields(variant):
  from experiments.configs import hsg as hsg_configs
  from jhseg.tasks import hsg
  from jhseg.train import evaluators

  config = hsg_configs.get_config(variant)
  (evaluator,) = evaluators.parse_evaluators(config)
  fields = {*config.eval.truth_levels, config.eval.label_field}
  if variant.startswith("coco"):
    # coco/2017 has no segmentation maps: VOC 2012 (tfds_builders/voc2012_sbd), val + train_aug.
    assert (evaluator.dataset, evaluator.split) == ("voc2012_sbd", "val")
    assert config.eval.memory_split == "train_aug" and fields == {"segmentation"}
  else:
    assert evaluator.dataset == "cityscapes/semantic_segmentation"
    assert fields == {"segmentation_label"}
  # TFDS Cityscapes stores (H, W, 1) label maps: decoded as (H, W).
  example = {"image": np.zeros((4, 6, 3), np.uint8),
             "segmentation_label": np.arange(24, dtype=np.uint8).reshape(4, 6, 1)}
  out = hsg.decode_eval(example, truth_levels=("segmentation_label",),
                        label_field="segmentation_label", size=(5, 6))
  assert out["truth"].shape == (1, 5, 6) and out["labels"].shape == (5, 6)
  np.testing.assert_array_equal(out["labels"][:4], np.arange(24).reshape(4, 6))
  assert (out["labels"][4] == -1).all()
