"""CAST model (jhseg.models.cast), weight import and hierarchy, against a torch transcription."""
import dataclasses

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import cast_torch_reference as ref
from jhseg.models import cast
from jhseg.models import cast_hierarchy
from jhseg.models import cast_import

CONFIG = cast.CAST_CONFIGS["cast_tiny"]  # dim 32, 2 heads, depths 1x4, clusters 8, 6, 4, 2
SIZE, NUM_SEGMENTS, NUM_CLASSES = 64, 16, 5


def _voronoi_labels(seed: int) -> np.ndarray:
  """(SIZE, SIZE) ids of the nearest of 16 seeds placed on stem sample pixels (8i, 8j).

  Each seed's own pixel is a stem sample, so every segment covers a stem cell (no
  padded token), the setting where the authors' semantics and jhseg's coincide.
  """
  rng = np.random.default_rng(seed)
  cells = rng.choice(64, NUM_SEGMENTS, replace=False)
  seeds = np.stack([cells // 8 * 8, cells % 8 * 8], axis=1)
  yy, xx = np.mgrid[:SIZE, :SIZE]
  distance = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2
  return np.argmin(distance, axis=-1).astype(np.int32)


@pytest.fixture(scope="module")
def models():
  torch.manual_seed(0)
  torch_model = ref.TorchCAST(CONFIG.dim, CONFIG.depths, CONFIG.num_heads, CONFIG.num_clusters,
                              grid=SIZE // 8, num_classes=NUM_CLASSES).eval()
  ref.randomize_(torch_model)
  state = {k: v.numpy() for k, v in torch_model.state_dict().items()}
  model = cast_import.cast_from_state_dict(CONFIG, state, num_classes=NUM_CLASSES)
  model.eval()
  return torch_model, model


def _abstract_model(config=CONFIG, **options):
  """A CAST without initial values (a load target; skips compiling initialisers)."""
  return nnx.eval_shape(lambda: cast.CAST(config, rngs=nnx.Rngs(0), **options))


@pytest.fixture(scope="module")
def inputs():
  rng = np.random.default_rng(0)
  images = rng.normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)
  labels = np.stack([_voronoi_labels(1), _voronoi_labels(2)])
  return images, labels


def _forward(model, images, labels, num_slots):
  mask = jnp.arange(num_slots)[None] < NUM_SEGMENTS
  mask = jnp.broadcast_to(mask, (images.shape[0], num_slots))
  return nnx.jit(lambda m, x, y, k: m(x, y, k))(model, images, labels, mask)


NUM_SLOTS = NUM_SEGMENTS + 7  # padding slots (mask False) that must change nothing


@pytest.fixture(scope="module")
def outputs(models, inputs):
  """The nnx forward with 7 padding slots; the torch transcription sees none."""
  return _forward(models[1], *inputs, NUM_SLOTS)


def test_parity_with_torch_forward_including_graph_pooling(models, inputs, outputs):
  _assert_parity(models[0], inputs, outputs)
  assert outputs.embedding.shape == (2, CONFIG.dim)
  assert [l.logits.shape[1:] for l in outputs.levels] == [(NUM_SLOTS, 8), (8, 6), (6, 4),
                                                           (4, 2)]


def _assert_parity(torch_model, inputs, outputs):
  images, labels = inputs
  with torch.no_grad():
    embedding, logits, levels = torch_model(torch.from_numpy(images).permute(0, 3, 1, 2),
                                            torch.from_numpy(labels).long(), NUM_SEGMENTS)
  for level, (ours, theirs) in enumerate(zip(outputs.levels, levels), start=1):
    np.testing.assert_array_equal(ours.sampled_indices, theirs["sampled_indices"].numpy(),
                                  err_msg=f"level {level} FPS")
    n = theirs["tokens"].shape[1]  # level 1: the first NUM_SEGMENTS slots
    np.testing.assert_allclose(ours.tokens[:, :n], theirs["tokens"].numpy(), rtol=2e-4,
                               atol=2e-4, err_msg=f"level {level} tokens")
    np.testing.assert_allclose(ours.logits[:, :n], theirs["logits"].numpy(), rtol=2e-4,
                               atol=2e-4, err_msg=f"level {level} logits")
    np.testing.assert_allclose(ours.class_token, theirs["class_token"].numpy(), rtol=2e-4,
                               atol=2e-4)
  np.testing.assert_allclose(outputs.embedding, embedding.numpy(), rtol=2e-4, atol=2e-4)
  np.testing.assert_allclose(outputs.logits, logits.numpy(), rtol=2e-4, atol=2e-4)


LEARNED_GRID = 6  # a 6x6 table on the 8x8 stem grid: the bicubic resize is exercised
LEARNED = dataclasses.replace(CONFIG, position_embedding="learned", position_grid=LEARNED_GRID)


@pytest.fixture(scope="module")
def deit_models():
  """The DeiT variant: a learned (1, 1 + 6*6, D) position table and a linear head."""
  torch.manual_seed(1)
  torch_model = ref.TorchCAST(CONFIG.dim, CONFIG.depths, CONFIG.num_heads, CONFIG.num_clusters,
                              grid=LEARNED_GRID, num_classes=NUM_CLASSES,
                              learned_pos_embed=True).eval()
  ref.randomize_(torch_model, seed=1)
  state = {k: v.numpy() for k, v in torch_model.state_dict().items()}
  model = cast_import.cast_from_state_dict(LEARNED, state, num_classes=NUM_CLASSES)
  model.eval()
  return torch_model, model


def test_learned_position_table_parity_with_torch_forward(deit_models, inputs):
  """Imported DeiT-style weights: class row on the class token, grid part resized by
  PyTorch's bicubic to the stem grid and averaged per superpixel, graph pooling."""
  torch_model, model = deit_models
  _assert_parity(torch_model, inputs, _forward(model, *inputs, NUM_SEGMENTS))
  table = torch_model.pos_embed.detach().numpy()
  np.testing.assert_array_equal(model.pos_embed[...], table)
  grid = table[0, 1:].reshape(LEARNED_GRID, LEARNED_GRID, CONFIG.dim)
  np.testing.assert_array_equal(model.grid_positions(LEARNED_GRID, LEARNED_GRID), grid)
  np.testing.assert_array_equal(model.class_position(), table[:, :1])


@pytest.mark.parametrize("size_in, size_out", [(6, 8), (8, 6), (28, 64), (5, 1)])
def test_position_table_resize_is_torch_bicubic(size_in, size_out):
  table = np.random.default_rng(size_in).normal(size=(size_in, size_in + 1, 3))
  table = table.astype(np.float32)
  theirs = torch.nn.functional.interpolate(
      torch.from_numpy(table).permute(2, 0, 1)[None], size=(size_out, size_out + 2),
      mode="bicubic", align_corners=False)[0].permute(1, 2, 0).numpy()
  ours = cast.resize_position_table(jnp.asarray(table), size_out, size_out + 2)
  np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def test_deit_checkpoint_import_and_position_errors(deit_models, models, tmp_path):
  torch_model, imported = deit_models
  state = torch_model.state_dict()
  path = tmp_path / "checkpoint.pth"
  torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 299}, path)
  loaded = _abstract_model(num_classes=NUM_CLASSES, config=LEARNED)
  cast_import.load_cast_checkpoint(loaded, path, encoder="deit")
  np.testing.assert_array_equal(loaded.pos_embed[...], state["pos_embed"].numpy())
  np.testing.assert_array_equal(loaded.head.kernel[...], state["head.weight"].numpy().T)
  deit = {k: v.numpy() for k, v in state.items()}
  moco = {k: v.numpy() for k, v in models[0].state_dict().items()}
  with pytest.raises(ValueError, match=r"pos_embed has shape \(1, 37, 32\), a class row "
                     r"plus a 6x6 grid.*position_embedding='learned', position_grid=G"):
    cast_import.load_cast_state_dict(_abstract_model(num_classes=NUM_CLASSES), deit)
  with pytest.raises(ValueError, match=r"pe_token .*position_embedding='sincos'.*"
                     r"shape mismatch for pos_embed: file has \(1, 64, 32\), the model "
                     r"expects \(1, 37, 32\)"):
    cast_import.load_cast_state_dict(_abstract_model(num_classes=NUM_CLASSES, config=LEARNED),
                                     moco)
  other_grid = dataclasses.replace(LEARNED, position_grid=4)
  with pytest.raises(ValueError, match=r"expects \(1, 17, 32\) \(a 6x6 grid: set "
                     r"CASTConfig.position_grid=6\)"):
    cast_import.load_cast_state_dict(_abstract_model(config=other_grid), deit)
  with pytest.raises(ValueError, match="position_embedding: unknown 'rope'; valid names: "
                     "sincos, learned"):
    dataclasses.replace(CONFIG, position_embedding="rope")


