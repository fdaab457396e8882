"""CAST's MoCo-v3 task: loss against a NumPy reference, the momentum schedule and update,
the trainable set, k-NN against a brute-force reference, the view transforms, and one
tiny end-to-end run through the engine (hierarchy, k-NN and the cast_evals evaluators)."""
import importlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jhseg import segments
from jhseg.data.sources import load_source
from jhseg.data.transforms import apply_transforms
from jhseg.metrics import knn
from jhseg.models import cast_moco
from jhseg.tasks import cast as cast_task
from jhseg.train import train_and_evaluate
from jhseg.train.loop import trainable_filter

import numpy_init

configs = importlib.import_module("experiments.configs.cast")


def _small_config(data_dir: str | None = None):
  """One level (S_0 then 3 regions), width 16, 32^2 views: the cheapest compile."""
  config = configs.get_config("tiny")
  if data_dir:
    config.data.data_dir = data_dir
  config.model.dim, config.model.num_heads = 16, 2
  config.model.depths, config.model.num_clusters = (1,), (3,)
  config.model.moco.dim, config.model.moco.mlp_dim = 8, 16
  config.data.augment.crop_size = 32
  config.model.superpixels.num_superpixels = 16
  config.eval.scale, config.eval.image_size, config.eval.num_superpixels = 1.0, (32, 32), 16
  return config


def _numpy_model(task):
  """make_model with NumPy-random values: eager JAX initialisation compiles one program per
  parameter shape (minutes on the shared CPU); the initial values are not under test."""
  m = task.config.model
  build = lambda: cast_moco.MoCoCAST(task.cast_config, dim=m.moco.dim, mlp_dim=m.moco.mlp_dim,
                                     rngs=nnx.Rngs(0))
  return numpy_init.numpy_initialised(build)


def _numpy_contrastive(q, k, temperature):
  q = q / np.linalg.norm(q, axis=1, keepdims=True)
  k = k / np.linalg.norm(k, axis=1, keepdims=True)
  logits = q @ k.T / temperature
  top = logits.max(axis=1, keepdims=True)
  log_z = np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0]
  return 2 * temperature * np.mean(log_z - np.diag(logits))


def test_contrastive_loss_hand_computed_and_numpy_reference():
  eye = jnp.eye(2)
  # tau = 1: logits [[1, 0], [0, 1]] -> per row log(e + 1) - 1, times 2 tau.
  np.testing.assert_allclose(cast_moco.contrastive_loss(3 * eye, eye, temperature=1.0),
                             2 * (np.log(np.e + 1) - 1), rtol=1e-6)
  rng = np.random.default_rng(1)
  q, k = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
  np.testing.assert_allclose(cast_moco.contrastive_loss(jnp.asarray(q), jnp.asarray(k),
                                                        temperature=0.2),
                             _numpy_contrastive(q, k, 0.2), rtol=1e-5)
  with pytest.raises(ValueError, match="must both be"):
    cast_moco.contrastive_loss(jnp.ones((3, 2)), jnp.ones((2, 2)))


def test_cosine_momentum_schedule():
  values = cast_moco.cosine_momentum(jnp.array([0.0, 0.5, 1.0]), 0.99)
  np.testing.assert_allclose(values, [0.99, 0.995, 1.0], rtol=1e-6)


@pytest.fixture(scope="module")
def small_model():
  config = _small_config()
  config.model.depths, config.model.num_clusters = (1, 1), (4, 2)  # a pooling before the last
  task = cast_task.CASTMoCo(config)
  return task, _numpy_model(task)


def test_momentum_update_averages_parameters_only(small_model):
  task, model = small_model
  online = nnx.state(model.encoder, nnx.Param)
  target = jax.tree.map(lambda x: x + 1.0, nnx.state(model.momentum_encoder, nnx.Param))
  nnx.update(model.momentum_encoder, target)
  stats_before = jax.tree.map(np.array, nnx.state(model.momentum_encoder, nnx.BatchStat))
  head_online = jax.tree.map(np.array, nnx.state(model.projector, nnx.Param))
  head_target = jax.tree.map(np.array, nnx.state(model.momentum_projector, nnx.Param))
  online_before = jax.tree.map(np.array, online)

  ctx = type("Ctx", (), {"progress": jnp.float32(0.5)})()  # m = 0.995
  task.after_update(model, ctx)
  m = 0.995
  jax.tree.map(lambda new, t, s: np.testing.assert_allclose(new, m * t + (1 - m) * s,
                                                            rtol=1e-5, atol=1e-6),
               jax.tree.map(np.array, nnx.state(model.momentum_encoder, nnx.Param)),
               jax.tree.map(np.array, target), online_before)
  jax.tree.map(lambda new, t, s: np.testing.assert_allclose(new, m * t + (1 - m) * s,
                                                            rtol=1e-5, atol=1e-6),
               jax.tree.map(np.array, nnx.state(model.momentum_projector, nnx.Param)),
               head_target, head_online)
  # the online branch and the momentum branch's BatchNorm statistics are untouched
  jax.tree.map(np.testing.assert_array_equal, online_before,
               jax.tree.map(np.array, nnx.state(model.encoder, nnx.Param)))
  jax.tree.map(np.testing.assert_array_equal, stats_before,
               jax.tree.map(np.array, nnx.state(model.momentum_encoder, nnx.BatchStat)))


