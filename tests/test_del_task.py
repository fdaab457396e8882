"""DEL task: transforms (fixed shapes, superpixel labels), the colour baseline pieces, and
one tiny end-to-end run through the engine with Fb / Fop / timings in summary.json."""
import importlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jhseg import baselines
from jhseg.data.sources import load_source
from jhseg.data.transforms import apply_transforms
from jhseg.models import vgg_del
from jhseg.tasks import del_task
from jhseg.train import train_and_evaluate

configs = importlib.import_module("experiments.configs.del")


def _tiny_config(data_dir: str):
  config = configs.get_config("tiny")
  config.data.data_dir = data_dir
  config.num_train_steps = 2
  config.checkpoint_every_steps = 2
  config.log_every_steps = 1
  config.data.batch_size = 4
  config.evals.val.every_steps = 2
  config.evals.val.batch_size = 4
  config.evals.val.num_examples = 6  # two batches, the second padded
  del config.evals["test"]  # one evaluation is enough here
  config.eval.num_thresholds = 9
  config.eval.num_pictures = 1
  return config


def test_most_regions_and_missing_field():
  truths = np.array([[[0, 0], [0, 1]], [[0, 1], [2, 3]], [[5, 5], [5, 5]]])
  np.testing.assert_array_equal(del_task.most_regions(truths), truths[1])
  with pytest.raises(ValueError, match="'parts'"):
    del_task.decode({"image": np.zeros((2, 2, 3), np.uint8)}, segment_fields=("parts",))


def test_transforms_give_fixed_shapes_and_labels(synthetic_data_dir):
  config = _tiny_config(synthetic_data_dir)
  task = del_task.DEL(config)
  scene = load_source(config.data, "train")[0]
  size, num = tuple(config.data.image_size), config.model.superpixels.max_superpixels
  for transforms in (task.train_transforms(), task.eval_transforms()):
    out = apply_transforms(dict(scene), transforms, seed=0, position=3)
    assert out["image"].shape == size + (3,) and out["superpixels"].shape == size
    assert out["superpixel_labels"].shape == (num,)
    n = out["superpixels"].max() + 1
    np.testing.assert_array_equal(out["superpixel_mask"], np.arange(num) < n)
    assert np.all(out["superpixel_labels"][n:] == -1)
    assert np.mean(out["superpixel_labels"][:n] >= 0) > 0.5  # most superpixels are pure
  # eval: labels are the parts' majority on the unaugmented scene
  parts = np.asarray(scene["parts"])
  for k in range(n):
    label = out["superpixel_labels"][k]
    if label >= 0:
      values, counts = np.unique(parts[out["superpixels"] == k], return_counts=True)
      assert values[np.argmax(counts)] == label and counts.max() / counts.sum() > 0.7
  np.testing.assert_array_equal(out["truths"][0], parts)


def test_colour_dissimilarity():
  lab = np.array([[50.0, 0, 0], [50.0, 10, 10], [50.0, 0, 0]])
  pairs = np.array([[0, 1], [0, 2]])
  np.testing.assert_allclose(baselines.colour_dissimilarity(lab, pairs, scale=20.0),
                             [1 - 2 / (1 + np.e), 0.0])


def _numpy_init(self, rngs):
  """make_model with NumPy-random parameters: one JAX RNG compilation per parameter shape
  takes tens of seconds on the shared CPU; the values are not under test here."""
  del rngs
  m = self.config.model
  if isinstance(self, del_task.DELSemanticPretrain):
    model = nnx.eval_shape(lambda: vgg_del.VggDelSemantic(
        width=m.width, num_classes=m.num_classes, rngs=nnx.Rngs(0)))
  else:
    model = nnx.eval_shape(lambda: vgg_del.VggDel(
        width=m.width, embedding_dim=m.embedding_dim, rngs=nnx.Rngs(0)))
  rng = np.random.default_rng(0)
  for path, variable in nnx.iter_graph(model):
    if isinstance(variable, nnx.Param):
      fan_in = int(np.prod(variable.shape[:-1])) if len(variable.shape) > 1 else 1
      value = (np.full(variable.shape, 20.0) if path[-1] == "scale"
               else rng.normal(size=variable.shape) / np.sqrt(fan_in))
      variable.set_value(jnp.asarray(value, jnp.float32))
  return model


