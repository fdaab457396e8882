"""HiPoSeg task: transforms, the memory update once per optimizer update (gradient
accumulation) through the engine's train step, the phase schedule and a bit-exact resume
(on a stand-in segmenter, so nothing big compiles), zero inference cost, and one tiny
end-to-end run of the real DeepLabV3+ with per-level mIoU, tables and pictures."""
import importlib
import importlib.util
import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jhseg.data.sources import load_source
from jhseg.data.transforms import apply_transforms
from jhseg.label_tree import synthetic_scenes_tree
from jhseg.models import deeplab, hiposeg_head
from jhseg.tasks import hiposeg
from jhseg.train import checkpointing, loop, optim, train_and_evaluate

configs = importlib.import_module("experiments.configs.hiposeg")
TREE = synthetic_scenes_tree()
MAKE_MODEL = hiposeg.HiPoSeg.make_model  # before any monkeypatch


def _tiny_config(data_dir: str, **overrides):
  config = configs.get_config("tiny")
  config.data.data_dir = data_dir
  config.data.batch_size = 4
  config.data.num_threads = 0
  config.num_train_steps = 4
  config.log_every_steps = 1
  config.checkpoint_every_steps = 2
  config.checkpoint.keep = 3
  config.checkpoint.best_metric = ""
  config.checkpoint["async"] = False
  config.evals.val.every_steps = None
  config.evals.val.batch_size = 4
  config.evals.val.num_examples = 6  # two batches, the second padded
  del config.evals["test"]
  config.loss.phase_starts = (0.25, 0.5, 0.75)  # switches at steps 1, 2, 3 of 4
  config.loss.num_samples = 16
  config.eval.num_pictures = 1
  for key, value in overrides.items():
    node = config
    *path, last = key.split(".")
    for part in path:
      node = node[part]
    node[last] = value
  return config


# ----------------------------------------------------------------------------- transforms


def test_transforms_give_fixed_shapes_and_consistent_levels():
  rng = np.random.default_rng(0)
  parts = rng.integers(0, TREE.num_classes(0), (20, 30)).astype(np.int32)
  parts[0, :5] = TREE.ignore_label
  image = rng.integers(0, 256, (20, 30, 3)).astype(np.uint8)
  example = {"image": image, "part_class": parts}
  decoded = hiposeg.decode(example, tree=TREE, label_fields=("part_class",))
  known = parts != TREE.ignore_label
  np.testing.assert_array_equal(decoded["labels"][0], parts)
  np.testing.assert_array_equal(decoded["labels"][1][known], TREE.parents[0][parts[known]])
  assert (decoded["labels"][1][0, :5] == TREE.ignore_label).all()
  out = hiposeg.scale_crop_flip(decoded, np.random.default_rng(1), crop=(24, 24),
                                scale_range=(0.5, 1.5), flip=True,
                                ignore_label=TREE.ignore_label)
  assert out["image"].shape == (24, 24, 3) and out["labels"].shape == (2, 24, 24)
  known = out["labels"][0] != TREE.ignore_label
  np.testing.assert_array_equal(out["labels"][1][known], TREE.parents[0][out["labels"][0][known]])
  # No scaling, full crop, flipped: exactly the mirrored input.
  flips = [hiposeg.scale_crop_flip(decoded, np.random.default_rng(seed), crop=(20, 30),
                                   scale_range=(1.0, 1.0), flip=True,
                                   ignore_label=TREE.ignore_label) for seed in range(6)]
  mirrored = [f for f in flips if not np.array_equal(f["labels"], decoded["labels"])]
  assert mirrored and len(mirrored) < len(flips)
  np.testing.assert_array_equal(mirrored[0]["labels"], decoded["labels"][:, :, ::-1])
  np.testing.assert_array_equal(mirrored[0]["image"], decoded["image"][:, ::-1])
  padded = hiposeg.pad_to(hiposeg.resize_long_side(decoded, 15), (16, 16), TREE.ignore_label)
  assert padded["labels"].shape == (2, 16, 16)
  assert (padded["labels"][:, 10:] == TREE.ignore_label).all()  # 20x30 -> 10x15, padded
  with pytest.raises(ValueError, match="no field 'object_class'"):
    hiposeg.decode(example, tree=TREE, label_fields=("part_class", "object_class"))


