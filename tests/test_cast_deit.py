"""CAST's DeiT training: mixup / cutmix / label smoothing and the soft-target loss by hand and
against a NumPy transcription of timm's Mixup, RandAugment operations by hand, the training
and evaluation views, the trainable set and weight-decay groups, and one tiny end to end."""
import importlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jhseg.data import mixing
from jhseg.data import randaugment as ra
from jhseg.data.sources import load_source
from jhseg.data.transforms import apply_transforms
from jhseg.losses import classification
from jhseg.tasks import cast_deit
from jhseg.train import optim

import numpy_init

configs = importlib.import_module("experiments.configs.cast_deit")


# ----------------------------------------------------------------------------- mixing


@jax.jit
def _targets():
  return (mixing.smooth_one_hot(jnp.array([2, 0]), 4, smoothing=0.1),
          mixing.mix_targets(jnp.array([2, 0, 1]), 3, jnp.float32(0.7), smoothing=0.0))


def test_smooth_one_hot_and_mixed_targets_by_hand():
  y, t = (np.asarray(x) for x in _targets())
  np.testing.assert_allclose(y, [[0.025, 0.025, 0.925, 0.025], [0.925, 0.025, 0.025, 0.025]],
                             rtol=1e-6)
  # lam 0.7, batch [2, 0, 1]: row 0 mixes with row 2 (label 1), row 1 with itself.
  np.testing.assert_allclose(t, [[0, 0.3, 0.7], [1, 0, 0], [0, 0.7, 0.3]], atol=1e-6)
  np.testing.assert_allclose(t.sum(1), 1.0, rtol=1e-6)


def test_cutmix_pastes_the_box_from_the_reversed_batch_and_corrects_lambda():
  images = jnp.arange(2 * 4 * 5, dtype=jnp.float32).reshape(2, 4, 5, 1)
  box = (1, 3, 2, 5)  # rows 1-2, cols 2-4
  mixed, lam = jax.jit(mixing.cutmix)(images, box)
  expected = np.array(images)
  expected[0, 1:3, 2:5] = np.asarray(images)[1, 1:3, 2:5]
  expected[1, 1:3, 2:5] = np.asarray(images)[0, 1:3, 2:5]
  np.testing.assert_array_equal(np.asarray(mixed), expected)
  assert float(lam) == pytest.approx(1 - 6 / 20)