def test_tiny_end_to_end(synthetic_data_dir, tmp_path, monkeypatch):
  monkeypatch.setattr(del_task.DEL, "make_model", _numpy_init)
  config = _tiny_config(synthetic_data_dir)
  train_and_evaluate(config, str(tmp_path))
  summary = json.loads((tmp_path / "eval" / "val" / "2" / "summary.json").read_text())
  scalars = summary["scalars"]
  for method in ("del", "colour"):
    for metric in ("fb_ods", "fb_ois", "fop_ods", "fop_ois", "covering_ods", "covering_ois"):
      assert 0 <= scalars[f"{method}_{metric}"] <= 1
  for stage in ("superpixels", "network", "merging_ucm"):
    assert scalars[f"seconds_{stage}"] > 0
  for name in ("pr_curve.png", "0_del_ucm.png", "0_colour_ucm.png", "0_segments.png"):
    assert (tmp_path / "eval" / "val" / "2" / name).read_bytes()[:4] == b"\x89PNG"
  records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  losses = [r["train/loss"] for r in records if "train/loss" in r]
  assert losses and all(np.isfinite(losses))


def test_infer_writes_an_ultrametric_at_the_image_size_from_the_model_scale(tmp_path,
                                                                           monkeypatch):
  """jhseg.infer on a model trained at config.model.input_scale = 0.5: SLIC and the network
  see the half-size image (as in training), the UCM has the image's size."""
  from jhseg import grid, hierarchy  # pylint: disable=g-import-not-at-top
  from jhseg.superpixels import slic  # pylint: disable=g-import-not-at-top
  config = configs.get_config("tiny")
  config.model.input_scale = 0.5
  task = del_task.DEL(config)
  model = _numpy_init(task, None)
  seen = []
  real = slic.SLIC_METHODS["slic"]
  monkeypatch.setitem(slic.SLIC_METHODS, "slic",
                      lambda image, **o: seen.append(image.shape) or real(image, **o))
  image = np.zeros((60, 80, 3), np.float32)
  image[:, 40:] = (0.9, 0.2, 0.1)
  image[24:, :] += 0.05 * np.random.default_rng(0).random((36, 80, 3))
  paths = task.infer(model, image, str(tmp_path), "x")
  assert seen == [(30, 40, 3)]
  ucm = np.load(paths["ucm_array"])
  assert ucm.shape == (119, 159)
  h, v = grid.interpixel_to_edges(ucm)
  assert hierarchy.is_ultrametric(np.asarray(h), np.asarray(v))
  assert np.all(h[:, 39] > 0)  # the colour edge (columns 39 | 40) is a contour, at full size
  assert (tmp_path / "x_segments.png").read_bytes()[:4] == b"\x89PNG"


def test_bsds_like_example_trains_on_the_finest_annotator_and_evaluates_on_all():
  config = configs.get_config("bsds500")
  config.data.image_size = (12, 12)
  config.data.augment.enabled = False
  config.model.superpixels.max_superpixels = 40
  config.model.superpixels.pixels_per_superpixel = 8.0
  config.eval.max_truths = 3
  rng = np.random.default_rng(0)
  coarse = np.zeros((10, 12), np.int32)
  coarse[:, 6:] = 1
  fine = coarse * 2 + (np.arange(10)[:, None] >= 5)
  palette = np.array([[200, 20, 20], [20, 200, 20], [20, 20, 200], [200, 200, 20]])
  image = palette[fine] + rng.integers(0, 10, (10, 12, 3))
  example = {"image": image.astype(np.uint8),
             "segmentations": np.stack([coarse, fine])}
  task = del_task.DEL(config)
  train = apply_transforms(dict(example), task.train_transforms(), seed=0, position=0)
  labels, sp = train["superpixel_labels"], train["superpixels"][:10]
  for k in np.flatnonzero(labels >= 0):  # labels come from `fine` (4 regions)
    assert np.all(fine[sp == k] == labels[k]) or np.mean(fine[sp == k] == labels[k]) > 0.7
  assert set(labels[labels >= 0]) <= {0, 1, 2, 3} and len(set(labels[labels >= 0])) > 2
  evaluation = apply_transforms(dict(example), task.eval_transforms(), seed=0, position=0)
  np.testing.assert_array_equal(evaluation["truth_mask"], [True, True, False])
  np.testing.assert_array_equal(evaluation["truths"][1, :10, :12], fine)
  assert np.all(evaluation["truths"][2] == -1) and evaluation["valid"].sum() == 120