def test_synthetic_eval_transforms_keep_the_dataset_levels(synthetic_data_dir):
  config = _tiny_config(synthetic_data_dir)
  task = hiposeg.HiPoSeg(config)
  scene = load_source(config.data, "validation")[0]
  out = apply_transforms(dict(scene), task.eval_transforms(), seed=0, position=0)
  np.testing.assert_array_equal(out["labels"][0], scene["part_class"])
  np.testing.assert_array_equal(out["labels"][1], scene["object_class"])
  with pytest.raises(ValueError, match="valid names"):
    hiposeg.get_label_tree("cityscapes_typo")


def test_paper_config_and_poly_schedule():
  config = configs.get_config("pascal_part_108")
  o = config.optim
  assert (o.name, o.learning_rate, o.momentum, o.weight_decay, o.schedule) == (
      "momentum", 1e-2, 0.9, 1e-4, "poly")  # section 4.1
  assert tuple(config.data.image_size) == (512, 512) and config.data.batch_size == 16
  assert config.num_train_steps == 60000
  assert (config.model.depth, config.model.output_stride) == (101, 16)
  schedule = optim.SCHEDULES["poly"](o, 100)
  np.testing.assert_allclose([schedule(0), schedule(50), schedule(100)],
                             [1e-2, 1e-2 * 0.5 ** 0.9, 0.0], rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("variant, dataset, crop, batch, steps, levels", [
    ("cityscapes", "cityscapes_hier", (512, 1024), 8, 80000, (19, 7)),
    ("mapillary_vistas", "mapillary_vistas", (512, 1024), 8, 80000, (124, 17, 7)),
])
def test_scene_parsing_configs_follow_section_4_1(variant, dataset, crop, batch, steps, levels):
  config = configs.get_config(variant)
  o = config.optim
  assert (o.name, o.learning_rate, o.momentum, o.weight_decay, o.schedule) == (
      "momentum", 1e-2, 0.9, 1e-4, "poly")
  assert (config.data.name, tuple(config.data.image_size), config.data.batch_size,
          config.num_train_steps) == (dataset, crop, batch, steps)
  task = hiposeg.HiPoSeg(config)
  assert tuple(task.tree.num_classes(l) for l in range(task.tree.num_levels)) == levels
  # The builders store the finest level only ("label", (H, W) uint8); decode adds the rest.
  finest = np.array([[0, 1, 255], [3, 2, 1]], np.uint8)
  out = hiposeg.decode({"image": np.zeros((2, 3, 3), np.uint8), "label": finest},
                       tree=task.tree, label_fields=tuple(config.model.label_fields))
  assert out["labels"].shape == (len(levels), 2, 3)
  for level in range(1, len(levels)):
    np.testing.assert_array_equal(out["labels"][level], task.tree.map_labels(
        finest.astype(np.int32), level))


def test_ade20k_needs_a_tree_file(tmp_path):
  config = configs.get_config("ade20k")
  assert (tuple(config.data.image_size), config.data.batch_size, config.num_train_steps) == (
      (512, 512), 16, 60000)
  with pytest.raises(ValueError, match="no 150 -> 14 label tree is shipped"):
    hiposeg.HiPoSeg(config)
  tree = TREE.to_metadata()
  path = tmp_path / "tree.json"
  path.write_text(json.dumps(tree))
  config.model.label_tree_file = str(path)
  assert hiposeg.HiPoSeg(config).tree == TREE
  path.write_text("{not json")
  with pytest.raises(ValueError, match=r"tree\.json: config\.model\.label_tree_file is not"):
    hiposeg.HiPoSeg(config)


def test_tsne_pixels_are_sampled_per_class_with_a_fixed_seed():
  labels = np.array([[[0, 0, 1], [2, 255, 0]], [[1, 1, 1], [0, 255, 2]]])  # (2, 2, 3)
  features = np.arange(2 * 2 * 3 * 2, dtype=np.float32).reshape(2, 2, 3, 2)
  picked, classes = hiposeg.sample_pixels_per_class([(features, labels)], per_class=2,
                                                    num_classes=4)
  # Class 0 has 4 pixels (2 kept), class 1 four (2 kept), class 2 two (both), class 3 none.
  np.testing.assert_array_equal(classes, [0, 0, 1, 1, 2, 2])
  flat_labels, flat_features = labels.reshape(-1), features.reshape(-1, 2)
  for row, c in zip(picked, classes):
    (index,) = np.flatnonzero((flat_features == row).all(1))
    assert flat_labels[index] == c
  again, _ = hiposeg.sample_pixels_per_class([(features, labels)], per_class=2, num_classes=4)
  np.testing.assert_array_equal(picked, again)


def test_tsne_colours_share_the_parent_hue():
  import colorsys
  colours = hiposeg.sibling_shades(TREE)
  parent = TREE.fine_to_level(1)
  hue = lambda rgb: colorsys.rgb_to_hsv(*rgb)[0]
  for coarse in range(TREE.num_classes(1)):
    children = np.flatnonzero(parent == coarse)
    assert np.ptp([hue(colours[c]) for c in children]) < 1e-6
    assert len({tuple(colours[c]) for c in children}) == len(children)  # siblings differ
  assert len({tuple(c) for c in colours}) == TREE.num_classes(0)
  assert ((colours >= 0) & (colours <= 1)).all()


def _ablation_script():
  path = pathlib.Path(__file__).resolve().parents[1] / "bench" / "hiposeg_ablation.py"
  spec = importlib.util.spec_from_file_location("hiposeg_ablation", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_ablation_rows_switch_the_tables_terms_and_tabulate():
  # Table 5's rows: which of L_ce, L_fh, L_hh, L_fl, L_ll, L_align each trains with.
  expected = {"ce": "100000", "high": "111000", "low": "100110", "high_low": "111110",
              "full": "111111"}
  script = _ablation_script()
  for name, marks in expected.items():
    config = configs.get_config(f"tiny_{name}")
    on = script.terms_on(name)
    assert "".join("1" if on[t] else "0" for t in script.TERMS) == marks, name
    assert config.loss.hiposeg == (name != "ce")
    if config.loss.hiposeg:  # a term is off exactly when its weight is 0
      assert all((config.loss.weights[t] > 0) == on[t] for t in script.TERMS), name
  with pytest.raises(ValueError, match=r"unknown HiPoSeg ablation 'x'; valid: \['ce'"):
    configs.with_ablation(configs.get_config("tiny"), "x")
  rows = [{"name": "ce", "terms": script.terms_on("ce"),
           "miou": {"val": {"part": 0.5, "object": 0.75}}},
          {"name": "full", "terms": script.terms_on("full"),
           "miou": {"val": {"part": 0.125, "object": 1.0}}}]
  table = script.markdown(rows).splitlines()
  assert table[0] == ("| row | L_ce | L_fh | L_hh | L_fl | L_ll | L_align | val part mIoU (%) "
                      "| val object mIoU (%) |")
  assert table[2] == "| ce | ✓ |  |  |  |  |  | 50.00 | 75.00 |"
  assert table[3] == "| full | ✓ | ✓ | ✓ | ✓ | ✓ | ✓ | 12.50 | 100.00 |"


# ----------------------------------------------------------------------------- stand-in network


class StandIn(nnx.Module):
  """A DeepLabV3+-shaped segmenter made of three 1x1 convolutions at full resolution."""

  def __init__(self, num_classes: int, rngs: nnx.Rngs):
    self.classifier = nnx.Conv(3, num_classes, (1, 1), rngs=rngs)
    self.features = nnx.Conv(3, 6, (1, 1), rngs=rngs)
    self.options = {"decoder_features": 6, "aspp_features": 6, "low_level_features": 6}

  def __call__(self, images, *, return_features=False):
    logits = self.classifier(images)
    if not return_features:
      return logits
    x = nnx.relu(self.features(images))
    return deeplab.DeepLabOutputs(logits=logits, decoder=x, aspp=x, low_level=x)


def _stand_in_model(self, rngs):
  segmenter = StandIn(self.tree.num_classes(0), rngs)
  head = hiposeg_head.ProjectionHead(hiposeg_head.stage_features(segmenter),
                                     stages=("decoder",), dim=4, rngs=rngs)
  bank = hiposeg_head.PrototypeBank(self.tree.num_classes(1), self.tree.num_classes(0), 4)
  return hiposeg_head.HiPoSegNetwork(segmenter, head, bank)


def _train_batch(config, position: int):
  task = hiposeg.HiPoSeg(config)
  source = load_source(config.data, "train")
  examples = [apply_transforms(dict(source[i]), task.train_transforms(), seed=0, position=i)
              for i in range(position, position + 4)]
  return {k: jnp.stack([e[k] for e in examples]) for k in examples[0]}


def _bank(model):
  return {k: np.asarray(getattr(model.prototypes, k)[...]) for k in
          ("high", "high_seen", "low", "low_seen", "high_sums", "high_counts", "low_sums",
           "low_counts")}


def test_memory_moves_once_per_optimizer_update_with_the_accumulated_batch(
    synthetic_data_dir, monkeypatch):
  monkeypatch.setattr(hiposeg.HiPoSeg, "make_model", _stand_in_model)
  config = _tiny_config(synthetic_data_dir, **{"optim.grad_accum_steps": 2})
  task = hiposeg.HiPoSeg(config)
  graphdef, state, wrt = loop.build_state(task, config, 4)
  step_fn = jax.jit(loop.make_train_step(graphdef, task, wrt=wrt, seed=0, total_steps=4))
  batches = [_train_batch(config, 4 * k) for k in range(2)]
  model, _ = nnx.merge(graphdef, state)
  model.train()
  # Embeddings of both micro-batches with the parameters of micro-step 1 (MultiSteps only
  # applies the update at micro-step 2, after that step's loss).
  expected_sums = {"high": 0.0, "low": 0.0}
  for batch in batches:
    z = np.asarray(model.head(model.segmenter(batch["image"], return_features=True)))
    z = z.reshape(-1, 4)
    low = np.asarray(batch["labels"][:, 0]).reshape(-1)
    known = low != TREE.ignore_label
    high = np.where(known, TREE.parents[0][np.where(known, low, 0)], -1)
    for name, labels, k in (("low", low, TREE.num_classes(0)),
                            ("high", high, TREE.num_classes(1))):
      sums = np.zeros((k, 4))
      np.add.at(sums, labels[known], z[known])
      expected_sums[name] = expected_sums[name] + sums
  state, _ = step_fn(state, batches[0], np.int32(1), np.float32(1.0))
  after_first = _bank(nnx.merge(graphdef, state)[0])
  assert not after_first["high_seen"].any() and not after_first["high"].any()
  assert after_first["low_counts"].sum() > 0  # the first micro-batch waits in the sums
  state, _ = step_fn(state, batches[1], np.int32(2), np.float32(1.0))
  after_second = _bank(nnx.merge(graphdef, state)[0])
  for name in ("high", "low"):
    sums = expected_sums[name]
    present = np.linalg.norm(sums, axis=1) > 0
    np.testing.assert_array_equal(after_second[f"{name}_seen"], present)
    # First time seen: the entry is the accumulated batch prototype, unit length (eq. 15).
    expected = sums[present] / np.linalg.norm(sums[present], axis=1, keepdims=True)
    np.testing.assert_allclose(after_second[name][present], expected, rtol=1e-4, atol=1e-5)
    assert not after_second[name][~present].any()
    assert not after_second[f"{name}_sums"].any() and not after_second[f"{name}_counts"].any()


def test_phase_schedule_and_bit_exact_resume(synthetic_data_dir, tmp_path, monkeypatch):
  monkeypatch.setattr(hiposeg.HiPoSeg, "make_model", _stand_in_model)
  config = _tiny_config(synthetic_data_dir)
  train_and_evaluate(config, str(tmp_path))
  records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  train = {r["step"]: r for r in records if "train/loss" in r}
  # phase_starts (0.25, 0.5, 0.75) of 4 steps: switches at steps 1, 2, 3.
  assert [train[s]["train/phase"] for s in (1, 2, 3, 4)] == [1, 2, 3, 3]
  assert [train[s]["train/weight_fh"] for s in (1, 2, 3, 4)] == pytest.approx([0.1] * 4)
  assert [train[s]["train/weight_fl"] for s in (1, 2, 3, 4)] == pytest.approx([0, .1, .1, .1])
  assert [train[s]["train/weight_align"] for s in (1, 2, 3, 4)] == pytest.approx([0, 0, .1, .1])
  final = checkpointing.read_state_arrays(str(tmp_path / "checkpoints" / "4" / "state"))
  flat = jax.tree_util.tree_leaves_with_path(final)
  seen = [x for path, x in flat if "low_seen" in jax.tree_util.keystr(path)]
  assert len(seen) == 1 and np.asarray(seen[0]).any()  # the memories are in the checkpoint
  # Resume from step 2: the re-trained steps 3-4 give the same bits, memories included.
  shutil.rmtree(tmp_path / "checkpoints" / "4")
  train_and_evaluate(config, str(tmp_path))
  again = checkpointing.read_state_arrays(str(tmp_path / "checkpoints" / "4" / "state"))
  flat_again = jax.tree_util.tree_leaves_with_path(again)
  assert len(flat) == len(flat_again)
  for (path, a), (_, b) in zip(flat, flat_again):
    np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))


