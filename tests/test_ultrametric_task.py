"""Ultrametric U-Net task: end to end through the engine, padding, augmentations, evaluation."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import ndimage

from experiments.configs import ultrametric as configs
from jhseg import grid
from jhseg import hierarchy
from jhseg.data import augment
from jhseg.data.sources import load_source
from jhseg.metrics import level_recovery
from jhseg.metrics import ucm_evaluation
from jhseg.tasks import ultrametric

LEVELS = (0.0, 0.5, 1.0)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _tiny_config(data_dir: str):
  config = configs.get_config("tiny")
  config.data.data_dir = data_dir
  config.num_train_steps = 3
  config.evals.val.every_steps = 3
  config.checkpoint_every_steps = 3
  config.log_every_steps = 3
  config.data.batch_size = 4
  config.evals.val.batch_size = 4
  config.evals.val.num_examples = 6  # two batches, the second one padded
  return config


def _scenes(data_dir: str, count: int):
  source = load_source(_tiny_config(data_dir).data, "train")
  return [source[i] for i in range(count)]


def _edges(ucm: np.ndarray):
  return ucm[0::2, 1::2], ucm[1::2, 0::2]


# ----------------------------------------------------------------------------- end to end


@pytest.mark.xdist_group("ultrametric_tiny_run")  # the worker that trains the run
def test_trains_end_to_end_and_writes_the_evaluation(ultrametric_tiny_run):
  # The shared run (conftest.py): steps 1 and 2: validation loss only; 3 (last): everything.
  config, tmp_path, summary = ultrametric_tiny_run
  assert (config.num_train_steps, config.evals.val.every_steps,
          config.eval.hierarchy_every_steps, config.evals.val.num_examples) == (3, 1, 3, 6)

  records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  at_two = [r for r in records if r["step"] == 2 and "eval/val/loss" in r]
  assert len(at_two) == 1 and "eval/val/ods_f" not in at_two[0]
  assert not (tmp_path / "eval" / "val" / "2").exists()

  assert np.isfinite(summary["train/loss"]) and summary["train/loss"] > 0
  assert np.isfinite(summary["eval/val/loss"]) and summary["eval/val/loss"] > 0
  for key in ("eval/val/ods_f", "eval/val/ois_f", "eval/val/ap", "eval/val/fdf_mean",
              "eval/val/lrf_parts_t0.25", "eval/val/lrf_objects_t0.75"):
    assert 0.0 <= summary[key] <= 1.0, key
  assert summary["eval/val/level_order_ok"] in (0.0, 1.0)

  out = tmp_path / "eval" / "val" / "3"
  for name in ("lrf_fdf.png", "pr_curve.png", "ucm_grid.png", "per_class.png"):
    assert (out / name).read_bytes()[:8] == PNG_SIGNATURE, name
  report = json.loads((out / "summary.json").read_text())
  assert report["num_images"] == 6
  lrf = np.asarray(report["lrf_fdf"]["lrf"], float)
  assert lrf.shape == (2, config.eval.num_thresholds + 2)  # the sweep has both ends
  assert np.all(np.diff(lrf, axis=1) <= 1e-12)  # LRF never grows with the threshold
  assert set(report["levels"].values()) == {"parts", "objects"}
  assert report["per_class"], "synthetic scenes have object classes"
  assert set(report["per_class"]) <= set(configs.SYNTHETIC_CLASSES)
  assert report["scalars"]["ods_f"] == pytest.approx(summary["eval/val/ods_f"])


# ----------------------------------------------------------------------------- padding


class PixelwiseModel(nnx.Module):
  """A 1x1 convolution: each pixel's logits depend on that pixel only."""

  def __init__(self, rngs):
    self.conv = nnx.Conv(3, 3, (1, 1), rngs=rngs)

  def __call__(self, images):
    return self.conv(images) * 4.0


def test_padding_is_ignored_by_the_loss(synthetic_data_dir):
  task = ultrametric.UltrametricUNet(configs.get_config("tiny"))
  model = PixelwiseModel(nnx.Rngs(0))
  scene = ultrametric.decode(_scenes(synthetic_data_dir, 1)[0], with_instances=False)
  height, width = scene["image"].shape[:2]
  crop = {k: v[None] for k, v in ultrametric.pad_example(scene, None).items()}
  padded = ultrametric.pad_example(scene, (height + 5, width + 3))
  rng = np.random.default_rng(0)
  # Garbage in the padding: random pixels and random target levels.
  pad = ~padded["valid"]
  padded["image"][pad] = rng.random((pad.sum(), 3))
  padded["ucm"][2 * height:, :] = rng.choice(LEVELS, padded["ucm"][2 * height:, :].shape)
  padded["ucm"][:, 2 * width:] = rng.choice(LEVELS, padded["ucm"][:, 2 * width:].shape)
  padded = {k: v[None] for k, v in padded.items()}

  loss_crop, _ = task.loss(model, crop, jax.random.key(0))
  loss_padded, _ = task.loss(model, padded, jax.random.key(0))
  assert float(loss_padded) == pytest.approx(float(loss_crop), rel=1e-5)
  # The check can fail: counting the padding edges changes the loss.
  everything = dict(padded, valid=np.ones_like(padded["valid"]))
  loss_all, _ = task.loss(model, everything, jax.random.key(0))
  assert abs(float(loss_all) - float(loss_crop)) > 1e-3


