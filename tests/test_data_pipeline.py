"""grain pipeline: global order, per-process shares, resumption, randomness, padding."""
import numpy as np
import pytest

from jhseg.data import eval_batches, random_transform, train_dataset


class RecordingSource:
  """A random-access source that remembers which examples were read."""

  def __init__(self, n):
    self.n, self.read = n, []

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    self.read.append(int(i))
    return {"x": np.array(i), "image": np.full((2, 2), i, np.float32)}


@random_transform
def jitter(example, rng):
  return {**example, "noise": rng.normal(size=())}


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


def test_two_processes_read_disjoint_halves_of_the_same_global_batches():
  single = RecordingSource(13)
  full = take(iter(train_dataset(single, [jitter], seed=3, local_batch_size=4, num_threads=0)), 5)
  sources = [RecordingSource(13), RecordingSource(13)]
  shares = [take(iter(train_dataset(s, [jitter], seed=3, local_batch_size=2, process_index=p,
                                    process_count=2, num_threads=0)), 5)
            for p, s in enumerate(sources)]
  for b in range(5):
    for key in ("x", "noise"):
      np.testing.assert_array_equal(
          full[b][key], np.concatenate([shares[0][b][key], shares[1][b][key]]))
  # Each process read only its rows: 10 reads each, together the single run's 20.
  assert len(sources[0].read) == len(sources[1].read) == 10
  assert sorted(sources[0].read + sources[1].read) == sorted(single.read)


def test_each_epoch_is_a_permutation():
  batches = take(iter(train_dataset(RecordingSource(8), [], seed=0, local_batch_size=4,
                                    num_threads=0)), 4)
  xs = np.concatenate([b["x"] for b in batches])
  assert sorted(xs[:8]) == list(range(8)) and sorted(xs[8:]) == list(range(8))
  assert not np.array_equal(xs[:8], xs[8:])  # reshuffled per epoch


def test_iterator_state_resumes_the_same_order():
  dataset = train_dataset(RecordingSource(10), [jitter], seed=1, local_batch_size=2)
  it = iter(dataset)
  take(it, 3)
  state = it.get_state()
  expected = take(it, 4)
  resumed = iter(dataset)
  resumed.set_state(state)
  for a, b in zip(expected, take(resumed, 4)):
    np.testing.assert_array_equal(a["x"], b["x"])
    np.testing.assert_array_equal(a["noise"], b["noise"])


def test_eval_batches_pad_the_last_batch_with_masked_rows():
  batches = list(eval_batches(RecordingSource(5), [], local_batch_size=2))
  assert len(batches) == 3
  np.testing.assert_array_equal(np.concatenate([b["example_mask"] for b in batches]),
                                [True] * 5 + [False])
  np.testing.assert_array_equal(np.concatenate([b["x"] for b in batches])[:5], np.arange(5))


def test_examples_of_different_shapes_fail_with_the_shapes():
  class Ragged(RecordingSource):
    def __getitem__(self, i):
      return {"image": np.zeros((i + 1, 2))}

  with pytest.raises(ValueError, match="fixed shapes"):
    next(iter(train_dataset(Ragged(4), [], seed=0, local_batch_size=2, num_threads=0)))


def test_too_small_split_is_reported():
  with pytest.raises(ValueError, match="fewer than one global batch"):
    train_dataset(RecordingSource(3), [], seed=0, local_batch_size=2, process_count=2)


def test_option_sections_reject_unknown_fields_with_their_path():
  from jhseg.data.augment import AugmentConfig
  from jhseg.data.multiview import MultiviewConfig

  assert AugmentConfig.from_config({"max_rotation": 5.0}).max_rotation == 5.0
  assert AugmentConfig.from_config(None) == AugmentConfig()
  with pytest.raises(ValueError, match=r"config\.data\.augment\.\['max_rotaton'\].*max_rotation"):
    AugmentConfig.from_config({"max_rotaton": 5.0})
  with pytest.raises(ValueError, match=r"config\.data\.augment\.multiview\.\['views'\]"):
    MultiviewConfig.from_config({"views": 2})


def test_options_from_config_makes_lists_of_tuple_fields_tuples():
  """JSON / command-line configs give lists; frozen options must stay hashable."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  from jhseg.data.options import options_from_config  # pylint: disable=g-import-not-at-top
  from jhseg.tasks.cast import ViewOptions  # pylint: disable=g-import-not-at-top

  @dataclasses.dataclass(frozen=True)
  class Options:
    sigma: tuple[float, float] = (0.1, 2.0)
    names: tuple[str, ...] = ()
    weights: list | None = None

  options = options_from_config(Options, {"sigma": [0.5, 1.0], "names": ["a", "b"],
                                          "weights": [1, 2]}, where="config.x")
  assert options.sigma == (0.5, 1.0) and options.names == ("a", "b")
  assert options.weights == [1, 2]  # not a tuple field: left as given
  assert options_from_config(Options, {"names": ("c",)}, where="config.x").names == ("c",)
  views = ViewOptions.from_config({"blur_sigma": [0.2, 1.5]})
  assert views.blur_sigma == (0.2, 1.5) and hash(views) == hash(ViewOptions(blur_sigma=(0.2, 1.5)))
