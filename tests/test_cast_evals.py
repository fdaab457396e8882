"""CAST's evaluators' pieces (jhseg.tasks.cast_evals, metrics.retrieval.segment_prototypes):
the 60%-mass figure-ground rule, Jaccard and majority labelling by hand, the class token's
attention against the model's forward pass, test-time adaptation (only normalisation
parameters move, the entropy falls), the prototype classifier and segment pooling.
The evaluators themselves run in tests/test_cast_task.py's tiny end to end."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jhseg.metrics import retrieval
from jhseg.models import cast_hierarchy
from jhseg.tasks import cast as cast_task
from jhseg.tasks import cast_evals
from test_cast_task import _numpy_model, _small_config


def _dino_rule(attention, mass):
  """DINO's visualize_attention.py, transcribed: ascending sort, cumsum > 1 - mass."""
  order = np.argsort(attention, kind="stable")
  values = attention[order] / attention.sum()
  keep = np.zeros(len(attention), bool)
  keep[order] = np.cumsum(values) > 1 - mass
  return keep


def test_keep_attention_mass_by_hand_and_against_dino():
  attention = jnp.array([0.5, 0.05, 0.3, 0.15, 0.0])
  # descending 0.5 (0 before), 0.3 (0.5 before < 0.6), 0.15 (0.8 before): tokens 0 and 2
  np.testing.assert_array_equal(cast_evals.keep_attention_mass(attention),
                                [True, False, True, False, False])
  np.testing.assert_array_equal(cast_evals.keep_attention_mass(3 * attention),
                                [True, False, True, False, False])  # scale-free
  np.testing.assert_array_equal(cast_evals.keep_attention_mass(jnp.array([0.6, 0.4])),
                                [True, False])  # exactly 60% in one token
  rng = np.random.default_rng(0)
  batch = rng.dirichlet(np.ones(9), size=(2, 3))  # (B, heads, N)
  kept = np.asarray(cast_evals.keep_attention_mass(jnp.asarray(batch), 0.6))
  for b in range(2):
    for h in range(3):
      np.testing.assert_array_equal(kept[b, h], _dino_rule(batch[b, h], 0.6))
      assert batch[b, h][kept[b, h]].sum() >= 0.6 - 1e-6


def test_jaccard_and_majority_foreground_by_hand():
  truth = np.array([[1, 1, 0, 0]], bool)
  valid = np.array([[1, 1, 1, 0]], bool)
  assert cast_evals.jaccard(np.array([[1, 0, 0, 1]], bool), truth, valid) == 0.5
  assert cast_evals.jaccard(np.zeros_like(truth), np.zeros_like(truth), valid) == 1.0
  segments = np.array([[0, 0, 1, 1, 2, 2]])
  fg = np.array([[1, 1, 1, 0, 0, 0]], bool)  # segment 1 is a tie: background
  predicted = cast_evals.majority_foreground(segments, fg, np.ones_like(fg))
  np.testing.assert_array_equal(predicted, [[1, 1, 0, 0, 0, 0]])
  # foreground IoU 2/3, background IoU 3/4
  np.testing.assert_allclose(cast_evals.foreground_iou(predicted, fg, np.ones_like(fg)),
                             0.5 * (2 / 3 + 3 / 4))


def test_prototype_classifier_and_entropy():
  features = np.array([[2.0, 0, 0], [0, 1, 0], [0, 3, 0]])
  prototypes = cast_evals.class_prototypes(features, np.array([0, 1, 1]), 3)
  np.testing.assert_allclose(prototypes, [[1, 0, 0], [0, 1, 0], [0, 0, 0]], atol=1e-7)
  logits = cast_evals.prototype_logits(jnp.array([[1.0, 1.0, 0.0]]), jnp.asarray(prototypes),
                                       temperature=0.5)
  np.testing.assert_allclose(logits[0, :2], [2 ** -0.5 / 0.5] * 2, rtol=1e-6)
  assert logits[0, 2] == -jnp.inf  # class 2 has no training example
  np.testing.assert_allclose(cast_evals.prediction_entropy(logits), [np.log(2)], rtol=1e-6)
  np.testing.assert_allclose(cast_evals.prediction_entropy(jnp.zeros((1, 4))), [np.log(4)],
                             rtol=1e-6)


def test_segment_prototypes_weight_superpixels_by_pixels():
  features = np.array([[3.0, 0], [0, 2.0], [1.0, 1.0]])
  superpixels = np.array([[0, 0, 0, 1], [2, 2, -1, -1]])
  segments = np.array([[0, 0, 0, 0], [1, 1, 1, 1]])
  prototypes, valid = retrieval.segment_prototypes(features, superpixels, segments, 3)
  np.testing.assert_allclose(prototypes[0], np.array([3, 1]) / np.sqrt(10))  # 3 x e0 + e1
  np.testing.assert_allclose(prototypes[1], [2 ** -0.5] * 2)
  np.testing.assert_array_equal(valid, [True, True, False])
  np.testing.assert_array_equal(prototypes[2], [0, 0])