@pytest.mark.parametrize("height,width,degrees", [(40, 60, 22.5), (60, 40, 45.0),
                                                 (50, 50, 45.0), (30, 90, 67.5)])
def test_inscribed_rectangle_has_no_fill_and_is_maximal(height, width, degrees):
  import math  # pylint: disable=g-import-not-at-top
  from scipy import ndimage  # pylint: disable=g-import-not-at-top
  ih, iw = del_task.inscribed_size(height, width, math.radians(degrees))
  rotated = ndimage.rotate(np.ones((height, width)), degrees, reshape=True, order=0)
  top, left = (rotated.shape[0] - ih) // 2, (rotated.shape[1] - iw) // 2
  assert rotated[top:top + ih, left:left + iw].min() == 1  # no pixel from outside
  # two pixels more on every side (beyond the 1-pixel margin) would leave the image
  grown = rotated[max(top - 3, 0):top + ih + 3, max(left - 3, 0):left + iw + 3]
  assert grown.min() == 0
  if height == width and degrees == 45.0:
    assert abs(ih + 2 - height / math.sqrt(2)) <= 1.5


def test_sixteen_angle_augmentation_keeps_image_and_labels_aligned():
  seg = np.zeros((40, 60), np.int32)
  seg[:, 30:] = 1
  image = np.zeros((40, 60, 3), np.float32)
  image[:, 30:] = 1.0
  for position in range(6):
    out = del_task.rotate_flip_inscribed({"image": image, "segments": seg},
                                         np.random.default_rng(position), size=(32, 32),
                                         num_angles=16)
    assert out["image"].shape[:2] == out["segments"].shape and max(out["segments"].shape) <= 32
    # away from the label border, white pixels are label 1 and black ones label 0
    bright = out["image"][..., 0] > 0.9
    dark = out["image"][..., 0] < 0.1
    assert np.all(out["segments"][bright] == 1) and np.all(out["segments"][dark] == 0)


def test_rescale_samples_labels_and_keeps_flat_colours():
  labels = np.arange(24, dtype=np.int32).reshape(4, 6)
  image = np.full((4, 6, 3), 0.25, np.float32)
  out = del_task.rescale({"image": image, "segments": labels, "truths": labels[None]}, 0.5)
  # source index floor((i + 1/2) / scale): rows 1, 3; columns 1, 3, 5
  np.testing.assert_array_equal(out["segments"], [[7, 9, 11], [19, 21, 23]])
  np.testing.assert_array_equal(out["truths"][0], out["segments"])
  np.testing.assert_allclose(out["image"], 0.25, atol=1e-6)
  assert out["image"].shape == (2, 3, 3) and out["image"].dtype == np.float32
  with pytest.raises(ValueError, match="input_scale must be in"):
    del_task.rescale({"image": image, "segments": labels, "truths": labels[None]}, 1.5)