def test_trainable_set_excludes_momentum_branch_and_authors_frozen_layers(small_model):
  task, model = small_model
  flat = lambda f: {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model, f))}
  trained = flat(trainable_filter(task, task.config.optim))
  params = flat(nnx.Param)
  assert trained < params
  assert not any(p.startswith(("momentum_encoder/", "momentum_projector/")) for p in trained)
  last = len(task.cast_config.num_clusters) - 1
  frozen = {p for p in params if p.startswith(tuple(f"encoder/pools/{last}/{n}/" for n in
                                                    ("fc1", "fc2", "centroid_fc")))}
  assert frozen and not frozen & trained
  # everything else is trained, the predictor and the first pooling included
  untrained = {p for p in params if p.startswith(("momentum_encoder/", "momentum_projector/"))}
  assert trained == params - untrained - frozen
  assert any(p.startswith("predictor/") for p in trained)
  assert any(p.startswith("encoder/pools/0/fc1/") for p in trained)


def test_knn_matches_a_brute_force_vote():
  rng = np.random.default_rng(2)
  train, labels, test = rng.normal(size=(30, 4)), rng.integers(0, 3, 30), rng.normal(size=(7, 4))
  predicted = knn.knn_predict(train, labels, test, num_classes=3, k=5, temperature=0.1)
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
  for i, x in enumerate(unit(test)):
    s = unit(train) @ x
    votes = np.zeros(3)
    for j in np.argsort(-s)[:5]:
      votes[labels[j]] += np.exp(s[j] / 0.1)
    assert predicted[i] == np.argmax(votes)
  # two tight clusters: every query takes its cluster's label
  centres = np.array([[1.0, 0], [0, 1.0]])
  points = np.repeat(centres, 5, axis=0) + 0.01 * rng.normal(size=(10, 2))
  assert knn.knn_accuracy(points, np.repeat([0, 1], 5), centres, [0, 1], num_classes=2,
                          k=3) == 1.0


def test_views_are_fixed_shape_and_superpixels_cover_them(synthetic_data_dir):
  config = configs.get_config("tiny")
  config.data.data_dir = synthetic_data_dir
  task = cast_task.CASTMoCo(config)
  scene = load_source(config.data, "train")[0]
  size, num = config.data.augment.crop_size, config.model.superpixels.num_superpixels
  out = apply_transforms(dict(scene), task.train_transforms(), seed=0, position=1)
  assert out["views"].shape == (2, size, size, 3) and out["views"].dtype == np.float32
  for view in range(2):
    sp, mask = out["superpixels"][view], out["segment_mask"][view]
    assert mask.shape == (num,) and sp.min() == 0
    np.testing.assert_array_equal(mask, np.arange(num) < sp.max() + 1)
  assert not np.array_equal(out["views"][0], out["views"][1])  # two random views
  again = apply_transforms(dict(scene), task.train_transforms(), seed=0, position=1)
  np.testing.assert_array_equal(again["views"], out["views"])  # seeded by (seed, position)
  evaluation = apply_transforms(dict(scene), task.hierarchy_transforms(), seed=0, position=0)
  assert evaluation["image"].shape == tuple(config.eval.image_size) + (3,)
  np.testing.assert_array_equal(evaluation["truths"][0], scene["parts"])
  np.testing.assert_array_equal(evaluation["size"], [32, 32])


def test_random_resized_box_fits_and_upsample_keeps_nesting():
  rng = np.random.default_rng(0)
  for _ in range(50):
    top, left, h, w = cast_task.random_resized_box(rng, 30, 50, scale=(0.08, 1.0),
                                                   ratio=(0.75, 4 / 3))
    assert 0 <= top and top + h <= 30 and 0 <= left and left + w <= 50 and h > 0 and w > 0
  fine = np.arange(12).reshape(3, 4)
  coarse = fine // 4
  up = segments.resize_labels_nearest(np.stack([fine, coarse]), 7, 9)
  assert up.shape == (2, 7, 9)
  for f in np.unique(up[0]):  # each fine region lies in one coarse region
    assert len(np.unique(up[1][up[0] == f])) == 1