@pytest.fixture(scope="module")
def encoder_batch(synthetic_data_dir):
  """The tiny two-level CAST (NumPy-initialised), two evaluation examples and the
  encoder's (jitted) output on them."""
  from jhseg.data.sources import load_source  # pylint: disable=g-import-not-at-top
  from jhseg.data.transforms import apply_transforms  # pylint: disable=g-import-not-at-top
  config = _small_config(synthetic_data_dir)
  config.model.depths, config.model.num_clusters = (1, 1), (4, 2)
  task = cast_task.CASTMoCo(config)
  model = _numpy_model(task)
  model.eval()
  source = load_source(config.data, "validation")
  examples = [apply_transforms(dict(source[i]), task.label_map_transforms(required=True),
                               seed=0, position=i) for i in range(2)]
  batch = {k: jnp.asarray(np.stack([e[k] for e in examples])) for k in
           ("image", "superpixels", "segment_mask", "label_map")}
  forward = nnx.jit(lambda m, b: m(b["image"], b["superpixels"], b["segment_mask"]))
  return model.encoder, batch, forward, forward(model.encoder, batch)


@nnx.jit
def _attention_and_block_check(encoder, batch):
  """class_token_attention at stages 0 and 1, and the first block's attention output
  rebuilt from `attention_weights` next to the block's own."""
  stages = [cast_evals.class_token_attention(encoder, batch["image"], batch["superpixels"],
                                             batch["segment_mask"], stage=s) for s in (0, 1)]
  block = encoder.stages[0][0]
  tokens, mask = encoder.segment_tokens(batch["image"], batch["superpixels"],
                                        batch["segment_mask"])
  b, _, d = tokens.shape
  x = block.norm1(jnp.concatenate([jnp.broadcast_to(encoder.cls_token[...], (b, 1, d)),
                                   tokens], axis=1))
  x_mask = jnp.concatenate([jnp.ones((b, 1), bool), mask], axis=1)
  weights = cast_evals.attention_weights(block.attn, x, x_mask)
  heads = block.attn.num_heads
  v = block.attn.qkv(x).reshape(b, x.shape[1], 3, heads, d // heads)[:, :, 2]
  mixed = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(x.shape)
  return stages, weights, block.attn.proj(mixed), block.attn(x, x_mask)


def test_class_token_attention_follows_the_forward_pass(encoder_batch):
  encoder, batch, _, out = encoder_batch
  region_of = cast_hierarchy.superpixel_region_ids(out.levels)
  stages, weights, rebuilt, direct = _attention_and_block_check(encoder, batch)
  # the class token's weights on the other tokens, the rest on itself
  np.testing.assert_allclose(jnp.sum(stages[0][0], axis=-1) + weights[:, :, 0, 0], 1.0,
                             rtol=1e-5)
  np.testing.assert_allclose(stages[0][0], weights[:, :, 0, 1:], rtol=1e-6)
  for stage, (attention, token_mask, token_of) in enumerate(stages):
    total = jnp.sum(attention, axis=-1)
    assert bool(jnp.all((total > 0) & (total < 1)))
    assert bool(jnp.all(jnp.where(token_mask[:, None], True, attention == 0)))
    expected = (np.broadcast_to(np.arange(token_of.shape[1]), token_of.shape) if stage == 0
                else region_of[stage - 1])
    np.testing.assert_array_equal(token_of, expected)
    np.testing.assert_array_equal(token_mask, out.levels[stage].mask)
  np.testing.assert_allclose(rebuilt, direct, rtol=1e-4, atol=1e-5)


def test_tta_moves_only_normalisation_parameters_and_lowers_the_entropy(encoder_batch):
  encoder, batch, forward, out = encoder_batch
  norm_paths = {p for p, _ in nnx.to_flat_state(
      nnx.state(encoder, cast_evals.normalisation_filter(encoder)))}
  assert norm_paths and all(p[-1] in ("scale", "bias") for p in norm_paths)
  assert any(p[0] == "patch_embed" for p in norm_paths)  # the stem's BatchNorm
  assert not any("kernel" in p or p[-1] == "cls_token" for p in norm_paths)
  rng = np.random.default_rng(0)
  prototypes = jnp.asarray(cast_evals.class_prototypes(rng.normal(size=(10, 16)),
                                                       np.arange(10) % 5, 5))
  adapt = cast_evals.make_tta(encoder, learning_rate=0.05)
  result = adapt(batch["image"], batch["superpixels"], batch["segment_mask"], prototypes)
  assert bool(jnp.all(result["entropy_after"] < result["entropy_before"]))
  expected_before = cast_evals.prediction_entropy(
      cast_evals.prototype_logits(out.embedding, prototypes))
  np.testing.assert_allclose(result["entropy_before"], expected_before, rtol=1e-4)
  # image 0's adapted parameters put into a copy of the encoder: only norms differ
  adapted = jax.tree.map(lambda x: x[0], result["adapted"])
  assert {p for p, _ in nnx.to_flat_state(adapted)} == norm_paths
  copy = nnx.clone(encoder)
  state = lambda: {p: np.array(v[...]) for p, v in
                   nnx.to_flat_state(nnx.state(copy, nnx.Not(nnx.RngState)))}
  before = state()
  nnx.update(copy, adapted)
  after = state()
  changed = {p for p in before if not np.array_equal(before[p], after[p])}
  assert changed and changed <= norm_paths
  logits = cast_evals.prototype_logits(forward(copy, batch).embedding, prototypes)
  np.testing.assert_allclose(logits[0], result["logits_after"][0], rtol=1e-4, atol=1e-4)


def test_hypercolumns_unpool_every_level(encoder_batch):
  _, _, _, out = encoder_batch
  columns = cast_evals.superpixel_hypercolumns(out.levels)
  d = out.levels[0].tokens.shape[-1]
  assert columns.shape == (2, out.levels[0].tokens.shape[1], 2 * d)
  unit = lambda t: t / jnp.linalg.norm(t, axis=-1, keepdims=True)
  np.testing.assert_allclose(columns[..., :d], unit(out.levels[0].tokens), rtol=1e-5,
                             atol=1e-6)
  region = cast_hierarchy.superpixel_region_ids(out.levels)[0]
  np.testing.assert_allclose(columns[0, :, d:], unit(out.levels[1].tokens[0])[region[0]],
                             rtol=1e-5, atol=1e-6)


class _FakeContext:
  """An EvalContext whose every split is the fixture's batch (what evaluate_tta reads)."""

  def __init__(self, batch, out_dir, **options):
    import ml_collections  # pylint: disable=g-import-not-at-top
    self.batch, self.out_dir, self.name, self.step = batch, str(out_dir), "tta", 1
    self.options = ml_collections.ConfigDict(options)
    self.evaluator = type("Evaluator", (), {"dataset": "synthetic_scenes/tiny"})()

  def batches(self, *args, **kwargs):
    del args, kwargs
    yield self.batch


def test_tta_evaluator_reports_before_and_after(encoder_batch, tmp_path):
  """The evaluator's host side on the fixture (the adaptation program is the one of the
  test above: same step size, classes and shapes, read from the compilation cache)."""
  encoder, batch, _, _ = encoder_batch
  task = type("Task", (), {})()
  task.config = type("Config", (), {"data": type("Data", (), {"train_split": "train"})()})()
  task.encoder_of = lambda model: model
  task.knn_transforms = lambda: None
  embeddings = np.random.default_rng(1).normal(size=(10, 16))
  task.features = lambda model, batches: (embeddings, np.arange(10) % 5)
  full = {**batch, "label": jnp.array([1, 2]), "example_mask": jnp.array([True, False]),
          "scaled_size": jnp.array([[32, 32], [32, 32]]), "size": jnp.array([[32, 32]] * 2)}
  scalars = cast_evals.evaluate_tta(task, encoder, _FakeContext(
      full, tmp_path, learning_rate=0.05, num_classes=5, level=1))
  assert scalars["num_images"] == 1  # the masked example is skipped
  assert scalars["entropy_after"] < scalars["entropy_before"]
  for name in ("accuracy_before", "accuracy_after", "fg_miou_before", "fg_miou_after"):
    assert 0 <= scalars[name] <= 1
  assert (tmp_path / "summary.json").exists()


def test_tta_positive_classes_make_a_binary_classifier(encoder_batch, tmp_path):
  """appendix B.1's dog vs non-dog: training and test labels both mapped to 1 / 0 before the
  prototypes and the accuracy (5 prototype rows, so the adaptation program is the cached one
  of the tests above; rows 2-4 have no member and are zero)."""
  encoder, batch, _, out = encoder_batch
  np.testing.assert_array_equal(cast_evals.binary_labels([151, 3, 268, 269], range(151, 269)),
                                [1, 0, 1, 0])
  task = type("Task", (), {})()
  task.config = type("Config", (), {"data": type("Data", (), {"train_split": "train"})()})()
  task.encoder_of = lambda model: model
  task.knn_transforms = lambda: None
  embeddings = np.random.default_rng(1).normal(size=(10, 16))
  train_labels = np.where(np.arange(10) % 2, 200, 7)        # "dogs" at odd rows
  task.features = lambda model, batches: (embeddings, train_labels)
  full = {**batch, "label": jnp.array([200, 7]), "example_mask": jnp.array([True, True]),
          "scaled_size": jnp.array([[32, 32], [32, 32]]), "size": jnp.array([[32, 32]] * 2)}
  scalars = cast_evals.evaluate_tta(task, encoder, _FakeContext(
      full, tmp_path, learning_rate=0.05, num_classes=5, level=1,
      positive_classes=list(range(151, 269))))
  prototypes = cast_evals.class_prototypes(embeddings, np.arange(10) % 2, 5)
  predicted = np.argmax(cast_evals.prototype_logits(out.embedding, jnp.asarray(prototypes)),
                        axis=-1)
  assert scalars["accuracy_before"] == pytest.approx(np.mean(predicted == np.array([1, 0])))
