"""HSG coherent regions G_e: edge sources, the raised-threshold cut, the data transform."""
import concurrent.futures
import pickle
import threading

import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from jhseg.data import coherent_regions as cr
from jhseg.hierarchy import edge_hierarchy


def _components(h, v, threshold):
  """Independent reference (SciPy): 4-connected components of the edges with weight <= t."""
  height, width = v.shape[0] + 1, h.shape[1] + 1
  index = np.arange(height * width).reshape(height, width)
  rows = np.concatenate([index[:, :-1][h <= threshold], index[:-1, :][v <= threshold]])
  cols = np.concatenate([index[:, 1:][h <= threshold], index[1:, :][v <= threshold]])
  graph = coo_matrix((np.ones(rows.size), (rows, cols)), shape=(height * width,) * 2)
  count, labels = connected_components(graph, directed=False)
  return count, labels.reshape(height, width)


def _same_partition(a, b):
  pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
  return pairs.shape[1] == len(np.unique(a)) == len(np.unique(b))


def _stripes(values, width=16, height=12):
  """Grey vertical stripes `width` pixels wide with the given grey values."""
  image = np.zeros((height, width * len(values), 3), np.float32)
  for k, value in enumerate(values):
    image[:, k * width:(k + 1) * width] = value
  return image


def test_two_flat_colour_halves_give_two_regions_split_at_the_step():
  image = np.zeros((20, 28, 3), np.uint8)
  image[:, 14:] = (200, 60, 30)
  regions = cr.CoherentRegions()({"image": image})["regions"]
  assert regions.dtype == np.int32 and regions.shape == (20, 28)
  expected = np.zeros((20, 28), np.int32)
  expected[:, 14:] = 1
  np.testing.assert_array_equal(regions, expected)


def test_builtin_edges_are_calibrated_to_the_colour_contrast():
  # Grey step 0 -> 0.3: RGB Euclidean contrast 0.3 * sqrt(3). The two pixels straddling the
  # step sample the smoothed gradient half a pixel off its peak: factor exp(-1 / (8 s^2)),
  # averaged over s = 1, 2, 4.
  edges = cr.ColourGradientEdges()({"image": _stripes([0.0, 0.3], width=20)})
  expected = 0.3 * np.sqrt(3) * np.mean([np.exp(-1 / (8 * s * s)) for s in (1, 2, 4)])
  np.testing.assert_allclose(edges[:, 19:21], expected, rtol=0.02)
  assert cr.ColourGradientEdges()({"image": np.full((8, 9, 3), 0.4, np.float32)}).max() == 0.0


def test_at_most_n_rule_on_stripes_with_known_contrasts():
  # Steps 0.1, 0.3, 0.5 in grey: boundary strengths ~0.17, 0.5, 0.83 (see calibration above).
  image = _stripes([0.0, 0.1, 0.4, 0.9])
  make = lambda n: cr.CoherentRegions(max_regions=n)({"image": image})["regions"][0, ::16]
  # From t = 0.25 the 0.17 boundary is already gone: 3 regions although 4 are allowed.
  np.testing.assert_array_equal(make(4), [0, 0, 1, 2])
  np.testing.assert_array_equal(make(3), [0, 0, 1, 2])
  np.testing.assert_array_equal(make(2), [0, 0, 0, 1])  # the weaker 0.5 boundary goes first
  np.testing.assert_array_equal(make(1), [0, 0, 0, 0])


@pytest.mark.parametrize("max_regions", [1, 5, 20])
def test_cut_is_the_first_grid_threshold_with_at_most_n_regions(max_regions):
  rng = np.random.default_rng(3)
  image = rng.random((24, 20, 3)).astype(np.float32)
  h, v = cr.edge_map_ucm(cr.ColourGradientEdges()({"image": image}))
  labels, threshold = cr.raised_threshold_cut(h, v, max_regions=max_regions, start_threshold=0.05,
                                              threshold_step=0.01)
  count, reference = _components(h, v, threshold)
  assert labels.max() + 1 == count <= max_regions
  assert _same_partition(labels, reference)
  k = round((threshold - 0.05) / 0.01)
  if k > 0:  # the previous grid threshold still had too many regions
    assert _components(h, v, 0.05 + (k - 1) * 0.01)[0] > max_regions


