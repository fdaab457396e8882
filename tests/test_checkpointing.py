"""Checkpointer: which checkpoints are kept (last N plus the best by an eval metric)."""
import os

import jax.numpy as jnp
import ml_collections
import pytest

from jhseg.train import checkpointing


def _kept(directory):
  return sorted(int(s) for s in os.listdir(directory) if s.isdigit())


@pytest.mark.parametrize("mode, scores, expected", [
    ("max", {1: 0.9, 2: 0.1, 3: 0.2, 4: 0.3}, [1, 4]),   # best first, then worse
    ("min", {1: 0.9, 2: 0.1, 3: 0.2, 4: 0.3}, [2, 4]),
])
def test_keeps_the_last_and_the_best_checkpoint(tmp_path, mode, scores, expected):
  config = ml_collections.ConfigDict(dict(keep=1, best_metric="eval/score", best_mode=mode,
                                          **{"async": False}))
  ckpt = checkpointing.Checkpointer(str(tmp_path), config)
  for step, score in scores.items():
    ckpt.save(step, {"w": jnp.full((2,), float(step))}, {"step": step},
              metrics={"eval/score": score})
  ckpt.wait()
  assert _kept(ckpt.directory) == expected
  state, meta = ckpt.restore({"w": jnp.zeros((2,))}, step=expected[0])
  assert meta["step"] == expected[0] and float(state["w"][0]) == expected[0]
  ckpt.close()


def test_without_a_best_metric_only_the_last_ones_stay(tmp_path):
  config = ml_collections.ConfigDict(dict(keep=2, **{"async": False}))
  ckpt = checkpointing.Checkpointer(str(tmp_path), config)
  for step in (1, 2, 3):
    ckpt.save(step, {"w": jnp.zeros((1,))}, {"step": step})
  ckpt.wait()
  assert _kept(ckpt.directory) == [2, 3]
  ckpt.close()


def test_missing_best_metric_names_the_metrics(tmp_path):
  config = ml_collections.ConfigDict(dict(keep=1, best_metric="eval/score"))
  ckpt = checkpointing.Checkpointer(str(tmp_path), config)
  with pytest.raises(KeyError, match="eval/score"):
    ckpt.save(1, {"w": jnp.zeros((1,))}, {"step": 1}, metrics={"eval/other": 1.0})
  ckpt.close()