def test_tiny_end_to_end(synthetic_data_dir, tmp_path, monkeypatch):
  monkeypatch.setattr(cast_task.CASTMoCo, "make_model", lambda self, rngs: _numpy_model(self))
  config = _small_config(synthetic_data_dir)
  config.num_train_steps = 2
  config.checkpoint_every_steps = 2
  config.log_every_steps = 1
  config.data.batch_size = 4
  config.evals.hierarchy.every_steps = 2
  config.evals.hierarchy.num_examples = 3  # one batch padded
  config.evals.knn.num_examples = 4
  config.evals.knn.options.num_train_examples = 8
  config.eval.num_pictures = 1
  config.eval.num_thresholds = 9
  # jhseg.tasks.cast_evals' evaluators on few examples (their pieces, and the tta
  # evaluator, in test_cast_evals.py)
  config.evals.linear_probe.num_examples = 4
  config.evals.linear_probe.options.update(num_train_examples=8, epochs=3, batch_size=4)
  config.evals.figure_ground.num_examples = 2
  config.evals.retrieval.num_examples = 2
  config.evals.retrieval.options.num_memory_examples = 4
  train_and_evaluate(config, str(tmp_path))
  out = tmp_path / "eval" / "hierarchy" / "2"
  scalars = json.loads((out / "summary.json").read_text())["scalars"]
  for method in ("cast", "colour"):
    for metric in ("boundary_ods", "boundary_ois", "boundary_ap", "covering_ods"):
      assert 0 <= scalars[f"{method}_{metric}"] <= 1
  counts = [scalars[f"regions_level{k}"] for k in range(2)]
  assert counts[0] > counts[1] >= 1 and counts[1] <= 3 and "regions_level2" not in scalars
  for name in ("pr_curve.png", "0_levels.png"):
    assert (out / name).read_bytes()[:4] == b"\x89PNG"
  knn_scalars = json.loads((tmp_path / "eval" / "knn" / "2" / "summary.json").read_text())
  assert knn_scalars["scalars"]["num_train"] == 8 and knn_scalars["scalars"]["num_test"] == 4
  assert 0 <= knn_scalars["scalars"]["knn_top1"] <= 1
  read = lambda name: json.loads((tmp_path / "eval" / name / "2" / "summary.json").read_text())
  probe = read("linear_probe")["scalars"]
  assert (probe["num_train"], probe["num_test"]) == (8, 4)
  assert 0 <= probe["linear_probe_top1"] <= 1
  figure = read("figure_ground")["scalars"]
  assert figure["num_images"] == 2 and 0 <= figure["jaccard_best_head"] <= 1
  assert 0 <= figure["jaccard_mean_attention"] <= 1
  assert 0 < figure["jaccard_all_foreground"] < 1  # the scenes have figure and ground
  assert (tmp_path / "eval" / "figure_ground" / "2" / "0_figure_ground.png").read_bytes()[
      :4] == b"\x89PNG"
  found = read("retrieval")["scalars"]
  assert found["num_images"] == 2 and found["memory_segments"] >= 4  # >= 1 per image
  assert 0 <= found["retrieval_miou"] <= 1
  records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  losses = [r["train/loss"] for r in records if "train/loss" in r]
  assert len(losses) == 2 and all(np.isfinite(losses))

  # Single images through `python -m jhseg.infer`: one that fits eval.image_size, one larger.
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from jhseg import infer  # pylint: disable=g-import-not-at-top
  from jhseg.models import cast_hierarchy  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  sizes = {"small": (20, 28), "large": (50, 37)}
  for name, size in sizes.items():
    Image.fromarray(rng.integers(0, 256, size + (3,), dtype=np.uint8)).save(
        tmp_path / f"{name}.png")
  assert infer.main([f"--workdir={tmp_path}", f"--out={tmp_path / 'infer'}",
                     *(str(tmp_path / f"{n}.png") for n in sizes)]) == 0
  for name, (height, width) in sizes.items():
    with np.load(tmp_path / "infer" / f"{name}_levels.npz") as npz:
      levels = [npz[f"S{l}"] for l in range(len(npz.files))]
    assert len(levels) == 2 and all(l.shape == (height, width) for l in levels)
    for fine, coarse in zip(levels, levels[1:]):  # nested
      for label in np.unique(fine):
        assert len(np.unique(coarse[fine == label])) == 1
    ucm = np.load(tmp_path / "infer" / f"{name}_ucm.npy")
    np.testing.assert_array_equal(ucm, cast_hierarchy.hierarchy_ucm(np.stack(levels)))
    assert (tmp_path / "infer" / f"{name}_levels.png").read_bytes()[:4] == b"\x89PNG"


def test_unchecked_hierarchy_ucm_equals_the_checked_one():
  from jhseg.models import cast_hierarchy  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(3)
  fine = rng.integers(0, 12, (5, 6))
  nested = np.stack([fine, fine // 3, fine // 6, np.zeros_like(fine)])
  checked = cast_hierarchy.hierarchy_ucm(nested)
  np.testing.assert_array_equal(cast_hierarchy.hierarchy_ucm(nested, check_nested=False),
                                checked)
  assert set(np.unique(checked)) <= {0.0, 0.25, 0.5, 0.75}
  with pytest.raises(ValueError, match="does not refine"):
    cast_hierarchy.hierarchy_ucm(nested[::-1])