def test_padding_slots_are_masked_tokens(outputs):
  """With parity above (torch has no padding), padding slots provably change nothing."""
  first = outputs.levels[0]
  np.testing.assert_array_equal(first.mask, np.arange(NUM_SLOTS)[None].repeat(2, 0) <
                                NUM_SEGMENTS)
  np.testing.assert_array_equal(first.assignments[:, NUM_SEGMENTS:], 0)
  assert np.all(np.asarray(first.sampled_indices) < NUM_SEGMENTS)
  np.testing.assert_allclose(np.asarray(first.assignments[:, :NUM_SEGMENTS]).sum(-1), 1,
                             rtol=1e-5)


def test_import_round_trip_with_moco_prefixes_and_errors(models, tmp_path):
  torch_model, imported = models
  base = torch_model.state_dict()
  other = ref.TorchCAST(CONFIG.dim, CONFIG.depths, CONFIG.num_heads, CONFIG.num_clusters,
                        grid=SIZE // 8).state_dict()
  checkpoint = {"epoch": 3, "state_dict": {
      **{f"module.base_encoder.{k}": v for k, v in base.items()},
      **{f"module.momentum_encoder.{k}": v for k, v in other.items()},
      "module.predictor.0.weight": torch.zeros(4, 4),
      "module.base_encoder.head.0.weight": torch.zeros(4, 4)}}
  checkpoint["state_dict"].pop("module.base_encoder.head.weight")
  checkpoint["state_dict"].pop("module.base_encoder.head.bias")
  path = tmp_path / "checkpoint_0099.pth.tar"
  torch.save(checkpoint, path)
  encoder = _abstract_model()  # no head: MoCo's projector is ignored
  cast_import.load_cast_checkpoint(encoder, path, encoder="base")
  ours = nnx.to_flat_state(nnx.state(encoder, nnx.Param))
  reference = dict(nnx.to_flat_state(nnx.state(imported, nnx.Param)))
  for key, value in ours:
    np.testing.assert_array_equal(value[...], reference[key][...], err_msg=str(key))
  np.testing.assert_array_equal(encoder.patch_embed.norms[2].var[...],
                                base["patch_embed.proj.7.running_var"].numpy())
  momentum = _abstract_model()
  cast_import.load_cast_checkpoint(momentum, path, encoder="momentum")
  np.testing.assert_array_equal(momentum.pools[1].fc1.linear.kernel[...],
                                other["pool2.pool_block.fc1.1.weight"].numpy().T)
  broken = {k: v.numpy() for k, v in base.items() if k != "blocks.0.attn.qkv.bias"}
  broken["blocks2.1.norm1.weight"] = broken["blocks2.1.norm1.weight"] + 1  # = blocks.1
  with pytest.raises(ValueError, match=r"blocks2\.1\.norm1\.weight differs.*"
                     r"missing keys: blocks\.0\.attn\.qkv\.bias"):
    cast_import.load_cast_state_dict(_abstract_model(num_classes=NUM_CLASSES), broken)
  with pytest.raises(ValueError, match="no key starts with 'module.base_encoder.'"):
    cast_import.encoder_state({"blocks.0.norm1.weight": np.zeros(3)}, "base")


def test_hierarchy_is_nested_and_follows_the_argmax_chain(inputs, outputs):
  _, labels = inputs
  nested = np.asarray(jax.jit(cast_hierarchy.nested_label_maps)(labels, outputs.levels))
  assert nested.shape == (2, 5, SIZE, SIZE)
  np.testing.assert_array_equal(nested[:, 0], labels)
  for level in range(1, 5):  # S_l = a_l(S_{l-1}), a_l the argmax of pooling l
    a = np.argmax(np.asarray(outputs.levels[level - 1].logits), axis=-1)
    np.testing.assert_array_equal(nested[:, level],
                                  np.take_along_axis(a, nested[:, level - 1].reshape(2, -1),
                                                     1).reshape(2, SIZE, SIZE))
    assert nested[:, level].max() < CONFIG.num_clusters[level - 1]
  ucm = cast_hierarchy.hierarchy_ucm(nested[0])
  assert ucm.shape == (2 * SIZE - 1, 2 * SIZE - 1)
  h, v = ucm[0::2, 1::2], ucm[1::2, 0::2]  # horizontal / vertical edges
  for k, altitude in enumerate([0.2, 0.4, 0.6, 0.8, 1.0]):  # cut above level k's altitude
    split_h = nested[0, k][:, 1:] != nested[0, k][:, :-1]
    split_v = nested[0, k][1:] != nested[0, k][:-1]
    np.testing.assert_array_equal(h >= altitude - 1e-6, split_h)
    np.testing.assert_array_equal(v >= altitude - 1e-6, split_v)


def test_train_mode_gradients_reach_exactly_the_parameters_the_authors_train(models, inputs):
  """Zero gradients = the last pooling's layers (`frozen_by_authors`); all others flow."""
  torch_model, _ = models
  state = {k: v.numpy() for k, v in torch_model.state_dict().items()}
  model = cast_import.cast_from_state_dict(CONFIG, state, num_classes=NUM_CLASSES,
                                           drop_path_rate=0.1)
  model.train()
  images, labels = inputs
  mask = jnp.ones((2, NUM_SEGMENTS), bool)

  def loss(m):
    out = m(images, labels, mask)
    return jnp.sum(out.embedding ** 2) + jnp.sum(out.logits ** 2)

  grads = nnx.jit(nnx.grad(loss))(model)
  frozen = cast.frozen_by_authors(model)
  flat = nnx.to_flat_state(grads)
  assert any(frozen(path) for path, _ in flat)
  for path, value in flat:
    assert jnp.all(jnp.isfinite(value[...])), path
    assert bool(jnp.any(value[...] != 0)) != frozen(path), path


def test_bad_inputs_are_named(models):
  _, model = models
  with pytest.raises(ValueError, match="multiple of 8"):
    model(jnp.zeros((1, 60, 64, 3)), jnp.zeros((1, 60, 64), jnp.int32), jnp.ones((1, 4), bool))
  with pytest.raises(ValueError, match="unknown CAST size 'cast_huge'"):
    cast.cast_config("cast_huge")


def test_hierarchy_ucm_is_scored_by_the_bsds_evaluator(inputs, outputs, tmp_path):
  """A ground truth equal to level 2's regions is recovered exactly at a mid threshold."""
  import scipy.io
  from scipy import ndimage
  from jhseg import evaluate
  from jhseg.metrics import boundary

  _, labels = inputs
  nested = np.asarray(cast_hierarchy.nested_label_maps(labels, outputs.levels))[0]
  level2 = nested[2]
  regions = np.zeros(level2.shape, np.int32)  # connected components of every level-2 id
  for value in np.unique(level2):
    components, count = ndimage.label(level2 == value)
    regions[components > 0] = components[components > 0] + regions.max()
  edges = boundary.thin(boundary.boundaries_from_segmentation(regions))
  assert edges.any()
  truth = np.empty((1, 1), object)
  truth[0, 0] = {"Segmentation": regions.astype(np.uint16), "Boundaries": edges.astype(np.uint8)}
  (tmp_path / "gt").mkdir()
  (tmp_path / "pred").mkdir()
  scipy.io.savemat(tmp_path / "gt" / "7.mat", {"groundTruth": truth})
  np.save(tmp_path / "pred" / "7.npy", cast_hierarchy.hierarchy_ucm(nested))
  bdry, reg = evaluate.evaluate_folder(tmp_path / "pred", str(tmp_path / "gt"),
                                       num_thresholds=9)
  assert bdry.ois_f > 0.99
  assert reg.covering_ois > 0.99
