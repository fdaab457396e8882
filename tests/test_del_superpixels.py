"""OpenCV-contrib SLIC as a selectable superpixel method (`slic_opencv`) for DEL."""
import numpy as np
import pytest
from scipy import ndimage

from jhseg import superpixels
from jhseg.superpixels import slic


def _two_colour_image():
  rng = np.random.default_rng(0)
  image = np.zeros((48, 64, 3), np.float32)
  image[:, :27] = (0.9, 0.1, 0.1)   # a vertical colour edge between columns 26 and 27
  image[:, 27:] = (0.1, 0.2, 0.9)
  return np.clip(image + 0.02 * rng.standard_normal(image.shape), 0, 1).astype(np.float32)


def test_slic_opencv_gives_connected_consecutive_labels_along_colour_edges():
  image = _two_colour_image()
  labels = superpixels.get_method("slic_opencv")(image, pixels_per_superpixel=64.0)
  assert labels.shape == (48, 64) and labels.dtype == np.int32
  count = int(labels.max()) + 1
  np.testing.assert_array_equal(np.unique(labels), np.arange(count))
  assert 0.5 * 48 * 64 / 64 <= count <= 2 * 48 * 64 / 64  # ~64 px each (step 8)
  for k in range(count):  # every label one 4-connected region
    assert ndimage.label(labels == k)[1] == 1
  # no superpixel crosses the colour edge
  for k in range(count):
    columns = np.nonzero(labels == k)[1]
    assert columns.max() < 27 or columns.min() >= 27
  # uint8 input gives the same labels as its float version
  np.testing.assert_array_equal(
      slic.slic_opencv_superpixels((image * 255 + 0.5).astype(np.uint8)), labels)


def test_slic_method_is_selected_by_name_in_the_transform():
  image = _two_colour_image()
  example = {"image": image}
  for name, fn in (("slic", slic.slic_superpixels), ("slic_opencv", slic.slic_opencv_superpixels)):
    out = slic.make_slic_transform(max_superpixels=200, method=name)(dict(example))
    np.testing.assert_array_equal(out["superpixels"], fn(image))
  with pytest.raises(ValueError, match=r"unknown SLIC method 'gslic'.*\['slic', 'slic_opencv'\]"):
    slic.make_slic_transform(max_superpixels=200, method="gslic")