def test_num_regions_at_thresholds_matches_connected_components():
  rng = np.random.default_rng(0)
  h = rng.integers(0, 5, (6, 7)).astype(np.float64) / 4
  v = rng.integers(0, 5, (5, 8)).astype(np.float64) / 4
  thresholds = np.array([1.0, -0.1, 0.0, 0.25, 0.3, 0.5, 0.75])
  expected = [_components(h, v, t)[0] for t in thresholds]
  np.testing.assert_array_equal(edge_hierarchy.num_regions_at_thresholds(h, v, thresholds),
                                expected)


def test_stored_edges_one_pixel_lines_count_half():
  edges = np.zeros((12, 12), np.float32)
  edges[:, 6] = 0.8    # one pixel wide: boundary strength 0.4 > 0.25, a region boundary
  edges[3, :6] = 0.4   # one pixel wide: 0.2 <= 0.25, not a boundary
  image = np.zeros((12, 12, 3), np.uint8)
  transform = cr.CoherentRegions(edge_source="stored", edge_options={"feature": "sed"})
  regions = transform({"image": image, "sed": edges})["regions"]
  assert regions.max() == 1
  assert len(np.unique(regions[:, :6])) == 1 and len(np.unique(regions[:, 7:])) == 1
  assert regions[0, 0] != regions[0, 11]
  as_uint8 = transform({"image": image, "sed": (edges[..., None] * 255).round().astype(np.uint8)})
  np.testing.assert_array_equal(as_uint8["regions"], regions)


def test_deterministic_and_input_untouched():
  rng = np.random.default_rng(7)
  example = {"image": (rng.random((30, 26, 3)) * 255).astype(np.uint8)}
  before = example["image"].copy()
  transform = cr.CoherentRegions(max_regions=12)
  first, second = transform(example), transform(dict(example))
  np.testing.assert_array_equal(first["regions"], second["regions"])
  np.testing.assert_array_equal(example["image"], before)
  assert "regions" not in example and 1 <= first["regions"].max() + 1 <= 12


def test_edge_source_table_and_bad_input_errors(tmp_path):
  with pytest.raises(ValueError, match=r"'builtin', 'opencv_sed', 'stored'"):
    cr.make_edge_source("sobel")
  with pytest.raises(ValueError, match=r"unknown option\(s\) \['sigma'\]"):
    cr.make_edge_source("builtin", sigma=2)
  with pytest.raises(ValueError, match="model_path"):
    cr.make_edge_source("opencv_sed")
  with pytest.raises(FileNotFoundError, match="nowhere.yml.gz"):
    cr.make_edge_source("opencv_sed", model_path=str(tmp_path / "nowhere.yml.gz"))
  try:
    import cv2  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    model = tmp_path / "model.yml.gz"
    model.write_bytes(b"")
    with pytest.raises(ImportError, match="opencv-contrib-python"):
      cr.make_edge_source("opencv_sed", model_path=str(model))
  image = np.zeros((5, 6, 3), np.float32)
  with pytest.raises(KeyError, match="'edges'"):
    cr.StoredEdges()({"image": image})
  with pytest.raises(ValueError, match=r"\(5, 6\)"):
    cr.StoredEdges()({"image": image, "edges": np.zeros((6, 5), np.float32)})
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    cr.StoredEdges()({"image": image, "edges": np.full((5, 6), 2.0, np.float32)})
  with pytest.raises(ValueError, match="'image'.*RGB"):
    cr.CoherentRegions()({"image": np.zeros((5, 6), np.float32)})
  with pytest.raises(ValueError, match="coherent_regions.*max_region"):
    cr.CoherentRegions.from_config({"max_region": 10})
  assert cr.CoherentRegions.from_config({"max_regions": 10}).max_regions == 10


