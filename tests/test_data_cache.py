"""jhseg.data.cache: the content-hashed per-example cache any transform can use."""
import numpy as np
import pytest

from jhseg.data import cache


class Counted:
  """compute(example): two arrays from the image; counts its calls."""

  def __init__(self):
    self.calls = 0

  def __call__(self, example):
    self.calls += 1
    image = example["image"]
    return {"mean": image.mean(axis=(0, 1)), "labels": (image[..., 0] > 0.5).astype(np.int32)}


def _example(seed):
  return {"image": np.random.default_rng(seed).random((5, 6, 3)).astype(np.float32),
          "other": np.full(3, seed)}


def _cache(**options):
  options.setdefault("settings", {"name": "toy", "version": 1})
  return cache.ExampleCache(fields=("image",), names=("mean", "labels"), **options)


@pytest.mark.parametrize("where", ["memory", "disk"])
def test_second_sighting_is_read_back_identical(tmp_path, where):
  store = dict(cache_dir=str(tmp_path)) if where == "disk" else dict(cache_entries=4)
  compute, c = Counted(), _cache(**store)
  first = c.get_or_compute(_example(0), compute)
  again = c.get_or_compute(_example(0), compute)
  assert compute.calls == 1
  for name in ("mean", "labels"):
    np.testing.assert_array_equal(first[name], again[name])
    assert first[name].dtype == again[name].dtype
  # A field the computation does not read does not change the key; the image does.
  assert c.key({**_example(0), "other": np.zeros(3)}) == c.key(_example(0))
  assert c.key(_example(1)) != c.key(_example(0))
  assert _cache(settings={"name": "toy", "version": 2}).key(_example(0)) != c.key(_example(0))


def test_encode_decode_hooks_and_a_failing_check_recomputes_with_a_warning(tmp_path):
  compute, c = Counted(), _cache(cache_dir=str(tmp_path))
  small = lambda r: {"mean": r["mean"], "labels": r["labels"].astype(np.uint8)}
  c.get_or_compute(_example(0), compute, encode=small)
  with np.load(c.store.path(c.key(_example(0)))) as npz:
    assert npz["labels"].dtype == np.uint8 and str(npz["key"]) == c.key(_example(0))

  def reject(arrays):
    raise cache.CacheEntryError("labels do not fit the image")

  with pytest.warns(RuntimeWarning,
                    match=r"toy-cache: cache file .*labels do not fit.*recomputing"):
    result = _cache(cache_dir=str(tmp_path), owner="toy-cache").get_or_compute(
        _example(0), compute, encode=small, decode=reject)
  assert compute.calls == 2 and result["labels"].dtype == np.int32


def test_entries_of_another_key_or_other_arrays_are_rejected():
  data = cache.encode_arrays({"mean": np.zeros(3)}, key="k")
  assert set(cache.decode_arrays(data, key="k", names=("mean",))) == {"mean"}
  with pytest.raises(cache.CacheEntryError, match="'k', not 'j'"):
    cache.decode_arrays(data, key="j", names=("mean",))
  with pytest.raises(cache.CacheEntryError, match=r"expected arrays \['key', 'labels'\]"):
    cache.decode_arrays(data, key="k", names=("labels",))
  with pytest.raises(cache.CacheEntryError, match="not an .npz"):
    cache.decode_arrays(b"", key="k", names=("mean",))
  with pytest.raises(ValueError, match="cache_entries.*>= 0"):
    _cache(cache_entries=-1)
  assert _cache(cache_entries=0).store is None
