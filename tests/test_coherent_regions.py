"""HSG coherent regions G_e: edge sources, the raised-threshold cut, the data transform."""
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
  np.testing.assert_array_equal(edge_hierarchy.num_regions_at_thresholds(h, v, thresholds), expected)


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
  np.testing.assert_allclose(edges[0], np.clip(np.array([0, 64, 128, 191, 255]) / 255 * 2 - 0.5, 0, 1),
                             atol=1e-6)