# ----------------------------------------------------------------------------- real network


def _numpy_init(self, rngs):
  """make_model with NumPy-random parameters: eager JAX initialisation compiles one program
  per parameter shape (a minute on the shared CPU); the values are not under test."""
  del rngs
  model = nnx.eval_shape(lambda: MAKE_MODEL(self, nnx.Rngs(0)))
  rng = np.random.default_rng(0)
  for path, variable in nnx.iter_graph(model):
    if isinstance(variable, nnx.Variable):
      shape, dtype = variable.shape, variable.dtype
      if isinstance(variable, nnx.Param) and len(shape) > 1:
        value = rng.normal(size=shape) / np.sqrt(np.prod(shape[:-1]))
      elif path[-1] in ("scale", "var"):
        value = np.ones(shape)
      else:
        value = np.zeros(shape)
      variable.set_value(jnp.asarray(value, dtype))
  return model


def test_inference_is_the_segmentation_network_alone(synthetic_data_dir):
  config = _tiny_config(synthetic_data_dir)
  model = _numpy_init(hiposeg.HiPoSeg(config), None)
  baseline = hiposeg.HiPoSeg(_tiny_config(synthetic_data_dir, **{"loss.hiposeg": False}))
  assert nnx.eval_shape(lambda: baseline.make_model(nnx.Rngs(0))).head is None
  assert model.head is not None and model.prototypes is not None
  head_removed = hiposeg_head.HiPoSegNetwork(model.segmenter)  # the same weights
  model.eval()
  images = jnp.asarray(np.random.default_rng(0).random((2, 32, 32, 3)), jnp.float32)
  forward = lambda m, x: m(x)
  np.testing.assert_array_equal(nnx.jit(forward)(model, images),
                                nnx.jit(forward)(head_removed, images))
  costs = [nnx.jit(forward).lower(m, images).cost_analysis() for m in (model, head_removed)]
  flops = [c["flops"] if isinstance(c, dict) else c[0]["flops"] for c in costs]
  assert flops[0] == flops[1] > 0


def test_tiny_end_to_end(synthetic_data_dir, tmp_path, monkeypatch):
  monkeypatch.setattr(hiposeg.HiPoSeg, "make_model", _numpy_init)
  config = _tiny_config(synthetic_data_dir, num_train_steps=2, checkpoint_every_steps=2)
  summary = train_and_evaluate(config, str(tmp_path))
  out = tmp_path / "eval" / "val" / "2"
  written = json.loads((out / "summary.json").read_text())
  for level in ("part", "object"):
    assert 0 <= summary[f"eval/val/miou_{level}"] <= 1
    assert written["scalars"][f"miou_{level}"] == pytest.approx(summary[f"eval/val/miou_{level}"])
    names = TREE.class_names[TREE.level_index(level)]
    assert list(written["levels"][level]["per_class_iou"]) == list(names)
    table = (out / f"per_class_iou_{level}.txt").read_text().splitlines()
    assert len(table) == len(names) + 2 and table[-1].startswith("mIoU")
  for name in ("per_class_iou.png", "0_prediction.png", "prototypes.png",
               "embedding_tsne.png"):
    assert (out / name).read_bytes()[:4] == b"\x89PNG"
