"""HSG task: end to end through the engine, the eq. 9 loss, nested inference, evaluation pieces."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from experiments.configs import hsg as configs
from jhseg import hierarchy
from jhseg.data.sources import load_source
from jhseg.data.transforms import apply_transforms
from jhseg.tasks import hsg

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _tiny_config(data_dir: str):
  config = configs.get_config("tiny")
  config.data.data_dir = data_dir
  config.num_train_steps = 3
  config.evals.val.every_steps = 3
  config.checkpoint_every_steps = 3
  config.log_every_steps = 3
  config.evals.val.num_examples = 6      # two batches of 4, the second one padded
  config.eval.num_memory_examples = 8
  return config


def _batch(task, data_dir: str, transforms, count: int = 4):
  source = load_source(_tiny_config(data_dir).data, "train")
  examples = [apply_transforms(source[i], transforms, seed=0, position=i) for i in range(count)]
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


# ----------------------------------------------------------------------------- end to end


@pytest.mark.xdist_group("hsg_tiny_run")  # the worker that trains `hsg_tiny_run`
def test_trains_end_to_end_and_writes_the_evaluation(hsg_tiny_run):
  # The run: `hsg:tiny` with 1 + 1 transformer layers trained 3 steps, 6 validation
  # images, a memory of 8 (conftest.py).
  config, workdir, summary = hsg_tiny_run
  assert (config.num_train_steps, config.evals.val.num_examples) == (3, 6)

  assert np.isfinite(summary["train/loss"]) and summary["train/loss"] > 0
  for name in ("hsg", "baseline"):
    for truth in ("instances", "parts"):
      for level in ("G0", "G1", "G2", "best"):
        value = summary[f"eval/val/nfcovering_{name}_{truth}_{level}"]
        assert 0.0 < value <= 1.0, (name, truth, level)
    assert 0.0 <= summary[f"eval/val/boundary_{name}_ods_f"] <= 1.0
  # The 3 x 3 test grid and n1, n2 = 8, 4 bound the distinct segments per level.
  for name in ("hsg", "baseline"):
    for level, bound in (("G0", 9), ("G1", 8), ("G2", 4)):
      assert 1.0 <= summary[f"eval/val/segments_{name}_{level}"] <= bound, (name, level)
  assert 0.0 <= summary["eval/val/retrieval_miou"] <= 1.0
  assert 0.0 < summary["eval/val/retrieval_pixel_accuracy"] <= 1.0

  out = workdir / "eval" / "val" / "3"
  for i in range(config.eval.num_pictures):
    for name in (f"hierarchy_{i}.png", f"baseline_{i}.png", f"ucm_{i}.png"):
      assert (out / name).read_bytes()[:8] == PNG_SIGNATURE, name
  assert (out / "attention_0.png").read_bytes()[:8] == PNG_SIGNATURE  # decoder attention maps
  report = json.loads((out / "summary.json").read_text())
  assert report["truth_levels"] == ["instances", "parts"]
  assert report["predicted_levels"] == ["G0", "G1", "G2"]
  assert report["nfcovering"]["hsg"]["num_images"] == 6
  assert np.asarray(report["nfcovering"]["baseline"]["per_level"]).shape == (2, 3)
  assert report["retrieval"]["memory_segments"] > 0
  assert (workdir / "checkpoints").is_dir()


# ----------------------------------------------------------------------------- loss


def _loss_batch(synthetic_data_dir, config):
  task = hsg.HSG(config)
  return task, _batch(task, synthetic_data_dir, task.train_transforms())


class SmallEmbedder(nnx.Module):
  """Two strided 3x3 convolutions to unit embeddings: a cheap stand-in for the FCN (the
  embedding networks have their own tests) so the loss compiles fast on CPU."""

  def __init__(self, embedding_dim: int, rngs: nnx.Rngs):
    self.embedding_dim = embedding_dim
    self.conv1 = nnx.Conv(3, 16, (3, 3), strides=(2, 2), rngs=rngs)
    self.conv2 = nnx.Conv(16, embedding_dim, (3, 3), strides=(2, 2), rngs=rngs)

  def __call__(self, images):
    return hsg.skm.unit_normalize(self.conv2(nnx.relu(self.conv1(images))))


def _small_network(config):
  """One encoder and one decoder layer per clustering transformer: a cheaper compile of the
  loss (the layers themselves are tested in test_clustering_transformer.py)."""
  t = config.model.transformer
  return hsg.HSGNetwork(embedder=SmallEmbedder(config.model.embedding_dim, nnx.Rngs(1)),
                        num_clusters=config.model.num_clusters, num_heads=t.num_heads,
                        num_encoder_layers=1, num_decoder_layers=1, dropout=t.dropout,
                        rngs=nnx.Rngs(0))


def test_loss_is_finite_with_gradients_for_every_module(synthetic_data_dir):
  task, batch = _loss_batch(synthetic_data_dir, _tiny_config(synthetic_data_dir))
  assert batch["views"].shape == (4, 2, 32, 32, 3)
  model = _small_network(task.config)
  model.train()

  @nnx.jit
  def loss_and_grads(model, batch):
    return nnx.value_and_grad(lambda m: task.loss(m, batch, None), has_aux=True)(model)

  (loss, aux), grads = loss_and_grads(model, batch)
  assert np.isfinite(float(loss))
  for key in ("loss_f_coherent", "loss_f_level1", "loss_f_level2", "loss_g_level1",
              "loss_g_level2"):
    assert np.isfinite(float(aux[key])), key
  assert float(aux["base_segments"]) >= 4  # at least the 2 x 2 k-means clusters
  assert 1.0 <= float(aux["clusters_level1"]) <= 8.0
  assert 1.0 <= float(aux["clusters_level2"]) <= float(aux["clusters_level1"])  # nested
  for leaf in jax.tree.leaves(grads):
    assert np.all(np.isfinite(np.asarray(leaf)))
  assert float(optax.tree.norm(grads["embedder"])) > 0
  assert float(optax.tree.norm(grads["hierarchy"])) > 0
  assert float(optax.tree.norm(grads["position"])) > 0  # segment positions reach the loss
  # Eq. 9 with the weights of the config.
  w = task.config.loss
  expected = (w.lambda_e * aux["loss_f_coherent"]
              + w.lambda_f * (aux["loss_f_level1"] + aux["loss_f_level2"])
              + w.lambda_g * (aux["loss_g_level1"] + aux["loss_g_level2"]))
  np.testing.assert_allclose(float(loss), float(expected), rtol=1e-5)


def test_loss_does_not_depend_on_the_numbering_of_coherent_regions(synthetic_data_dir):
  config = _tiny_config(synthetic_data_dir)
  config.model.max_segments = 64  # 2 x 2 clusters x 16 regions: nothing truncated
  task, batch = _loss_batch(synthetic_data_dir, config)
  model = _small_network(config)
  model.eval()  # deterministic: BatchNorm running statistics, no dropout
  permutation = np.random.default_rng(0).permutation(config.data.augment.coherent_regions
                                                     .max_regions)
  regions = batch["view_regions"]
  renumbered = dict(batch, view_regions=np.where(regions >= 0, permutation[regions], -1))
  loss_fn = nnx.jit(lambda m, b: task.loss(m, b, None)[0])
  np.testing.assert_allclose(float(loss_fn(model, renumbered)), float(loss_fn(model, batch)),
                             rtol=1e-4)


def test_views_of_one_image_share_their_coherent_region_labels():
  image_index = jnp.array([0, 0, 1, 1])
  regions = jnp.array([[0, 3, -1], [3, 1, -1], [0, 3, 2], [1, -1, -1]])
  np.testing.assert_array_equal(
      hsg.unique_per_image(regions, image_index, 4),
      [[0, 3, -1], [3, 1, -1], [4, 7, 6], [5, -1, -1]])


def test_clusters_used_counts_distinct_labels_per_row():
  labels = jnp.array([[0, 0, 2, -1], [1, 1, 1, 1], [-1, -1, -1, -1]])
  assert float(hsg.clusters_used(labels, 4)) == (2 + 1 + 0) / 3



# ----------------------------------------------------------------------------- inference


def test_inference_levels_are_nested_and_give_an_ultrametric(synthetic_data_dir):
  config = _tiny_config(synthetic_data_dir)
  task = hsg.HSG(config)
  batch = _batch(task, synthetic_data_dir, task.eval_transforms())
  model = task.make_model(nnx.Rngs(0))
  model.eval()
  seg = nnx.jit(lambda e, c, x, v: hsg.segment_images(
      e, c, x, v, grid=config.eval.grid, num_iterations=5, location_weight=1.0))(
          model.embedder, model.hierarchy, batch["image"], batch["valid"])
  levels = np.asarray(seg.levels)
  assert levels.shape == (4, 3, 32, 32)
  assert levels[:, 0].max() < 9 and levels[:, 1].max() < 8 and levels[:, 2].max() < 4
  for image in levels:
    for fine, coarse in zip(image, image[1:]):
      pairs = set(zip(fine.ravel().tolist(), coarse.ravel().tolist()))
      assert len(pairs) == len(np.unique(fine)), "a segment spans two coarser segments"
    h, v = hierarchy.ultrametric_from_nested_segmentations(list(image))
    assert hierarchy.is_ultrametric(h, v)


# ----------------------------------------------------------------------------- evaluation pieces


def test_colour_baseline_recovers_flat_quadrants_and_merges_equal_colours():
  image = np.zeros((8, 8, 3))
  image[:4, :4] = image[4:, 4:] = (1.0, 0.0, 0.0)   # red diagonal
  image[:4, 4:] = image[4:, :4] = (0.0, 0.0, 1.0)   # blue anti-diagonal
  g0, g1 = hsg.colour_kmeans_hierarchy(image, grid=(2, 2), num_clusters=(2,))
  quadrants = (np.arange(8)[:, None] >= 4) * 2 + (np.arange(8)[None, :] >= 4)
  assert len(np.unique(g0)) == 4
  assert len(set(zip(g0.ravel(), quadrants.ravel()))) == 4  # G0 = the quadrants
  assert g1[0, 0] == g1[7, 7] and g1[0, 7] == g1[7, 0] and g1[0, 0] != g1[0, 7]


def test_missing_evaluation_field_is_a_clear_error():
  example = {"image": np.zeros((4, 4, 3), np.uint8), "instances": np.zeros((4, 4), np.int32)}
  with pytest.raises(ValueError, match="'parts'"):
    hsg.decode_eval(example, truth_levels=("instances", "parts"), label_field="instances",
                    size=None)


# ----------------------------------------------------------------------------- BSDS evaluation


def _quadrant_example(height: int = 16, width: int = 12):
  """Four flat quadrants; annotator 1 draws the quadrants, annotator 2 the two halves."""
  rows = (np.arange(height)[:, None] >= height // 2).astype(np.int32)
  cols = (np.arange(width)[None, :] >= width // 2).astype(np.int32)
  quadrants = rows * 2 + cols
  colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]], np.uint8)
  halves = np.broadcast_to(cols, (height, width))
  return {"image": colours[quadrants],
          "segmentations": np.stack([quadrants + 1, halves + 1]).astype(np.int32)}


def test_human_segmentations_are_padded_with_a_mask_and_bad_fields_named():
  example = _quadrant_example()
  out = hsg.decode_human_segmentations(example, field="segmentations", max_annotators=3,
                                       size=(16, 16))
  assert out["image"].shape == (16, 16, 3) and out["truths"].shape == (3, 16, 16)
  np.testing.assert_array_equal(out["truth_mask"], [True, True, False])
  np.testing.assert_array_equal(out["truths"][:2, :, :12], example["segmentations"])
  assert not out["truths"][:, :, 12:].any() and not out["truths"][2].any()
  assert out["valid"][:, :12].all() and not out["valid"][:, 12:].any()
  np.testing.assert_array_equal(out["size"], [16, 12])
  with pytest.raises(ValueError, match="'humans'"):
    hsg.decode_human_segmentations(example, field="humans", max_annotators=3, size=None)
  with pytest.raises(ValueError, match="max_annotators=1"):
    hsg.decode_human_segmentations(example, field="segmentations", max_annotators=1, size=None)
  with pytest.raises(ValueError, match=r"\(K, H, W\)"):
    hsg.decode_human_segmentations(dict(example, segmentations=example["segmentations"][0]),
                                   field="segmentations", max_annotators=3, size=None)


class _FakeEvalContext:
  """The part of jhseg.train.evaluators.EvalContext that `evaluate_bsds` uses."""

  def __init__(self, batch, out_dir):
    self._batch, self.out_dir, self.step = batch, str(out_dir), 7

  def batches(self):
    yield self._batch


def test_bsds_evaluation_scores_both_hierarchies_against_every_annotator(
    synthetic_data_dir, tmp_path):
  config = _tiny_config(synthetic_data_dir)
  config.eval.grid = (2, 2)
  config.eval.image_size = (16, 16)
  config.eval.human_segmentations = "segmentations"
  config.eval.max_annotators = 3
  task = hsg.HSG(config)
  assert set(task.evaluations()) == {"default", "bsds"}
  example = apply_transforms(_quadrant_example(), task.bsds_transforms(), seed=0, position=0)
  batch = {k: np.stack([v, v]) for k, v in example.items()}
  batch["example_mask"] = np.array([True, False])  # the second one is padding
  model = _small_network(config)
  model.eval()
  # The small embedder has no output-stride option: evaluate it as it is.
  task._use_eval_stride = lambda m, rebuild=False: setattr(task, "_eval_embedder", m.embedder)
  scalars = task.evaluate_bsds(model, _FakeEvalContext(batch, tmp_path))

  # The colour baseline's levels are all the four quadrants (grid 2 x 2, 4 colours):
  # their boundaries are annotator 1's and contain annotator 2's, so P = R = F = 1.
  # Covering by hand: annotator 1's four regions are covered exactly (192 px); each
  # 96-px half of annotator 2 at best by a 48-px quadrant (overlap 1/2):
  # (192 + 2 * 96 / 2) / (2 * 192) = 0.75.
  for level in ("G0", "G1", "G2"):
    assert scalars[f"segments_baseline_{level}"] == 4
    assert scalars[f"boundary_baseline_f_{level}"] == pytest.approx(1.0)
    assert scalars[f"covering_baseline_{level}"] == pytest.approx(0.75)
  assert scalars["boundary_baseline_ods_f"] == pytest.approx(1.0)
  assert scalars["baseline_covering_ods"] == pytest.approx(0.75)
  for name in ("hsg", "baseline"):
    for key in ("boundary_{}_ods_f", "boundary_{}_ois_f", "boundary_{}_ap", "{}_covering_ods",
                "{}_covering_ois", "{}_pri_ods"):
      assert 0.0 <= scalars[key.format(name)] <= 1.0, key.format(name)
  for level, bound in (("G0", 4), ("G1", 4), ("G2", 4)):
    assert 1 <= scalars[f"segments_hsg_{level}"] <= bound
  report = json.loads((tmp_path / "summary.json").read_text())
  assert report["num_images"] == 1 and report["step"] == 7
  assert len(report["hsg"]["covering_per_level"]) == 3
  assert (tmp_path / "hierarchy_0.png").read_bytes()[:8] == PNG_SIGNATURE


def test_colour_baseline_kmeans_assigns_points_to_their_nearest_centre():
  """The baseline's Lloyd iterations against a direct transcription (full differences)."""
  from jhseg import baselines
  rng = np.random.default_rng(0)
  points, weights = rng.random((500, 5)), rng.random(500) + 0.5
  start = points[:6].copy()
  centres = start.copy()
  for _ in range(4):
    labels = np.argmin(((points[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    for c in range(len(centres)):
      if (labels == c).any():
        w = weights[labels == c]
        centres[c] = (w[:, None] * points[labels == c]).sum(0) / w.sum()
  expected = np.argmin(((points[:, None] - centres[None]) ** 2).sum(-1), axis=1)
  np.testing.assert_array_equal(baselines._kmeans(points, weights, start, 5), expected)