def test_bsds500_cpu_trains_on_half_size_crops_and_evaluates_half_size_images():
  config = configs.get_config("bsds500_cpu")
  assert config.data.train_split == "train+val"
  rng = np.random.default_rng(1)
  segmentation = (np.arange(321)[:, None] // 80 + 4 * (np.arange(481)[None] // 120)).astype(
      np.int32)
  example = {"image": rng.integers(0, 255, (321, 481, 3)).astype(np.uint8),
             "segmentations": np.stack([segmentation, segmentation // 2])}
  task = del_task.DEL(config)
  train = apply_transforms(dict(example), task.train_transforms(), seed=0, position=0)
  assert train["image"].shape == (*config.data.augment.crop, 3)  # padded to the crop only
  assert train["valid"].sum() <= 128 * 128
  evaluation = apply_transforms(dict(example), task.eval_transforms(), seed=0, position=0)
  assert evaluation["image"].shape == (241, 241, 3)
  np.testing.assert_array_equal(evaluation["size"], [160, 240])
  np.testing.assert_array_equal(evaluation["truths"][0, :160, :240],
                                segmentation[1::2][:160, 1::2][:, :240])


def test_pascal_context_trains_on_flips_only_and_unlabelled_pixels_are_no_segment():
  config = configs.get_config("pascal_context")
  assert (config.data.name, config.data.train_split, config.evals.test.split) == (
      "pascal_context", "train", "val")
  config.data.augment.crop = (48, 64)  # the whole image below: only a flip can change it
  rng = np.random.default_rng(2)
  regions = np.ones((40, 60), np.int32)
  regions[:, 30:] = 2
  regions[:20, :30] = 0                  # unlabelled: no region
  image = np.zeros((40, 60, 3), np.uint8)
  image[regions == 1] = (200, 30, 30)
  image[regions == 2] = (30, 200, 30)
  image += rng.integers(0, 20, image.shape).astype(np.uint8)
  example = {"image": image, "segmentations": regions[None]}
  task = del_task.DEL(config)
  flipped = 0
  for position in range(6):
    out = apply_transforms(dict(example), task.train_transforms(), seed=0, position=position)
    np.testing.assert_array_equal(out["size"], [40, 60])  # never rotated, never cut
    view = out["image"][:40, :60]
    assert np.allclose(view, image / 255.0) or np.allclose(view, image[:, ::-1] / 255.0)
    flipped += np.allclose(view, image[:, ::-1] / 255.0)
    labels = out["superpixel_labels"]
    assert 0 not in labels and {1, 2} <= set(labels.tolist())
  assert 0 < flipped < 6


def test_evaluation_ucm_of_a_padded_image_is_the_ucm_of_the_image():
  """The evaluation pads every image to config.data.image_size: its similarities and UCM
  must be those of the image alone (session 4's run had contours along the padding)."""
  from jhseg import superpixels  # pylint: disable=g-import-not-at-top
  from jhseg.hierarchy import superpixel_graph  # pylint: disable=g-import-not-at-top
  config = configs.get_config("tiny")
  task = del_task.DEL(config)
  model = _numpy_init(task, None)
  rng = np.random.default_rng(3)
  image = np.repeat(np.repeat(rng.random((5, 6, 3)), 5, axis=0), 4, axis=1)[:23, :21]
  image = (image + 0.03 * rng.random(image.shape)).astype(np.float32)
  sp = superpixels.slic_superpixels(image, pixels_per_superpixel=16.0, compactness=10.0)
  num = int(sp.max()) + 1
  fn = task._similarities()  # pylint: disable=protected-access
  ucms = []
  for size in ((23, 21), (32, 32)):
    padded = del_task.pad_example(
        {"image": image, "superpixels": sp, "segments": sp, "truths": sp[None],
         "superpixel_mask": np.arange(task.num_superpixels) < num}, size,
        max_superpixels=task.num_superpixels, purity=0.7)
    pairs, pair_mask, d = (np.asarray(a)[0] for a in fn(
        model, jnp.asarray(padded["image"][None]), jnp.asarray(padded["superpixels"][None]),
        jnp.asarray(padded["size"][None])))
    ucms.append(superpixel_graph.ucm_from_superpixel_graph(
        sp, pairs, 1.0 - d, mask=pair_mask, linkage="single", num_superpixels=num))
  for unpadded, padded in zip(*ucms):
    assert np.ptp(unpadded) > 0.01  # a UCM with contours of different strengths
    np.testing.assert_allclose(padded, unpadded, atol=1e-5)


def test_sbd_pretraining_trunk_ends_up_in_the_del_model(synthetic_data_dir, tmp_path,
                                                        monkeypatch):
  """Stage 1 (semantic classes, task del_sbd_pretrain) -> stage 2 (DEL) through the
  engine's init_from: every trunk variable is copied by name; DEL's embedding is not
  found there and the classifier is unused (both reported)."""
  from jhseg.train import checkpointing, loop  # pylint: disable=g-import-not-at-top
  for task_class in (del_task.DEL, del_task.DELSemanticPretrain):
    monkeypatch.setattr(task_class, "make_model", _numpy_init)
  pretrain = configs.get_config("sbd_pretrain_tiny")
  pretrain.data.data_dir = synthetic_data_dir
  pretrain.num_train_steps = 1
  del pretrain.evals["val"]  # its mIoU evaluation: see the README's smoke command
  pretrain.checkpoint.best_metric = ""
  source = str(tmp_path / "pretrain")
  summary = train_and_evaluate(pretrain, source)
  assert np.isfinite(summary["train/loss"])
  trained = checkpointing.read_state_arrays(str(tmp_path / "pretrain" / "checkpoints" / "1"
                                                / "state"))["0"]

  config = configs.get_config("tiny")
  assert config.model.width == pretrain.model.width
  task = del_task.DEL(config)
  _, state, _ = loop.build_state(task, config, 1)
  params, missing, unused = checkpointing.load_params_from(source, state[0], with_unused=True)
  assert missing == ["embed/bias/value", "embed/kernel/value"]
  assert unused == ["classifier/bias/value", "classifier/kernel/value"]
  got, want = _flat(params), _flat(trained)
  trunk = sorted(n for n in want if n.split("/")[0] in ("stages", "sides", "fuse"))
  assert len(trunk) == len(got) - 2 and sorted(set(got) - {*missing}) == trunk
  for name in trunk:
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def _flat(tree) -> dict:
  from jhseg.train.optim import parameter_name  # pylint: disable=g-import-not-at-top
  out = {}
  jax.tree_util.tree_map_with_path(
      lambda p, x: out.__setitem__(parameter_name(p), np.asarray(x)), tree)
  return out


def test_semantic_decoding_marks_void_and_rejects_unknown_classes():
  image = np.zeros((2, 3, 3), np.uint8)
  labels = np.array([[0, 255, 3], [20, 1, 255]])
  out = del_task.decode_semantic({"image": image, "segmentation": labels},
                                 label_field="segmentation", num_classes=21, void_label=255)
  np.testing.assert_array_equal(out["segments"], [[0, -1, 3], [20, 1, -1]])
  padded = del_task.pad_semantic(out, (3, 5))
  assert padded["labels"].shape == (3, 5) and (padded["labels"][2] == -1).all()
  np.testing.assert_array_equal(padded["size"], [2, 3])
  with pytest.raises(ValueError, match=r"outside \[0, config.model.num_classes=21\)"):
    del_task.decode_semantic({"image": image, "segmentation": labels + 30},
                             label_field="segmentation", num_classes=21, void_label=255)
  with pytest.raises(ValueError, match="no field 'object_class'"):
    del_task.decode_semantic({"image": image}, label_field="object_class", num_classes=5,
                             void_label=255)



class _ClassesFromImage(nnx.Module):
  """Stand-in for VggDelSemantic (its compilation takes tens of seconds): one-hot logits
  of class (red channel + valid height) mod 5, so a wrong `sizes` changes the scores."""

  def __call__(self, images, sizes):
    classes = (images[..., 0].astype(jnp.int32) + sizes[:, 0, None, None]) % 5
    return jax.nn.one_hot(classes, 5)


def test_sbd_pretrain_evaluation_scores_valid_pixels_of_real_examples(tmp_path):
  """del_sbd_pretrain's mIoU evaluation (semantic.scores_over_batches) against a NumPy
  reference: void (-1) pixels and padding examples are not counted, and the model is
  given each image's valid size."""
  import types  # pylint: disable=g-import-not-at-top
  from jhseg.metrics import semantic  # pylint: disable=g-import-not-at-top
  task = del_task.DELSemanticPretrain(configs.get_config("sbd_pretrain_tiny"))
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 5, size=(2, 8, 8)).astype(np.int32)
  labels[0, 6:] = -1  # void, and the padding of a 6 x 8 image
  red = rng.integers(0, 5, size=(2, 8, 8))
  red[0, :3] = (labels[0, :3] - 6) % 5  # right where red + 6 = label (mod 5)
  batch = {"image": np.stack([red, red, red], -1).astype(np.float32), "labels": labels,
           "size": np.array([[6, 8], [8, 8]], np.int32),
           "example_mask": np.array([True, False])}
  ctx = types.SimpleNamespace(batches=lambda: iter([jax.tree.map(jnp.asarray, batch)]),
                              out_dir=str(tmp_path), step=7)
  scalars = task.evaluate(_ClassesFromImage(), ctx)
  reference = semantic.ConfusionMatrix(5, ignore_index=None)
  reference.add(labels[0, :6], (red[0, :6] + 6) % 5)
  expected = reference.result()
  assert expected["pixel_accuracy"] > 0.5  # the rows made right are counted
  assert scalars == {"pixel_accuracy": pytest.approx(expected["pixel_accuracy"]),
                     "miou": pytest.approx(expected["miou"])}
  with open(tmp_path / "summary.json") as f:
    assert json.load(f) == {"step": 7, "scalars": scalars}
