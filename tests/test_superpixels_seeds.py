"""SEEDS superpixels with CAST's settings (jhseg.superpixels.seeds)."""
import cv2
import numpy as np
import pytest

from jhseg.superpixels import seeds


def _image(seed=0, size=224):
  """Two flat colours split by a vertical edge at a column no block boundary falls on."""
  rng = np.random.default_rng(seed)
  image = np.empty((size, size, 3), np.uint8)
  image[:, :101] = (200, 40, 30)
  image[:, 101:] = (20, 60, 210)
  noise = rng.integers(-6, 7, image.shape)
  return np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8)


def _same_partition(a, b):
  pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
  return pairs.shape[1] == len(np.unique(a)) == len(np.unique(b))


def test_matches_opencv_with_the_authors_settings_up_to_renumbering():
  image = _image()
  labels, mask = seeds.seeds_superpixels(image)
  lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
  direct = cv2.ximgproc.createSuperpixelSEEDS(224, 224, 3, num_superpixels=196, num_levels=1,
                                              prior=2, histogram_bins=15, double_step=False)
  direct.iterate(lab, num_iterations=20)
  assert labels.shape == (224, 224) and labels.dtype == np.int32
  assert mask.shape == (196,) and mask.dtype == bool
  assert _same_partition(labels, direct.getLabels())
  n = len(np.unique(labels))
  np.testing.assert_array_equal(np.unique(labels), np.arange(n))  # contiguous
  assert mask.sum() == n and mask[:n].all()  # the first n slots
  assert 150 <= n <= 196


def test_deterministic_and_float_input_truncated_as_the_authors():
  image = _image(1)
  first, _ = seeds.seeds_superpixels(image)
  second, _ = seeds.seeds_superpixels(image)
  np.testing.assert_array_equal(first, second)
  as_float = (image.astype(np.float32) + 0.5) / 255  # truncates back to `image`
  from_float, _ = seeds.seeds_superpixels(as_float)
  np.testing.assert_array_equal(first, from_float)


def test_superpixels_follow_a_sharp_colour_edge():
  labels, _ = seeds.seeds_superpixels(_image(2))
  left = np.zeros(labels.shape, bool)
  left[:, :101] = True
  straddling = [k for k in np.unique(labels) if 0 < left[labels == k].mean() < 1]
  assert len(straddling) == 0


def test_batch_padding_and_errors():
  images = np.stack([_image(3), _image(4)])
  labels, masks = seeds.seeds_superpixels_batch(images, max_segments=200)
  assert labels.shape == (2, 224, 224) and masks.shape == (2, 200)
  assert not masks[:, 196:].any()
  with pytest.raises(ValueError, match="max_segments=10"):
    seeds.seeds_superpixels(images[0], max_segments=10)
  with pytest.raises(ValueError, match=r"RGB image \(H, W, 3\)"):
    seeds.seeds_superpixels(images[0, ..., 0])
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    seeds.seeds_superpixels(images[0].astype(np.float32))
  small = seeds.SeedsOptions(num_superpixels=16, num_iterations=4)
  labels, mask = seeds.seeds_superpixels(images[0, :64, :64], small)
  assert mask.shape == (16,) and labels.max() < 16