def test_first_cut_with_at_most_matches_threshold_cuts():
  from jhseg import hierarchy  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(5)
  h = rng.integers(0, 5, (7, 6)).astype(np.float64) / 4
  v = rng.integers(0, 5, (6, 7)).astype(np.float64) / 4
  thresholds = [0.25, 0.5, 0.75, 1.0]
  counts = [_components(h, v, t)[0] for t in thresholds]
  for n in sorted(set(counts)):
    labels, k = edge_hierarchy.first_cut_with_at_most(h, v, thresholds=thresholds, max_regions=n)
    assert k == next(i for i, c in enumerate(counts) if c <= n)
    np.testing.assert_array_equal(labels, hierarchy.cut_at_threshold(h, v, thresholds[k]))
  # None qualifies: the last threshold's cut, as a loop running out of thresholds.
  labels, k = edge_hierarchy.first_cut_with_at_most(h, v, thresholds=[0.0, 0.25], max_regions=1)
  assert k == 1 and labels.max() + 1 == counts[0]
  with pytest.raises(ValueError, match="max_regions"):
    edge_hierarchy.first_cut_with_at_most(h, v, thresholds=[0.5], max_regions=0)
  single, _ = edge_hierarchy.first_cut_with_at_most(np.zeros((1, 0)), np.zeros((0, 1)),
                                                    thresholds=[0.5], max_regions=1)
  np.testing.assert_array_equal(single, [[0]])


def test_opencv_sed_glue_passes_rgb_float_in_unit_range(tmp_path, monkeypatch):
  """With a stand-in cv2 module: what reaches detectEdges, and what comes back."""
  import sys  # pylint: disable=g-import-not-at-top
  import types  # pylint: disable=g-import-not-at-top
  seen = {}

  class Detector:

    def detectEdges(self, image):  # pylint: disable=invalid-name
      seen["image"] = image
      return image[..., 0] * 2.0 - 0.5  # out of [0, 1] on purpose: must be clipped

  fake = types.ModuleType("cv2")
  fake.ximgproc = types.SimpleNamespace(
      createStructuredEdgeDetector=lambda path: seen.setdefault("model", path) and Detector())
  monkeypatch.setitem(sys.modules, "cv2", fake)
  model = tmp_path / "model.yml.gz"
  model.write_bytes(b"")
  source = cr.make_edge_source("opencv_sed", model_path=str(model))
  image = np.zeros((4, 5, 3), np.uint8)
  image[:, :, 0] = [0, 64, 128, 191, 255]
  edges = source({"image": image})
  assert seen["model"] == str(model)
  assert seen["image"].dtype == np.float32 and seen["image"].flags.c_contiguous
  np.testing.assert_allclose(seen["image"][0, :, 0], np.array([0, 64, 128, 191, 255]) / 255)
  np.testing.assert_allclose(edges[0],
                             np.clip(np.array([0, 64, 128, 191, 255]) / 255 * 2 - 0.5, 0, 1),
                             atol=1e-6)


# --- Cache: G_e once per image. ---


class _CountingEdges:
  """Wraps an edge source and counts its calls (thread-safe)."""

  def __init__(self, source):
    self.source, self.calls, self._lock = source, 0, threading.Lock()

  def __call__(self, example):
    with self._lock:
      self.calls += 1
    return self.source(example)

  def __getstate__(self):
    return {"source": self.source, "calls": self.calls}

  def __setstate__(self, state):
    self.__init__(state["source"])
    self.calls = state["calls"]


def _counted(transform):
  transform.edges = _CountingEdges(transform.edges)
  return transform