def _timm_box(height, width, lam, cy, cx):
  """NumPy transcription of timm's rand_bbox for a given centre."""
  ratio = np.sqrt(1 - lam)
  cut_h, cut_w = int(height * ratio), int(width * ratio)
  return (np.clip(cy - cut_h // 2, 0, height), np.clip(cy + cut_h // 2, 0, height),
          np.clip(cx - cut_w // 2, 0, width), np.clip(cx + cut_w // 2, 0, width))


def test_cutmix_box_matches_timm_by_hand():
  # 12 x 9, lam 0.75: cut 6 x 4 rows / cols; centred at (5, 1) -> rows [2, 8), cols [0, 3).
  box = tuple(int(v) for v in mixing.cutmix_box(12, 9, 0.75, 5, 1))
  assert box == _timm_box(12, 9, 0.75, 5, 1) == (2, 8, 0, 3)
  rng = np.random.default_rng(0)
  for lam, cy, cx in zip(rng.uniform(0, 1, 4), rng.integers(0, 12, 4), rng.integers(0, 9, 4)):
    box = tuple(int(v) for v in mixing.cutmix_box(12, 9, np.float32(lam), cy, cx))
    assert box == _timm_box(12, 9, np.float32(lam), cy, cx)


def test_beta_samples_follow_the_beta_distribution():
  from scipy import stats  # pylint: disable=g-import-not-at-top
  draw = jax.jit(jax.vmap(lambda k: mixing.beta_samples(k, ((0.8, 0.8), (1.0, 2.0)))))
  x = np.asarray(draw(jax.random.split(jax.random.key(0), 4000)))
  assert np.all((x > 0) & (x < 1))
  assert stats.kstest(x[:, 0], stats.beta(0.8, 0.8).cdf).pvalue > 1e-3
  assert stats.kstest(x[:, 1], stats.beta(1.0, 2.0).cdf).pvalue > 1e-3
  assert stats.kstest(x[:, 1], stats.beta(2.0, 1.0).cdf).pvalue < 1e-6  # the test has power


def test_mix_batch_is_mixup_or_cutmix_with_consistent_targets():
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(4, 8, 8, 3)), jnp.float32)
  labels = jnp.array([0, 1, 2, 3])
  options = mixing.MixOptions(smoothing=0.1)
  mix = jax.jit(lambda k: mixing.mix_batch(k, images, labels, num_classes=5, options=options))
  kinds = set()
  smooth = np.eye(5)[[0, 1, 2, 3]] * 0.9 + 0.02
  for seed in range(10):
    mixed, targets, lam = (np.asarray(x) for x in mix(jax.random.key(seed)))
    lam = float(lam)
    expected_targets = lam * smooth + (1 - lam) * smooth[::-1]
    np.testing.assert_allclose(targets, expected_targets, atol=1e-6)
    x, r = np.asarray(images), np.asarray(images)[::-1]
    if np.allclose(mixed, lam * x + (1 - lam) * r, atol=1e-5):
      kinds.add("mixup")
    else:  # cutmix: every pixel from one of the two, the fraction from x equal to lam
      own = np.all(mixed == x, axis=-1)
      assert np.all(own | np.all(mixed == r, axis=-1))
      assert own[0].mean() == pytest.approx(lam)
      kinds.add("cutmix")
  assert kinds == {"mixup", "cutmix"}
  off = mixing.MixOptions(mixup_alpha=0.0, cutmix_alpha=0.0, smoothing=0.0)
  same, onehot, lam = jax.jit(lambda k: mixing.mix_batch(k, images, labels, num_classes=5,
                                                         options=off))(jax.random.key(0))
  assert float(lam) == 1.0
  np.testing.assert_array_equal(np.asarray(same), np.asarray(images))
  np.testing.assert_array_equal(np.asarray(onehot), np.eye(5)[[0, 1, 2, 3]])
  with pytest.raises(ValueError, match="smoothing"):
    mixing.MixOptions(smoothing=1.5)


@jax.jit
def _losses(logits, targets):
  ce = classification.soft_target_cross_entropy
  return (ce(logits, targets), ce(logits, targets, where=jnp.array([False, True])),
          jax.grad(lambda z: ce(z, targets))(logits),
          classification.top_k_correct(jnp.array([[1.0, 3.0, 2.0], [5.0, 1.0, 0.0]]),
                                       jnp.array([2, 2]), 2))


def test_soft_target_cross_entropy_by_hand_and_masked():
  logits = np.array([[0.0, 0.0], [np.log(3.0), 0.0]], np.float32)
  targets = np.array([[1.0, 0.0], [0.5, 0.5]], np.float32)
  loss, masked, grad, top2 = jax.device_get(_losses(logits, targets))
  # Row 0: -log(1/2); row 1: -(0.5 log(3/4) + 0.5 log(1/4)).
  row = [np.log(2.0), -(0.5 * np.log(0.75) + 0.5 * np.log(0.25))]
  assert float(loss) == pytest.approx(np.mean(row), rel=1e-6)
  assert float(masked) == pytest.approx(row[1], rel=1e-6)
  softmax = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  np.testing.assert_allclose(grad, (softmax - targets) / 2, atol=1e-6)
  assert list(top2) == [True, False]


# ----------------------------------------------------------------------------- RandAugment


def test_pointwise_operations_by_hand():
  image = np.array([[[0, 100, 200], [127, 128, 255]]], np.uint8)
  np.testing.assert_array_equal(ra.invert(image), 255 - image)
  np.testing.assert_array_equal(ra.posterize(image, 2),
                                [[[0, 64, 192], [64, 128, 192]]])
  np.testing.assert_array_equal(ra.solarize(image, 128), [[[0, 100, 55], [127, 127, 0]]])
  np.testing.assert_array_equal(ra.solarize_add(image, 110), [[[110, 210, 200],
                                                                 [237, 128, 255]]])
  np.testing.assert_array_equal(ra.brightness(image, 0.5), [[[0, 50, 100], [64, 64, 128]]])
  # Channel 0 spans [0, 127] -> [0, 255]; channel 1 [100, 128]; channel 2 [200, 255].
  np.testing.assert_array_equal(ra.auto_contrast(image), [[[0, 0, 0], [255, 255, 255]]])
  # Grey of (10, 20, 30): (2990 + 11740 + 3420 + 500) // 1000 = 18; color(0) is that grey.
  np.testing.assert_array_equal(ra.color(np.array([[[10, 20, 30]]], np.uint8), 0.0),
                                [[[18, 18, 18]]])
  np.testing.assert_array_equal(ra.contrast(image, 1.0), image)


def test_equalize_matches_pil():
  from PIL import Image, ImageOps  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(1)
  image = rng.integers(40, 90, (9, 11, 3), dtype=np.uint8)
  np.testing.assert_array_equal(ra.equalize(image),
                                np.asarray(ImageOps.equalize(Image.fromarray(image))))


def test_geometric_operations_shift_and_rotate_exactly():
  rng = np.random.default_rng(2)
  image = rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)
  moved = ra.translate_x(image, 2.0)  # output x samples input x + 2
  np.testing.assert_array_equal(moved[:, :3], image[:, 2:])
  assert np.all(moved[:, 3:] == np.array(ra.FILL, np.uint8))
  np.testing.assert_array_equal(ra.rotate(image, 90.0), np.rot90(image))  # counter-clockwise
  np.testing.assert_array_equal(ra.shear_x(image, 0.0), image)


