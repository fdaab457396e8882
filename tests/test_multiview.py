"""HSG multiview augmentation: geometry, region correspondence across views, shapes."""
import numpy as np
import pytest

from jhseg.data import multiview as mv
from jhseg.data import transforms

GEOMETRY_ONLY = dict(jitter_probability=0.0, grayscale_probability=0.0, blur_probability=0.0)


def _run(example, seed=0, **overrides):
  transform = mv.make_multiview(mv.MultiviewConfig(**overrides))
  assert transforms.is_random(transform)
  return transform(example, np.random.default_rng(seed))


def test_flip_and_crop_geometry_at_scale_one():
  height, width, size = 9, 11, 5
  ramp = np.arange(height * width, dtype=np.float32).reshape(height, width)
  image = np.stack([ramp / ramp.max(), 1 - ramp / ramp.max(), np.zeros_like(ramp)], -1)
  regions = np.arange(height * width, dtype=np.int32).reshape(height, width)
  seen_flip = set()
  for seed in range(6):
    out = _run({"image": image, "regions": regions}, seed=seed, num_views=3, crop_size=size,
               min_scale=1.0, max_scale=1.0, **GEOMETRY_ONLY)
    for v in range(3):
      (_, _, ty), (_, sx, tx) = out["view_transforms"][v]
      top = int(ty)
      flipped = sx < 0
      seen_flip.add(bool(flipped))
      # View column 0 shows image column tx; a flipped view runs leftwards from it.
      left = int(tx) - size + 1 if flipped else int(tx)
      assert 0 <= top <= height - size and 0 <= left <= width - size
      crop = slice(top, top + size), slice(left, left + size)
      expected_regions = regions[crop][:, ::-1] if flipped else regions[crop]
      np.testing.assert_array_equal(out["view_regions"][v], expected_regions)
      expected_image = image[crop][:, ::-1] if flipped else image[crop]
      np.testing.assert_allclose(out["views"][v], expected_image, atol=1e-6)
  assert seen_flip == {True, False}


def test_rescale_by_two_repeats_pixels_in_blocks():
  rng = np.random.default_rng(1)
  regions = rng.integers(0, 40, (6, 7)).astype(np.int32)
  image = rng.random((6, 7, 3)).astype(np.float32)
  out = _run({"image": image, "regions": regions}, crop_size=8, min_scale=2.0, max_scale=2.0,
             flip_probability=0.0, **GEOMETRY_ONLY)
  for v in range(2):
    (sy, _, ty), (_, sx, tx) = out["view_transforms"][v]
    assert sy == sx == 0.5
    top, left = round((ty + 0.5) * 2 - 0.5), round((tx + 0.5) * 2 - 0.5)  # ty = (top + .5)/2 - .5
    rows = (np.arange(8) + top) // 2
    cols = (np.arange(8) + left) // 2
    np.testing.assert_array_equal(out["view_regions"][v], regions[np.ix_(rows, cols)])


def test_region_ids_correspond_across_views():
  # Flat colour per region: wherever a view pixel and its 3x3 neighbours carry region k,
  # the view shows region k's colour, in every view (ids mean the same region everywhere).
  rng = np.random.default_rng(2)
  regions = np.repeat(np.repeat(rng.integers(0, 6, (4, 5)), 8, 0), 8, 1).astype(np.int32)
  palette = rng.random((6, 3)).astype(np.float32)
  image = palette[regions]
  out = _run({"image": image, "regions": regions}, seed=4, num_views=4, crop_size=24,
             **GEOMETRY_ONLY)
  for v in range(4):
    labels = out["view_regions"][v]
    padded = np.pad(labels, 1, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3))
    interior = (windows == labels[..., None, None]).all(axis=(-1, -2)) & (labels >= 0)
    assert interior.sum() > 50
    np.testing.assert_allclose(out["views"][v][interior], palette[labels[interior]], atol=1e-5)


def test_outside_pixels_are_minus_one_and_padded():
  image = np.full((4, 3, 3), 0.9, np.float32)
  regions = np.array([[0, 0, 1]] * 4, np.int32)
  semantic = np.full((4, 3), 7, np.int32)
  nested = np.stack([np.full((4, 3), 2), regions + 5]).astype(np.int16)  # e.g. objects, parts
  out = _run({"image": image, "regions": regions, "segmentation": semantic, "nested": nested},
             crop_size=6, min_scale=1.0, max_scale=1.0, flip_probability=0.0,
             label_fields=("segmentation", "nested"), **GEOMETRY_ONLY)
  assert out["view_nested"].shape == (2, 2, 6, 6) and out["view_nested"].dtype == np.int32
  inside = np.zeros((6, 6), bool)
  inside[:4, :3] = True  # bottom/right padding, crop at (0, 0)
  for v in range(2):
    np.testing.assert_array_equal(out["view_regions"][v] >= 0, inside)
    np.testing.assert_array_equal(out["view_regions"][v][:4, :3], regions)
    np.testing.assert_array_equal(out["view_segmentation"][v], np.where(inside, 7, -1))
    np.testing.assert_array_equal(out["view_nested"][v][1][:4, :3], regions + 5)
    assert np.all(out["view_nested"][v][:, ~inside] == -1)
    np.testing.assert_allclose(out["views"][v][~inside], np.tile(mv.IMAGENET_MEAN, (24, 1)),
                               atol=1e-6)
    np.testing.assert_allclose(out["views"][v][inside], 0.9, atol=1e-6)