def _photo(seed, shape=(18, 22)):
  """Noise on a two-colour step: a few regions, different for every seed."""
  rng = np.random.default_rng(seed)
  image = np.zeros(shape + (3,), np.float32)
  image[:, shape[1] // 2:] = rng.random(3)
  return (np.clip(image + 0.15 * rng.random(image.shape), 0, 1) * 255).astype(np.uint8)


def _uncached(example, **options):
  return cr.CoherentRegions(cache_entries=0, **options)(example)["regions"]


def test_memory_cache_hit_is_identical_and_skips_the_edge_source():
  example = {"image": _photo(0)}
  reference = _uncached(example, max_regions=12)
  transform = _counted(cr.CoherentRegions(max_regions=12))
  first = transform(example)["regions"]
  first[...] = -7  # the caller owns its array: the cached entry must not change
  second = transform({"image": example["image"].copy()})["regions"]
  assert transform.edges.calls == 1
  assert second.dtype == np.int32
  np.testing.assert_array_equal(second, reference)
  other = dict(example, image=example["image"].copy())
  other["image"][3, 4, 0] ^= 1  # one bit of one pixel: another image
  transform(other)
  assert transform.edges.calls == 2


def test_without_cache_the_edge_source_runs_every_time():
  transform = _counted(cr.CoherentRegions(cache_entries=0))
  example = {"image": _photo(1)}
  transform(example), transform(example)
  assert transform.store is None and transform.edges.calls == 2
  with pytest.raises(ValueError, match="cache_entries.*>= 0"):
    cr.CoherentRegions(cache_entries=-1)
  with pytest.raises(ValueError, match=r"coherent_regions.*'cache_directory'"):
    cr.CoherentRegions.from_config({"cache_directory": "/tmp"})
  configured = cr.CoherentRegions.from_config({"cache_dir": "", "cache_entries": 3})
  assert isinstance(configured.store, cr.MemoryStore) and configured.store.capacity == 3


def test_every_setting_that_changes_the_regions_changes_the_key():
  image = _photo(2)
  edges = np.zeros(image.shape[:2], np.float32)
  stored = dict(edge_source="stored", edge_options={"feature": "sed"})
  variants = {
      "default": {},
      "sigmas": dict(edge_options={"sigmas": (1.0, 2.0)}),
      "max_regions": dict(max_regions=47),
      "start_threshold": dict(start_threshold=0.3),
      "threshold_step": dict(threshold_step=0.02),
      "min_region_area": dict(min_region_area=10),
      "stored": stored,
      "stored other feature": dict(edge_source="stored", edge_options={"feature": "sed2"}),
  }
  example = {"image": image, "sed": edges, "sed2": edges}
  keys = {name: cr.CoherentRegions(**options).cache_key(example)
          for name, options in variants.items()}
  assert len(set(keys.values())) == len(keys), keys
  # Settings that do not change the regions do not change the key.
  same = [dict(edge_options={"sigmas": (1.0, 2.0, 4.0)}), dict(output_field="g_e"),
          dict(cache_entries=5), dict(min_region_area=0.0)]
  for options in same:
    assert cr.CoherentRegions(**options).cache_key(example) == keys["default"], options
  # The data: the same bytes in another shape or dtype, and the stored edge map, count.
  default, by_stored = cr.CoherentRegions(), cr.CoherentRegions(**stored)
  assert default.cache_key({"image": image.reshape(22, 18, 3)}) != keys["default"]
  assert default.cache_key({"image": image.view(np.int8)}) != keys["default"]
  assert default.cache_key({"image": image, "sed": edges + 0.5}) == keys["default"]
  assert by_stored.cache_key({"image": image, "sed": edges + 0.5}) != keys["stored"]
  assert by_stored.cache_key({"image": image, "sed": edges.astype(np.float64)}) != keys["stored"]
  with pytest.raises(KeyError, match="'sed'"):  # a missing field is still the source's error
    by_stored({"image": image})


def test_stored_edges_are_part_of_the_cached_entry():
  image = np.zeros((12, 12, 3), np.uint8)
  split, whole = np.zeros((12, 12), np.float32), np.zeros((12, 12), np.float32)
  split[:, 6] = 0.8  # a boundary (see test_stored_edges_one_pixel_lines_count_half)
  transform = cr.CoherentRegions(edge_source="stored")
  assert transform({"image": image, "edges": split})["regions"].max() == 1
  assert transform({"image": image, "edges": whole})["regions"].max() == 0


def test_disk_cache_round_trip_across_instances(tmp_path):
  examples = [{"image": _photo(seed)} for seed in range(3)]
  references = [_uncached(e, max_regions=8) for e in examples]
  writer = _counted(cr.CoherentRegions(max_regions=8, cache_dir=str(tmp_path / "ge")))
  for example in examples:
    writer(example)
  files = sorted((tmp_path / "ge").rglob("*"))
  entries = [f for f in files if f.is_file()]
  assert len(entries) == 3 and all(f.suffix == ".npz" and f.parent.parent == tmp_path / "ge"
                                   for f in entries)  # no temporary files left
  reader = _counted(pickle.loads(pickle.dumps(
      cr.CoherentRegions(max_regions=8, cache_dir=str(tmp_path / "ge")))))
  for example, reference in zip(examples, references):
    np.testing.assert_array_equal(reader(example)["regions"], reference)
    key = reader.cache_key(example)
    with np.load(reader.store.path(key)) as npz:  # a plain .npz anyone can read
      assert str(npz["key"]) == key and npz["regions"].dtype == np.uint8
      np.testing.assert_array_equal(npz["regions"], reference)
  assert writer.edges.calls == 3 and reader.edges.calls == 0
  # A changed setting in the same folder computes its own regions, never the old ones.
  finer = _counted(cr.CoherentRegions(max_regions=1, cache_dir=str(tmp_path / "ge")))
  np.testing.assert_array_equal(finer(examples[0])["regions"], 0)
  assert finer.edges.calls == 1


def test_memory_cache_is_bounded_and_evicts_the_least_recently_used():
  a, b, c = ({"image": _photo(seed)} for seed in (10, 11, 12))
  transform = _counted(cr.CoherentRegions(cache_entries=2))
  for example in (a, b, a, c):  # a was used after b: c evicts b
    transform(example)
  assert len(transform.store) == 2 and transform.edges.calls == 3
  transform(a)
  assert transform.edges.calls == 3  # still cached
  transform(b)
  assert transform.edges.calls == 4  # evicted, recomputed (and now c is out)
  transform(c)
  assert transform.edges.calls == 5 and len(transform.store) == 2
  restored = pickle.loads(pickle.dumps(transform))  # a worker process starts empty
  assert len(restored.store) == 0 and restored.store.capacity == 2


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "another image's"])
def test_damaged_cache_file_is_recomputed_with_a_warning_naming_it(tmp_path, damage):
  example, other = {"image": _photo(20)}, {"image": _photo(21)}
  reference = _uncached(example)
  writer = cr.CoherentRegions(cache_dir=str(tmp_path))
  writer(example), writer(other)
  path = writer.store.path(writer.cache_key(example))
  good = path.read_bytes()
  path.write_bytes({"truncated": good[:len(good) // 2], "garbage": b"PK\x03\x04" + b"\x00" * 64,
                    "empty": b"",
                    "another image's": writer.store.path(writer.cache_key(other)).read_bytes(),
                    }[damage])
  reader = _counted(cr.CoherentRegions(cache_dir=str(tmp_path)))
  with pytest.warns(RuntimeWarning, match=f"{path.name}.*recomputing"):
    regions = reader(example)["regions"]
  np.testing.assert_array_equal(regions, reference)
  assert reader.edges.calls == 1
  np.testing.assert_array_equal(reader(example)["regions"], reference)  # rewritten: read back
  assert reader.edges.calls == 1


def test_decode_regions_rejects_entries_that_do_not_fit_the_image():
  labels = np.array([[0, 1], [2, 2]], np.int32)
  data = cr.encode_regions(labels, key="k")
  np.testing.assert_array_equal(cr.decode_regions(data, key="k", shape=(2, 2), max_regions=3),
                                labels)
  with pytest.raises(cr.CacheEntryError, match=r"shape \(3, 2\)"):
    cr.decode_regions(data, key="k", shape=(3, 2), max_regions=3)
  with pytest.raises(cr.CacheEntryError, match="max_regions 2"):
    cr.decode_regions(data, key="k", shape=(2, 2), max_regions=2)
  with pytest.raises(cr.CacheEntryError, match="'k'.*not 'j'"):
    cr.decode_regions(data, key="j", shape=(2, 2), max_regions=3)


@pytest.mark.parametrize("where", ["memory", "disk"])
def test_threads_sharing_one_transform_get_the_uncached_regions(tmp_path, where):
  examples = [{"image": _photo(seed, shape=(14, 16))} for seed in range(6)]
  references = [_uncached(e) for e in examples]
  options = dict(cache_entries=4) if where == "memory" else dict(cache_dir=str(tmp_path))
  transform = _counted(cr.CoherentRegions(**options))  # 4 < 6 images: evictions under load
  order = [i % 6 for i in range(48)]
  with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
    results = list(pool.map(lambda i: transform(examples[i])["regions"], order))
  for i, regions in zip(order, results):
    np.testing.assert_array_equal(regions, references[i])
  assert transform.edges.calls < len(order)
  if where == "disk":
    assert sorted(p.suffix for p in tmp_path.rglob("*") if p.is_file()) == [".npz"] * 6