def test_rand_augment_is_seeded_shape_preserving_and_rejects_names():
  image = np.random.default_rng(3).integers(0, 256, (16, 16, 3), dtype=np.uint8)
  a = ra.rand_augment(image, np.random.default_rng(7))
  b = ra.rand_augment(image, np.random.default_rng(7))
  np.testing.assert_array_equal(a, b)
  assert a.shape == image.shape and a.dtype == np.uint8
  changed = [not np.array_equal(ra.rand_augment(image, np.random.default_rng(s)), image)
             for s in range(10)]
  assert any(changed)
  for name in ra.OPERATIONS:
    out = ra.apply_operation(name, image, 9.0, np.random.default_rng(0))
    assert out.shape == image.shape and out.dtype == np.uint8, name
  with pytest.raises(ValueError, match="valid names"):
    ra.RandAugmentOptions(operations=("rotate", "warp"))


def test_random_erase_replaces_one_box():
  image = np.zeros((20, 20, 3), np.float32)
  out = ra.random_erase(image, np.random.default_rng(0), ra.ErasingOptions(probability=1.0))
  changed = np.any(out != 0, axis=-1)
  rows, cols = np.flatnonzero(changed.any(1)), np.flatnonzero(changed.any(0))
  assert changed.sum() == len(rows) * len(cols) > 0  # one rectangle
  assert 0.02 * 400 * 0.8 <= changed.sum() <= 400 / 3 * 1.2
  assert ra.random_erase(image, np.random.default_rng(0),
                         ra.ErasingOptions(probability=0.0)) is image


# ----------------------------------------------------------------------------- task


def _tiny_config(data_dir=None):
  config = configs.get_config("tiny")
  if data_dir:
    config.data.data_dir = data_dir
  config.model.dim, config.model.num_heads = 16, 2
  config.model.depths, config.model.num_clusters = (1,), (3,)
  config.data.augment.crop_size = 32
  config.model.superpixels.num_superpixels = 16
  config.eval.scale, config.eval.image_size, config.eval.num_superpixels = 1.0, (32, 32), 16
  return config