def test_fixed_shapes_and_dtypes_whatever_the_image_size():
  outs = []
  for seed, (h, w) in enumerate([(40, 30), (13, 57)]):
    rng = np.random.default_rng(seed)
    example = {"image": (rng.random((h, w, 3)) * 255).astype(np.uint8),
               "regions": rng.integers(0, 48, (h, w)).astype(np.int32),
               "image/id": np.asarray(b"x"), "other": np.zeros((h, w))}
    outs.append(_run(example, seed=seed, num_views=3, crop_size=16, keep_fields=("image/id",),
                     blur_probability=0.5))
  for out in outs:
    assert sorted(out) == ["image/id", "view_regions", "view_transforms", "views"]
    assert out["views"].shape == (3, 16, 16, 3) and out["views"].dtype == np.float32
    assert out["view_regions"].shape == (3, 16, 16) and out["view_regions"].dtype == np.int32
    assert out["view_transforms"].shape == (3, 2, 3) and out["view_transforms"].dtype == np.float32
    assert 0.0 <= out["views"].min() and out["views"].max() <= 1.0
  assert np.stack([o["views"] for o in outs]).shape == (2, 3, 16, 16, 3)


def test_same_seed_same_views_and_views_differ():
  rng = np.random.default_rng(0)
  example = {"image": rng.random((20, 20, 3)).astype(np.float32),
             "regions": rng.integers(0, 5, (20, 20)).astype(np.int32)}
  a, b = _run(example, seed=9, crop_size=12), _run(example, seed=9, crop_size=12)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
  assert not np.array_equal(a["views"][0], a["views"][1])


def test_photometric_steps():
  rng = np.random.default_rng(0)
  image = rng.random((6, 7, 3)).astype(np.float32)
  gray = mv.grayscale(image)
  np.testing.assert_allclose(gray[..., 0], image @ [0.299, 0.587, 0.114], rtol=1e-6)
  assert np.all(gray[..., 0] == gray[..., 2])
  np.testing.assert_allclose(mv.adjust_saturation(image, 0.0), gray, atol=1e-6)
  np.testing.assert_allclose(mv.adjust_hue(image, 1.0), image, atol=1e-5)  # a full turn
  np.testing.assert_allclose(mv.adjust_hue(np.array([[[1.0, 0, 0]]]), 1 / 3), [[[0, 1.0, 0]]],
                             atol=1e-6)  # red -> green
  contrast0 = mv.adjust_contrast(image, 0.0)
  np.testing.assert_allclose(contrast0, np.mean(gray[..., 0]), atol=1e-6)
  e = np.exp(1.0)  # sigma = 1: weights exp(-x^2) for x = -2..2 -> e^-4, e^-1, 1, e^-1, e^-4
  expected = np.array([e ** -4, e ** -1, 1, e ** -1, e ** -4])
  np.testing.assert_allclose(mv.blur_kernel(1.0), expected / expected.sum(), rtol=1e-12)
  flat = np.full((5, 5, 3), 0.3, np.float32)
  np.testing.assert_allclose(mv.blur(flat, 3.0), flat, atol=1e-6)


def test_bad_input_and_config_errors():
  image = np.zeros((4, 4, 3), np.float32)
  with pytest.raises(KeyError, match="'regions'"):
    _run({"image": image})
  with pytest.raises(ValueError, match=r"'regions'.*\(4, 4\)"):
    _run({"image": image, "regions": np.zeros((4, 5), np.int32)})
  with pytest.raises(ValueError, match="multiview.*crop"):
    mv.MultiviewConfig.from_config({"crop": 3})
  assert mv.MultiviewConfig.from_config({"crop_size": 32, "label_fields": ["a"]}).label_fields == ("a",)


def test_pipeline_regions_then_views():
  from jhseg.data.coherent_regions import CoherentRegions  # pylint: disable=g-import-not-at-top
  image = np.zeros((30, 40, 3), np.uint8)
  image[:, 20:] = 255
  steps = [CoherentRegions(), mv.make_multiview(mv.MultiviewConfig(crop_size=16))]
  out = transforms.apply_transforms({"image": image}, steps, seed=0, position=5)
  again = transforms.apply_transforms({"image": image}, steps, seed=0, position=5)
  np.testing.assert_array_equal(out["view_regions"], again["view_regions"])
  assert set(np.unique(out["view_regions"])) <= {-1, 0, 1}


def test_grain_training_batches_stack():
  from jhseg.data import pipeline  # pylint: disable=g-import-not-at-top
  from jhseg.data.coherent_regions import CoherentRegions  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  source = [{"image": (rng.random((h, w, 3)) * 255).astype(np.uint8)}
            for h, w in ((20, 24), (31, 17), (16, 16))]
  steps = [CoherentRegions(max_regions=8), mv.make_multiview(mv.MultiviewConfig(crop_size=12))]
  batch = next(iter(pipeline.train_dataset(source, steps, seed=1, local_batch_size=2,
                                           num_threads=1)))
  assert batch["views"].shape == (2, 2, 12, 12, 3) and batch["view_regions"].shape == (2, 2, 12, 12)
  assert batch["view_regions"].max() < 8