def test_image_larger_than_the_padded_size_is_a_clear_error(synthetic_data_dir):
  scene = ultrametric.decode(_scenes(synthetic_data_dir, 1)[0], with_instances=False)
  with pytest.raises(ValueError, match="config.data.image_size"):
    ultrametric.pad_example(scene, (4, 4))


def test_missing_target_field_is_a_clear_error():
  with pytest.raises(ValueError, match="no field 'ucm'"):
    ultrametric.decode({"image": np.zeros((4, 4, 3), np.uint8)}, with_instances=False)


def test_make_model_reads_the_encoder_width():
  tiny = configs.get_config("tiny")
  assert tiny.model.width == 16
  model = nnx.eval_shape(lambda: ultrametric.UltrametricUNet(tiny).make_model(nnx.Rngs(0)))
  assert model.encoder.width == 16 and model.encoder.stage_features[-1] == 128
  del tiny.model.width  # configs written before the option: the paper width
  model = nnx.eval_shape(lambda: ultrametric.UltrametricUNet(tiny).make_model(nnx.Rngs(0)))
  assert model.encoder.width == 64 and model.encoder.stage_features[-1] == 512
  tiny.model.width = 0
  with pytest.raises(ValueError, match=r"config\.model\.width=0.*positive integer"):
    ultrametric.UltrametricUNet(tiny)


def test_pretrained_weights_need_the_paper_width(tmp_path):
  config = configs.get_config("tiny")
  config.model.pretrained = str(tmp_path / "resnet18.pth")
  with pytest.raises(ValueError, match=r"resnet18\.pth.*width=16.*config\.model\.width"):
    nnx.eval_shape(lambda: ultrametric.UltrametricUNet(config).make_model(nnx.Rngs(0)))


# ----------------------------------------------------------------------------- augmentations


def test_regions_below_matches_the_hierarchy_cut(synthetic_data_dir):
  for example in _scenes(synthetic_data_dir, 3):
    ucm = np.asarray(example["ucm"])
    for threshold in (0.25, 0.75):
      ours = augment.regions_below(ucm, threshold)
      # cut_at_threshold keeps edges <= t; no weight lies in (0.25, 0.5) or (0.75, 1).
      reference = hierarchy.cut_at_threshold(*_edges(ucm), threshold)
      assert np.array_equal(grid.boundary_edges(ours)[0], grid.boundary_edges(reference)[0])
      assert np.array_equal(grid.boundary_edges(ours)[1], grid.boundary_edges(reference)[1])
      assert len(np.unique(ours)) == len(np.unique(reference))


def test_identity_warp_returns_the_stored_target(synthetic_data_dir):
  ucm = np.asarray(_scenes(synthetic_data_dir, 1)[0]["ucm"], np.float32)
  levels = augment.target_levels(ucm)
  assert levels == (0.5, 1.0)
  rebuilt = augment.ultrametric_from_cuts(augment.nested_cuts(ucm, levels), levels)
  assert np.array_equal(rebuilt, ucm)


def test_ultrametric_from_cuts_matches_jhseg_grid():
  rng = np.random.default_rng(0)
  coarse = rng.integers(0, 3, (9, 11))
  fine = coarse * 10 + rng.integers(0, 4, (9, 11))  # refines `coarse`
  ours = augment.ultrametric_from_cuts(np.stack([fine, coarse]), (0.5, 1.0))
  h, v = grid.nested_labels_to_ultrametric(np.stack([fine, coarse]).astype(np.int32),
                                           np.array([0.5, 1.0], np.float32))
  np.testing.assert_array_equal(ours, np.asarray(grid.edges_to_interpixel(h, v)))
  assert set(np.unique(ours)) == {0.0, 0.5, 1.0}