def test_views_are_fixed_shape_with_superpixels_of_the_view(synthetic_data_dir):
  task = cast_deit.CASTDeiT(_tiny_config(synthetic_data_dir))
  source = load_source(task.config.data, "train")
  train = apply_transforms(source[0], task.train_transforms(), seed=0, position=0)
  again = apply_transforms(source[0], task.train_transforms(), seed=0, position=0)
  np.testing.assert_array_equal(train["image"], again["image"])
  assert train["image"].shape == (32, 32, 3) and train["superpixels"].shape == (32, 32)
  assert train["segment_mask"].shape == (16,) and train["label"] == source[0]["label"]
  used = np.unique(train["superpixels"])
  np.testing.assert_array_equal(used, np.flatnonzero(train["segment_mask"]))
  view = task.classification_transforms()[0](source[0])
  assert view["image"].shape == (32, 32, 3) and view["superpixels"].min() == 0
  # The centre view: 32^2 scene -> shorter side int(32 / 0.875) = 36 -> centre 32^2.
  np.testing.assert_array_equal(cast_deit.center_view(np.asarray(source[0]["image"]), 32),
                                cast_deit.resize_bicubic(np.asarray(source[0]["image"]),
                                                         36, 36)[2:34, 2:34])
  with pytest.raises(ValueError, match="'label'"):
    cast_deit.decode_labelled({"image": np.zeros((4, 4, 3), np.uint8)})


def test_trainable_set_and_weight_decay_groups():
  task = cast_deit.CASTDeiT(_tiny_config())
  model = nnx.eval_shape(lambda: task.make_model(nnx.Rngs(0)))
  names = [optim.parameter_name(p) for p, _ in
           jax.tree_util.tree_flatten_with_path(nnx.state(model, task.trainable()))[0]]
  every = [optim.parameter_name(p) for p, _ in
           jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param))[0]]
  frozen = sorted(set(every) - set(names))
  assert frozen and all(n.startswith("encoder/pools/0/") and n.split("/")[3] in
                        ("fc1", "fc2", "centroid_fc") for n in frozen)
  assert {"encoder/head/kernel/value", "encoder/head/bias/value", "encoder/cls_token/value",
          "encoder/pos_embed/value"} <= set(names)
  assert model.encoder.pos_embed.shape == (1, 1 + 8 * 8, model.encoder.config.dim)
  labels = optim.param_labels(nnx.state(model, task.trainable()), task.config.optim)
  by_name = {optim.parameter_name(p): l for p, l in
             jax.tree_util.tree_flatten_with_path(labels)[0]}
  for name, label in by_name.items():
    leaf = name.split("/")[-2]
    assert (label == "no_weight_decay") == (leaf in ("bias", "scale", "cls_token",
                                                     "pos_embed")), name


def test_tiny_end_to_end(synthetic_data_dir, tmp_path, monkeypatch):
  from jhseg.train import train_and_evaluate  # pylint: disable=g-import-not-at-top
  build = cast_deit.CASTDeiT.make_model
  monkeypatch.setattr(cast_deit.CASTDeiT, "make_model", lambda self, rngs: numpy_init.numpy_initialised(
      lambda: build(self, nnx.Rngs(0))))
  config = _tiny_config(synthetic_data_dir)
  config.num_train_steps = 2
  config.checkpoint_every_steps = 2
  config.log_every_steps = 1
  config.data.batch_size = 4
  config.evals.classification.update(every_steps=2, num_examples=6, batch_size=4)
  config.evals.hierarchy.update(every_steps=2, num_examples=2, batch_size=4)
  config.eval.num_pictures = 1
  config.eval.num_thresholds = 5
  train_and_evaluate(config, str(tmp_path))
  scalars = json.loads((tmp_path / "eval" / "classification" / "2" / "summary.json")
                       .read_text())["scalars"]
  assert scalars["num_examples"] == 6 and 0 <= scalars["top1"] <= scalars["top5"] <= 1
  assert np.isfinite(scalars["loss"]) and scalars["loss"] > 0
  hierarchy = json.loads((tmp_path / "eval" / "hierarchy" / "2" / "summary.json").read_text())
  assert 0 <= hierarchy["scalars"]["cast_boundary_ods"] <= 1
  records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  losses = [r["train/loss"] for r in records if "train/loss" in r]
  lams = [r["train/mix_lambda"] for r in records if "train/mix_lambda" in r]
  assert len(losses) == 2 and all(np.isfinite(losses)) and all(0 <= l <= 1 for l in lams)
