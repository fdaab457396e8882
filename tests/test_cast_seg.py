"""CAST's VOC fine-tuning task: unpooling by hand, the superpixel cross-entropy against a
per-pixel NumPy reference, the crops, and `init_from`'s prefix map loading a DeiT run's
encoder into the segmenter (no compiled forward: the suite stays cheap)."""
import importlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from jhseg.data.sources import load_source
from jhseg.data.transforms import apply_transforms
from jhseg.tasks import cast_deit
from jhseg.tasks import cast_seg
from jhseg.train import checkpointing
from jhseg.train import optim

configs = importlib.import_module("experiments.configs.cast_seg")
deit_configs = importlib.import_module("experiments.configs.cast_deit")


def test_unpool_labels_chains_the_argmax_by_hand():
  # 4 superpixels -> 3 regions -> 2 regions (one image).
  l1 = jnp.array([[[5.0, 0, 0], [0, 0, 5], [0, 5, 0], [5, 0, 0]]])
  l2 = jnp.array([[[0.0, 1], [1, 0], [0, 1]]])
  level2, level3 = cast_seg.unpool_labels([l1, l2])
  np.testing.assert_array_equal(np.asarray(level2), [[0, 2, 1, 0]])
  np.testing.assert_array_equal(np.asarray(level3), [[1, 1, 0, 1]])


def test_superpixel_cross_entropy_equals_the_per_pixel_mean():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 5, 3)).astype(np.float32)
  superpixels = rng.integers(-1, 5, (2, 4, 6))
  labels = rng.integers(0, 3, (2, 4, 6))
  labels[0, 0, :3] = 255  # void
  loss, accuracy = jax.jit(cast_seg.superpixel_cross_entropy)(logits, superpixels, labels)
  valid = (labels < 3) & (superpixels >= 0)
  b, rows, cols = np.nonzero(valid)
  pixel_logits = logits[b, superpixels[b, rows, cols]]
  log_p = pixel_logits - np.log(np.exp(pixel_logits).sum(-1, keepdims=True))
  y = labels[b, rows, cols]
  assert float(loss) == pytest.approx(-log_p[np.arange(len(y)), y].mean(), rel=1e-5)
  assert float(accuracy) == pytest.approx(np.mean(pixel_logits.argmax(-1) == y), rel=1e-6)


def _tiny(config):
  config.model.dim, config.model.num_heads = 16, 2
  config.model.depths, config.model.num_clusters = (1, 1), (4, 2)
  return config


def test_crops_are_fixed_shape_padded_with_mean_and_void(synthetic_data_dir):
  config = _tiny(configs.get_config("tiny"))
  config.data.data_dir = synthetic_data_dir
  config.data.augment.update(crop_size=48, min_scale=0.5, max_scale=0.6)  # always padded
  task = cast_seg.CASTSegmentation(config)
  example = load_source(config.data, "train")[0]
  crop = apply_transforms(example, task.train_transforms(), seed=0, position=0)
  assert crop["image"].shape == (48, 48, 3) and crop["labels"].shape == (48, 48)
  assert crop["segment_mask"].shape == (36,)
  assert np.all(crop["labels"][-10:] == cast_seg.IGNORE)  # 32 * 0.6 < 38 rows are real
  np.testing.assert_allclose(crop["image"][-1, -1], 0.0, atol=1e-6)  # mean colour -> 0
  assert set(np.unique(crop["labels"])) - {cast_seg.IGNORE} <= set(range(5))
  view = task.eval_transforms()[0](example)
  np.testing.assert_array_equal(view["labels"], np.asarray(example["object_class"]))
  assert view["superpixels"].shape == (32, 32) and view["segment_mask"].shape == (16,)
  with pytest.raises(ValueError, match="no field 'segmentation'"):
    cast_seg.decode_segmentation(example, "segmentation")


def _numpy_values(model):
  rng = np.random.default_rng(0)
  for index, (path, variable) in enumerate(nnx.iter_graph(model)):
    if isinstance(variable, nnx.RngKey):
      variable.set_value(jax.random.key(index))
    elif isinstance(variable, nnx.RngCount):
      variable.set_value(jnp.zeros((), jnp.uint32))
    elif isinstance(variable, nnx.Variable):
      variable.set_value(jnp.asarray(rng.normal(size=variable.shape), jnp.float32))
  return model


def test_voc_config_maps_the_encoder_prefix():
  config = configs.get_config("voc")
  assert dict(config.init_from.prefixes) == {"encoder/": "encoder/"}
  assert config.init_from.workdir is None and config.data.name == "voc2012_sbd"


def test_init_from_prefix_map_loads_a_deit_encoder(tmp_path):
  deit_config = _tiny(deit_configs.get_config("tiny"))
  deit = _numpy_values(nnx.eval_shape(
      lambda: cast_deit.CASTDeiT(deit_config).make_model(nnx.Rngs(0))))
  checkpointer = checkpointing.Checkpointer(str(tmp_path / "deit"),
                                            ml_collections.ConfigDict({"async": False}))
  checkpointer.save(1, nnx.state((deit,)), {"step": 1})
  checkpointer.close()

  seg_config = _tiny(configs.get_config("tiny"))
  # A DeiT encoder learns its position table: the segmenter takes the same one (the
  # command-line flags the cast_seg config docstring names).
  seg_config.model.position_embedding = deit_config.model.position_embedding
  seg_config.model.position_grid = deit_config.model.position_grid
  del seg_config["init_from"]
  seg_config.init_from = configs.encoder_from_run(str(tmp_path / "deit"))
  segmenter = nnx.eval_shape(
      lambda: cast_seg.CASTSegmentation(seg_config).make_model(nnx.Rngs(1)))
  state = nnx.state(segmenter)
  state = jax.tree.map(lambda x: jax.random.key(7)
                       if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
                       else jnp.zeros(x.shape, x.dtype), state)
  params, missing, unused = checkpointing.load_params_from(
      seg_config.init_from.workdir, state, prefixes=seg_config.init_from.prefixes,
      with_unused=True)
  assert missing == []
  assert unused and all(name.startswith("encoder/head/") for name in unused)
  source = {optim.parameter_name(p): x for p, x in
            jax.tree_util.tree_flatten_with_path(nnx.state(deit))[0]}
  loaded = jax.tree_util.tree_flatten_with_path(params)[0]
  encoder = [(optim.parameter_name(p), x) for p, x in loaded
             if optim.parameter_name(p).startswith("encoder/")]
  assert len(encoder) == len(source) - len(unused)
  for name, value in encoder:
    if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):  # the new run's own keys
      assert jax.random.key_data(value).tolist() == jax.random.key_data(
          jax.random.key(7)).tolist(), name
      continue
    np.testing.assert_array_equal(np.asarray(value), np.asarray(source[name]), err_msg=name)
  rest = [x for p, x in loaded if optim.parameter_name(p).startswith(("fusion", "head"))
          and not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)]
  assert rest and all(not np.any(np.asarray(x)) for x in rest)  # untouched (zeros here)