@pytest.mark.parametrize("seed", range(4))
def test_augmentations_keep_targets_ultrametric(synthetic_data_dir, seed):
  example = ultrametric.decode(_scenes(synthetic_data_dir, 4)[seed], with_instances=False)
  transform = augment.make_augment(augment.AugmentConfig(probability=1.0, max_rotation=15.0))
  out = transform(dict(example), np.random.default_rng(seed))

  ucm = out["ucm"]
  assert ucm.shape == example["ucm"].shape and out["image"].shape == example["image"].shape
  assert set(np.unique(ucm)) <= {0.0, 0.5, 1.0}
  h, v = _edges(ucm)
  assert hierarchy.is_ultrametric(h, v)
  fine = hierarchy.cut_at_threshold(h, v, 0.25)
  coarse = hierarchy.cut_at_threshold(h, v, 0.75)
  assert bool(grid.is_nested(fine, coarse))
  # The geometry really changed, and pixels rotated in from outside are invalid.
  assert not np.array_equal(ucm, example["ucm"])
  assert 0.5 < out["valid"].mean() < 1.0
  assert 0.0 <= out["image"].min() and out["image"].max() <= 1.0


def test_warped_target_follows_the_warped_image(synthetic_data_dir):
  """Boundaries of the rebuilt target are where the warped instance map changes."""
  raw = _scenes(synthetic_data_dir, 1)[0]
  example = ultrametric.decode(raw, with_instances=False)
  coords = augment.sampling_grid(example["image"].shape[:2], angle_degrees=12.0,
                                 distortion=0.05)
  levels = augment.target_levels(example["ucm"])
  example["cuts"] = augment.nested_cuts(example["ucm"], levels)
  example["instances"] = np.asarray(raw["instances"], np.int32)
  warped = augment.warp(example, coords, ("cuts", "instances"))
  ucm = augment.ultrametric_from_cuts(warped["cuts"], levels)
  h, v = _edges(ucm)
  inst_h, inst_v = (np.asarray(b) for b in grid.boundary_edges(warped["instances"]))
  assert np.array_equal(h == 1.0, inst_h) and np.array_equal(v == 1.0, inst_v)


# ----------------------------------------------------------------------------- evaluation


def test_callback_ucm_equals_numpy_postprocessing_on_padded_batches():
  mesh = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  sizes = [(24, 30), (20, 30), (24, 17), (13, 22)]
  valid = np.zeros((4, 24, 30), bool)
  for b, (height, width) in enumerate(sizes):
    valid[b, :height, :width] = True
  rng = np.random.default_rng(0)
  logits = ndimage.gaussian_filter(rng.normal(size=(4, 24, 30, 3)), (0, 2, 2, 0)) * 5

  @jax.jit
  def evaluate(logits, valid):
    h, v = ultrametric.dissimilarity(logits, LEVELS)
    return (h, v), ultrametric.predicted_ucm(h, v, valid, min_region_area=30,
                                             linkage="average", mesh=mesh)

  sharding = jax.NamedSharding(mesh, jax.P("data"))
  (dh, dv), (uh, uv) = evaluate(jax.device_put(jnp.asarray(logits, jnp.float32), sharding),
                                jax.device_put(valid, sharding))
  dh, dv, uh, uv = (np.asarray(x) for x in (dh, dv, uh, uv))
  for b, (height, width) in enumerate(sizes):
    ref_h, ref_v = hierarchy.ucm_from_dissimilarity(dh[b, :height, :width - 1],
                                                    dv[b, :height - 1, :width],
                                                    min_region_area=30)
    assert len(np.unique(ref_h)) > 2  # a real hierarchy, not a constant
    np.testing.assert_array_equal(uh[b, :height, :width - 1], ref_h)
    np.testing.assert_array_equal(uv[b, :height - 1, :width], ref_v)
    assert not uh[b, :, width - 1:].any() and not uv[b, height - 1:, :].any()


def _result(part_curve, object_curve, thresholds):
  return {"thresholds": thresholds, "levels": (0.5, 1.0),
          "lrf": np.stack([part_curve, object_curve])}


def test_level_order_check_on_hand_built_curves():
  t = level_recovery.sweep_thresholds(99)
  # The target itself: parts (0.5) are contours for t <= 0.5, objects (1) for t <= 1.
  perfect = ultrametric.level_order_check(_result((t <= 0.5) * 1.0, (t <= 1.0) * 1.0, t))
  assert perfect["level_order_ok"]
  assert perfect["relative_survival"] == {"0.5": 0.5, "1.0": 1.0}
  # Levels recovered only in part: plateaus below 1 still pass.
  ceiling = ultrametric.level_order_check(_result((t < 0.5) * 0.45, (t < 0.85) * 0.6, t))
  assert ceiling["level_order_ok"]
  # Levels swapped: parts outlive objects.
  swapped = ultrametric.level_order_check(_result((t <= 1.0) * 1.0, (t <= 0.5) * 1.0, t))
  assert not swapped["level_order_ok"] and not swapped["increasing"]
  # Parts lost early (before t = 0.25).
  early = ultrametric.level_order_check(_result((t < 0.1) * 1.0, (t < 1.0) * 1.0, t))
  assert not early["level_order_ok"] and not early["lasting"]
  # Objects gone before t = 0.75.
  weak = ultrametric.level_order_check(_result((t < 0.4) * 1.0, (t < 0.6) * 1.0, t))
  assert not weak["level_order_ok"] and weak["increasing"]
  # Hardly any part recovered at all (an untrained network).
  missing = ultrametric.level_order_check(_result((t < 0.5) * 0.1, (t < 1.0) * 0.6, t))
  assert not missing["level_order_ok"] and not missing["recovered"]


