"""Repeated augmentation in the training stream: each index `repeats` times per pass, in a
row, with independent augmentations; process shares disjoint and covering; deterministic per
seed; resumable; the config field and its checks."""
import collections
import importlib

import ml_collections
import numpy as np
import pytest

from jhseg.data import random_transform, repeats_of, train_dataset
from jhseg.train import cli, config_fields


class Source:
  def __init__(self, n):
    self.n = n

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    return {"x": np.array(i)}


@random_transform
def jitter(example, rng):
  return {**example, "noise": rng.normal(size=())}


def _stream(n, *, repeats, seed=0, batch=6, batches=10, process_index=0, process_count=1):
  it = iter(train_dataset(Source(n), [jitter], seed=seed, local_batch_size=batch,
                          process_index=process_index, process_count=process_count,
                          num_threads=0, repeats=repeats))
  out = [next(it) for _ in range(batches)]
  return (np.concatenate([b["x"] for b in out]), np.concatenate([b["noise"] for b in out]))


def test_each_index_repeats_times_per_pass_in_a_row():
  n, r = 10, 3
  xs, noise = _stream(n, repeats=r, batch=6, batches=10)  # 60 positions = 2 passes of 30
  for p in range(2):
    counts = collections.Counter(xs[p * r * n:(p + 1) * r * n].tolist())
    assert counts == {i: r for i in range(n)}, counts
  runs = xs.reshape(-1, r)  # positions [3m, 3m + 3) hold one index
  assert (runs == runs[:, :1]).all()
  # The drawn order is the plain run's order (per-pass reshuffled), each entry r times.
  plain, _ = _stream(n, repeats=1, batch=5, batches=4)
  np.testing.assert_array_equal(runs[:, 0], plain)
  assert not np.array_equal(runs[:n, 0], runs[n:, 0])
  # The copies are augmented independently (keyed by position).
  copies = noise.reshape(-1, r)
  assert np.all(copies[:, 0] != copies[:, 1]) and np.all(copies[:, 1] != copies[:, 2])


def test_process_shares_are_disjoint_and_cover_the_global_batches():
  n, r = 11, 3  # a pass (33) is not a multiple of the global batch (8)
  full, full_noise = _stream(n, repeats=r, batch=8, batches=9)
  shares = [_stream(n, repeats=r, batch=4, batches=9, process_index=p, process_count=2)
            for p in range(2)]
  for b in range(9):
    rows = slice(8 * b, 8 * b + 8)
    together = np.concatenate([shares[0][0][4 * b:4 * b + 4], shares[1][0][4 * b:4 * b + 4]])
    np.testing.assert_array_equal(together, full[rows])
    noise = np.concatenate([shares[0][1][4 * b:4 * b + 4], shares[1][1][4 * b:4 * b + 4]])
    np.testing.assert_array_equal(noise, full_noise[rows])
  for p in range(2):
    counts = collections.Counter(full[p * r * n:(p + 1) * r * n].tolist())
    assert counts == {i: r for i in range(n)}


def test_deterministic_per_seed_and_resumable():
  a, a_noise = _stream(9, repeats=3, seed=5)
  b, b_noise = _stream(9, repeats=3, seed=5)
  c, _ = _stream(9, repeats=3, seed=6)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(a_noise, b_noise)
  assert not np.array_equal(a, c)
  dataset = train_dataset(Source(9), [jitter], seed=5, local_batch_size=6, num_threads=0,
                          repeats=3)
  it = iter(dataset)
  [next(it) for _ in range(4)]
  resumed = iter(dataset)
  resumed.set_state(it.get_state())
  np.testing.assert_array_equal(next(resumed)["noise"], a_noise[24:30])


def test_config_field():
  assert repeats_of(ml_collections.ConfigDict({"name": "x"})) == 1
  assert repeats_of({"repeated_augmentation": None}) == 1
  assert repeats_of({"repeated_augmentation": 3}) == 3
  for bad in (0, 2.0, True, "3"):
    with pytest.raises(ValueError, match="config.data.repeated_augmentation"):
      repeats_of({"repeated_augmentation": bad})
  # An engine field: any config may set it from the command line.
  config = ml_collections.ConfigDict({"task": "cast", "num_train_steps": 1,
                                      "data": {"name": "x", "batch_size": 2}})
  cli.add_engine_placeholders(config)
  cli.set_field(config, "data.repeated_augmentation", "3")
  config_fields.check_fields(config)
  assert repeats_of(config.data) == 3


def test_deit_imagenet_variants_use_three_repeats_tiny_none():
  deit = importlib.import_module("experiments.configs.cast_deit")
  for variant in ("imagenet", "imagenet_base"):
    config = deit.get_config(variant)
    config_fields.check_fields(config)
    assert repeats_of(config.data) == 3
  assert repeats_of(deit.get_config("tiny").data) == 1


class _Captured(Exception):
  pass


def test_the_engine_passes_the_field_to_the_training_pipeline(synthetic_data_dir, tmp_path,
                                                              monkeypatch):
  from jhseg.train import loop  # pylint: disable=g-import-not-at-top

  def capture(source, transforms, **kwargs):
    raise _Captured(kwargs["repeats"], len(source))

  monkeypatch.setattr(loop.data_lib, "train_dataset", capture)
  config = importlib.import_module("experiments.configs.cast_deit").get_config("tiny")
  config.data.data_dir = synthetic_data_dir
  config.evals = ml_collections.ConfigDict()
  config.data.repeated_augmentation = 3
  with pytest.raises(_Captured) as captured:
    loop.train_and_evaluate(config, str(tmp_path))
  assert captured.value.args == (3, 64)  # 3 copies; the 64 training scenes


def test_a_resume_with_other_repeats_is_refused(tmp_path):
  import os  # pylint: disable=g-import-not-at-top
  from jhseg.train import run_config  # pylint: disable=g-import-not-at-top
  config = importlib.import_module("experiments.configs.cast_deit").get_config("tiny")
  cli.add_engine_placeholders(config)  # None: an old run's config.json lacks the field
  run_config.prepare(config, str(tmp_path))
  os.makedirs(tmp_path / "checkpoints" / "40")
  assert run_config.prepare(config, str(tmp_path)) == {}
  config.data.repeated_augmentation = 3
  with pytest.raises(run_config.ConfigMismatchError, match="data.repeated_augmentation"):
    run_config.prepare(config, str(tmp_path))
