"""jhseg.superpixels: SLIC sizes and connectivity, padding, the purity rule of DEL's labels."""
import numpy as np
import pytest
from scipy import ndimage

from jhseg import superpixels as sp
from jhseg.superpixels import labels as labels_lib


def _blocks_image(height=48, width=64):
  """Four flat colour quadrants: SLIC must not straddle their borders."""
  image = np.zeros((height, width, 3), np.uint8)
  image[:height // 2, :width // 2] = (200, 30, 30)
  image[:height // 2, width // 2:] = (30, 200, 30)
  image[height // 2:, :width // 2] = (30, 30, 200)
  image[height // 2:, width // 2:] = (220, 220, 40)
  return image


def test_slic_connected_consecutive_and_about_64_pixels():
  image = _blocks_image()
  labels = sp.slic_superpixels(image)
  n = labels.max() + 1
  assert labels.dtype == np.int32 and set(np.unique(labels)) == set(range(n))
  assert 0.5 * 48 * 64 / 64 <= n <= 1.5 * 48 * 64 / 64
  for k in range(n):  # connectivity enforced: one 4-connected piece each
    assert ndimage.label(labels == k)[1] == 1
  quadrant = np.zeros((48, 64), int)
  quadrant[:24, 32:], quadrant[24:, :32], quadrant[24:, 32:] = 1, 2, 3
  for k in range(n):  # flat colours: every superpixel inside one quadrant
    assert np.unique(quadrant[labels == k]).size == 1
  # first pixel in raster order numbering
  assert labels[0, 0] == 0


def test_slic_transform_pads_and_respects_valid_rectangle():
  image = np.zeros((40, 40, 3), np.float32)
  image[:32, :24] = _blocks_image(32, 24) / 255.0
  valid = np.zeros((40, 40), bool)
  valid[:32, :24] = True
  out = sp.make_slic_transform(max_superpixels=40, valid_field="valid")(
      {"image": image, "valid": valid})
  assert out["superpixels"].shape == (40, 40)
  assert (out["superpixels"][~valid] == -1).all() and (out["superpixels"][valid] >= 0).all()
  n = out["superpixels"].max() + 1
  np.testing.assert_array_equal(out["superpixel_mask"], np.arange(40) < n)
  with pytest.raises(ValueError, match="max_superpixels"):
    sp.make_slic_transform(max_superpixels=2, valid_field="valid")({"image": image, "valid": valid})


def test_relabel_consecutive():
  np.testing.assert_array_equal(labels_lib.relabel_consecutive(np.array([[7, 7, 3], [9, 3, 3]])),
                                [[0, 0, 1], [2, 1, 1]])


def test_purity_rule_on_hand_built_map():
  # superpixel 0: 4 px all segment 5 -> 5; superpixel 1: 3 of 4 px segment 6 (0.75 > 0.7) -> 6;
  # superpixel 2: 7 of 10 px segment 5 (0.7, not > 0.7) -> ignored; 3: absent -> ignored;
  # superpixel 4: 2 px of segment 8 and 2 padding (-1) segment pixels -> 8 (ignored pixels).
  superpixels = np.array([
      [0, 0, 1, 1, 4, 4],
      [0, 0, 1, 1, 4, 4],
      [2, 2, 2, 2, 2, 2],
      [2, 2, 2, 2, -1, -1]])
  segments = np.array([
      [5, 5, 6, 6, 8, -1],
      [5, 5, 6, 7, 8, -1],
      [5, 5, 5, 5, 5, 5],
      [5, 9, 9, 9, 0, 0]])
  got = sp.superpixel_segment_labels(superpixels, segments, num_superpixels=6)
  np.testing.assert_array_equal(got, [5, 6, -1, -1, 8, -1])
  loose = sp.superpixel_segment_labels(superpixels, segments, num_superpixels=6, purity=0.6)
  assert loose[2] == 5


def test_slic_transform_cache_hits_same_image_and_keeps_the_computed_time(monkeypatch):
  from jhseg.superpixels import slic as slic_lib
  calls = []
  real = slic_lib.slic_superpixels

  def counting(image, **options):
    calls.append(image.shape)
    return real(image, **options)

  monkeypatch.setattr(slic_lib, "slic_superpixels", counting)
  image = _blocks_image(24, 32).astype(np.float32) / 255.0
  transform = sp.make_slic_transform(max_superpixels=40, cache_entries=8)
  first = transform({"image": image})
  again = transform({"image": image.copy()})
  assert len(calls) == 1  # same content: computed once
  np.testing.assert_array_equal(again["superpixels"], first["superpixels"])
  assert again["superpixel_seconds"] == first["superpixel_seconds"] > 0
  transform({"image": image[::-1].copy()})  # another image: computed
  sp.make_slic_transform(max_superpixels=40, cache_entries=8, compactness=20.0)({"image": image})
  assert len(calls) == 3  # other options: its own cache, computed
  sp.make_slic_transform(max_superpixels=40)({"image": image})
  sp.make_slic_transform(max_superpixels=40)({"image": image})
  assert len(calls) == 5  # no cache by default
