"""The training engine end to end on the synthetic scenes, with 4 fake devices."""
import json
import os

import jax
import numpy as np
import pytest

from experiments.configs import pixel_classification
from jhseg.train.checkpointing import read_state_arrays
from jhseg.train import NonFiniteLossError, train_and_evaluate


def tiny_config(data_dir, **overrides):
  config = pixel_classification.get_config("tiny")
  config.data.data_dir = data_dir
  config.checkpoint["async"] = False
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def read_jsonl(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def final_params(workdir, step):
  state = read_state_arrays(os.path.join(workdir, "checkpoints", str(step), "state"))
  return jax.tree.leaves(state["0"])


def test_loss_goes_down_and_run_writes_its_outputs(synthetic_data_dir, tmp_path):
  assert jax.device_count() == 4
  workdir = str(tmp_path / "run")
  summary = train_and_evaluate(tiny_config(synthetic_data_dir, num_train_steps=60,
                                           log_every_steps=10), workdir)
  losses = [r["train/loss"] for r in read_jsonl(workdir) if "train/loss" in r]
  assert len(losses) == 6
  assert losses[-1] < 0.7 * losses[0], losses
  assert 0.0 <= summary["eval/val/miou"] <= 1.0
  assert 0.0 <= summary["eval/test/miou"] <= 1.0  # the final model on the test split
  # The last two checkpoints (keep=2) and the best by eval/val/miou are kept.
  evals = {r["step"]: r["eval/val/miou"] for r in read_jsonl(workdir) if "eval/val/miou" in r}
  assert sorted(evals) == [20, 40, 60]
  best = max(evals, key=evals.get)
  kept = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())
  assert kept == sorted({40, 60, best})
  tests = [r["step"] for r in read_jsonl(workdir) if "eval/test/miou" in r]
  assert tests == [60]
  for name, steps in (("val", (20, 40, 60)), ("test", (60,))):
    assert sorted(os.listdir(os.path.join(workdir, "eval", name))) == sorted(map(str, steps))
    with open(os.path.join(workdir, "eval", name, "60", "summary.json")) as f:
      assert json.load(f)["scalars"]["miou"] == pytest.approx(summary[f"eval/{name}/miou"])
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["task"] == "pixel_classification"
  assert any(name.startswith("events.out.tfevents")
             for name in os.listdir(os.path.join(workdir, "tensorboard")))


def test_resumed_run_matches_uninterrupted_run(synthetic_data_dir, tmp_path):
  # A constant schedule, so that the shorter first leg has the same learning rates.
  overrides = dict(num_train_steps=12, checkpoint_every_steps=6, log_every_steps=3, **{"optim.schedule": "constant"})
  straight = str(tmp_path / "straight")
  train_and_evaluate(tiny_config(synthetic_data_dir, **overrides), straight)
  resumed = str(tmp_path / "resumed")
  train_and_evaluate(tiny_config(synthetic_data_dir, **{**overrides, "num_train_steps": 6}), resumed)
  train_and_evaluate(tiny_config(synthetic_data_dir, **overrides), resumed)
  for a, b in zip(final_params(straight, 12), final_params(resumed, 12), strict=True):
    np.testing.assert_array_equal(a, b)
  # The same batches were seen: per-step losses of the second leg coincide.
  tail = lambda w: [r["train/loss"] for r in read_jsonl(w) if r["step"] > 6 and "train/loss" in r]
  np.testing.assert_allclose(tail(straight), tail(resumed)[-2:], rtol=1e-6)


def test_non_finite_loss_stops_with_the_step_and_keeps_a_good_checkpoint(synthetic_data_dir,
                                                                         tmp_path):
  workdir = str(tmp_path / "nan")
  config = tiny_config(synthetic_data_dir, num_train_steps=20, checkpoint_every_steps=2,
                       log_every_steps=1,
                       **{"optim.schedule": "constant"})
  config.optim.learning_rate = 1e-3
  train_and_evaluate(config, workdir)  # 20 good steps, checkpoints at 18 and 20.
  config.num_train_steps = 30
  config.optim.learning_rate = float("nan")
  with pytest.raises(NonFiniteLossError, match=r"step 21.*last good checkpoint is step 20"):
    train_and_evaluate(config, workdir)
  for leaf in final_params(workdir, 20):
    assert np.all(np.isfinite(leaf))


def test_config_typo_lists_valid_fields(synthetic_data_dir, tmp_path):
  config = tiny_config(synthetic_data_dir)
  config.optim.learnig_rate = 0.1
  with pytest.raises(ValueError, match=r"config\.optim\.learnig_rate.*learning_rate"):
    train_and_evaluate(config, str(tmp_path))


def test_unknown_task_lists_valid_tasks(synthetic_data_dir, tmp_path):
  config = tiny_config(synthetic_data_dir, task="segsort")
  with pytest.raises(ValueError, match="pixel_classification"):
    train_and_evaluate(config, str(tmp_path))


def test_init_from_another_run_copies_its_parameters(synthetic_data_dir, tmp_path):
  source = str(tmp_path / "source")
  train_and_evaluate(tiny_config(synthetic_data_dir, num_train_steps=4,
                                 checkpoint_every_steps=4), source)
  # A learning rate of 0: the new run's kernels must stay exactly the source's.
  target = str(tmp_path / "target")
  config = tiny_config(synthetic_data_dir, num_train_steps=2, init_from=source, seed=1, **{"optim.schedule": "constant"})
  config.optim.learning_rate = 0.0
  train_and_evaluate(config, target)
  kernels = lambda w, s: {k: v for k, v in read_state_arrays(
      os.path.join(w, "checkpoints", str(s), "state"))["0"]["convs"].items()}
  for a, b in zip(jax.tree.leaves(kernels(source, 4)), jax.tree.leaves(kernels(target, 2))):
    np.testing.assert_array_equal(a, b)

  wider = tiny_config(synthetic_data_dir, num_train_steps=1, init_from=source,
                      **{"model.width": 16})
  with pytest.raises(ValueError, match=r"init_from .*: parameter \S+/kernel/value has shape .* expects"):
    train_and_evaluate(wider, str(tmp_path / "wider"))


def test_reduce_on_plateau_lowers_the_learning_rate_scale(synthetic_data_dir, tmp_path):
  import ml_collections
  # A relative threshold of 10 means no evaluation ever counts as an improvement.
  config = tiny_config(synthetic_data_dir, num_train_steps=30, log_every_steps=10,
                       checkpoint_every_steps=30, **{"evals.val.every_steps": 10})
  config.plateau = ml_collections.ConfigDict(
      {"metric": "eval/val/pixel_accuracy", "mode": "max", "patience": 1, "factor": 0.5,
       "threshold": 10.0})
  workdir = str(tmp_path / "plateau")
  train_and_evaluate(config, workdir)
  scales = {r["step"]: r["train/lr_scale"] for r in read_jsonl(workdir) if "train/lr_scale" in r}
  # Evaluations at 10 (first: best), 20 (no improvement: x0.5), 30 (x0.5 again, after the log).
  assert scales == {10: 1.0, 20: 1.0, 30: 0.5}

  config.plateau.metric = "eval/nonexistent"
  with pytest.raises(ValueError, match="plateau.metric.*evaluator"):
    train_and_evaluate(config, str(tmp_path / "bad"))