def test_boundary_counts_of_the_target_itself_are_perfect(synthetic_data_dir):
  raw = _scenes(synthetic_data_dir, 1)[0]
  h, v = _edges(np.asarray(raw["ucm"]))
  thresholds = np.array([0.25, 0.75, 1.0])
  neighbourhood = level_recovery.object_neighbourhood(np.asarray(raw["instances"]), radius=20)
  counts, levels = ucm_evaluation.image_counts(h, v, h, v, thresholds=thresholds,
                                               neighbourhood=neighbourhood, max_distance=0.0075)
  # t = 0.25: every target contour, matched exactly.
  assert counts.cnt_r[0] == counts.sum_r[0] > 0
  assert counts.cnt_p[0] == counts.sum_p[0] > 0
  # t = 0.75 and 1: the objects only; parts are missed. (Thinning moves a few junction
  # pixels of the objects-only map, unmatched at 0.0075 of a 32-px diagonal.)
  assert counts.cnt_r[1] < counts.sum_r[1]
  assert counts.cnt_p[1] >= 0.9 * counts.sum_p[1]
  assert counts.cnt_r[2] == counts.cnt_r[1] and counts.sum_p[2] == counts.sum_p[1]
  # LRF/FDF come from the same matching: FDF = 1 - precision.
  np.testing.assert_array_equal(levels.false, counts.sum_p - counts.cnt_p)


# ----------------------------------------------------------------------------- paper configs


@pytest.mark.parametrize("variant", ["hgm", "bgm_upp", "bgm_pc"])
def test_paper_configs_are_the_published_schedule(variant):
  config = configs.get_config(variant)
  assert config.model.depth == 50 and config.model.pretrained.endswith(".pth")
  assert config.model.width == 64  # torchvision's ImageNet weights
  assert config.data.batch_size * config.optim.grad_accum_steps == 64
  steps_per_epoch = config.evals.val.every_steps
  assert steps_per_epoch * config.data.batch_size >= configs.PASCAL_CONTEXT_TRAIN_IMAGES
  assert config.num_train_steps == 50 * steps_per_epoch
  updates_per_epoch = configs.PASCAL_CONTEXT_TRAIN_IMAGES / 64
  assert config.optim.phase_boundaries == (int(30 * updates_per_epoch),)
  assert config.optim.learning_rate == 1e-4
  assert (config.plateau.metric, config.plateau.patience, config.plateau.mode) == (
      "eval/val/loss", 5, "min")
  assert config.plateau.factor == pytest.approx(1 / 3)
  assert config.model.levels == ((0.0, 0.5, 1.0) if variant == "hgm" else (0.0, 1.0))


def test_paper_phases_freeze_the_encoder_but_its_last_stage():
  """Adam updates per parameter group: ~lr where trained, exactly 0 where frozen."""
  from jhseg.models import unet
  from jhseg.train import optim

  config = configs.get_config("hgm")
  config.optim.grad_accum_steps = 1
  config.optim.phase_boundaries = (1,)  # one update per phase
  model = nnx.eval_shape(lambda: unet.UNet(3, depth=18, rngs=nnx.Rngs(0)))
  params = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), nnx.state(model, nnx.Param))
  tx = optim.make_optimizer(config.optim, config.num_train_steps)
  state = jax.jit(tx.init)(params)
  grads = jax.tree.map(jnp.ones_like, params)
  update = jax.jit(lambda g, s, p: tx.update(g, s, p, lr_scale=jnp.float32(1.0)))
  phase1, state = update(grads, state, params)
  phase2, _ = update(grads, state, params)

  def size(updates, prefix):
    leaves = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(updates)[0]
              if optim.parameter_name(path).startswith(prefix)]
    assert leaves, prefix
    return max(float(jnp.max(jnp.abs(leaf))) for leaf in leaves)

  assert size(phase1, "encoder/conv1") == 0.0 and size(phase1, "encoder/layer3") == 0.0
  assert size(phase1, "encoder/layer4") == pytest.approx(1e-4, rel=1e-3)
  assert size(phase1, "decoder") == pytest.approx(1e-4, rel=1e-3)
  for prefix in ("encoder/conv1", "encoder/layer3", "encoder/layer4", "decoder", "head"):
    assert size(phase2, prefix) == pytest.approx(1e-5, rel=1e-3), prefix
