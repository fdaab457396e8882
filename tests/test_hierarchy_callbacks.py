"""jhseg.hierarchy.callbacks: under jit, with 4 fake devices, results equal the NumPy path."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jhseg import hierarchy as hy
from jhseg.hierarchy import callbacks


def _batch(batch, height=6, width=7, seed=0):
  rng = np.random.default_rng(seed)
  h = rng.random((batch, height, width - 1)).astype(np.float32)
  v = rng.random((batch, height - 1, width)).astype(np.float32)
  return h, v


@pytest.fixture(scope="module", params=["Auto", "Explicit"])
def mesh(request):
  assert jax.device_count() == 4, "tests/conftest.py should give 4 fake CPU devices"
  return jax.make_mesh((4,), ("data",), axis_types=(getattr(jax.sharding.AxisType, request.param),))


def _numpy_ucms(h, v, min_area):
  outs = [hy.ucm_from_dissimilarity(h[i], v[i], min_region_area=min_area) for i in range(len(h))]
  return np.stack([o[0] for o in outs]), np.stack([o[1] for o in outs])


def test_ucm_callback_sharded_equals_numpy(mesh, monkeypatch):
  h, v = _batch(8)
  seen_shapes = []
  original = callbacks._per_image_on_host

  def spy(fn, image_outputs, h, v, **kwargs):
    seen_shapes.append(h.shape)
    return original(fn, image_outputs, h, v, **kwargs)

  monkeypatch.setattr(callbacks, "_per_image_on_host", spy)
  fn = jax.jit(functools.partial(hy.ucm_from_dissimilarity_jax, min_region_area=4, mesh=mesh))
  sharding = jax.NamedSharding(mesh, jax.P("data"))
  got_h, got_v = fn(jax.device_put(h, sharding), jax.device_put(v, sharding))
  assert seen_shapes == [(2, 6, 6)]  # each device hands the host its own 2 of the 8 images
  assert got_h.dtype == jnp.float32 and got_h.shape == h.shape and got_v.shape == v.shape
  assert got_h.sharding.spec[0] == "data"
  want_h, want_v = _numpy_ucms(h, v, 4)
  np.testing.assert_array_equal(got_h, want_h)
  np.testing.assert_array_equal(got_v, want_v)


def test_ucm_callback_without_mesh_leading_dims_and_vmap():
  h, v = _batch(4, seed=1)
  want_h, want_v = _numpy_ucms(h, v, 30)
  got_h, got_v = jax.jit(hy.ucm_from_dissimilarity_jax)(h.reshape(2, 2, 6, 6), v.reshape(2, 2, 5, 7))
  np.testing.assert_array_equal(got_h.reshape(want_h.shape), want_h)
  vm_h, vm_v = jax.vmap(hy.ucm_from_dissimilarity_jax)(h, v)
  np.testing.assert_array_equal(vm_h, want_h)
  np.testing.assert_array_equal(vm_v, want_v)


def test_ucm_callback_has_zero_gradient():
  h, v = _batch(2, seed=2)
  grad = jax.grad(lambda h: jnp.sum(hy.ucm_from_dissimilarity_jax(h, v)[0]) + jnp.sum(h))(h)
  np.testing.assert_array_equal(grad, np.ones_like(h))  # only the direct term


def test_watershed_and_cut_callbacks_sharded(mesh):
  h, v = _batch(4, seed=3)
  labels = jax.jit(functools.partial(hy.watershed_superpixels_jax, mesh=mesh))(h, v)
  assert labels.dtype == jnp.int32 and labels.shape == (4, 6, 7)
  labels = np.asarray(labels)
  for i in range(4):
    np.testing.assert_array_equal(labels[i], hy.watershed_superpixels(h[i], v[i]))
  ucm_h, ucm_v = _numpy_ucms(h, v, 0)
  cut = jax.jit(functools.partial(hy.cut_with_num_regions_jax, num_regions=3, mesh=mesh))(ucm_h, ucm_v)
  cut = np.asarray(cut)
  for i in range(4):
    np.testing.assert_array_equal(cut[i], hy.cut_with_num_regions(ucm_h[i], ucm_v[i], 3))
    assert 1 <= cut[i].max() + 1 <= 3


def test_callback_errors(mesh):
  h, v = _batch(6)
  with pytest.raises(ValueError, match=r"B divisible by the 'data' axis size 4; got \(6, 6, 6\)"):
    hy.ucm_from_dissimilarity_jax(h, v, mesh=mesh)
  with pytest.raises(ValueError, match="`mesh` must have a 'data' axis"):
    hy.watershed_superpixels_jax(h[:4], v[:4], mesh=jax.make_mesh((4,), ("model",)))
  with pytest.raises(ValueError, match="`v` must have shape"):
    hy.ucm_from_dissimilarity_jax(h, v[:, :, :-1])
  with pytest.raises(ValueError, match="valid names"):
    hy.ucm_from_dissimilarity_jax(h, v, linkage="single")
  with pytest.raises(ValueError, match="`num_regions` must be >= 1"):
    hy.cut_with_num_regions_jax(h, v, 0)


def test_large_images_on_cpu_mesh_do_not_deadlock(mesh):
  """Per-device operands above the CPU runtime's 100 KiB inline-copy limit (the deadlock
  case that chunked operands avoid); results still equal the NumPy path."""
  h, v = _batch(4, height=140, width=200, seed=5)
  assert h[0].nbytes > 100 * 1024
  got_h, got_v = jax.jit(functools.partial(hy.ucm_from_dissimilarity_jax, mesh=mesh))(h, v)
  want_h, want_v = _numpy_ucms(h, v, 30)
  np.testing.assert_array_equal(np.asarray(got_h), want_h)
  np.testing.assert_array_equal(np.asarray(got_v), want_v)


def test_chunks_round_trip_with_vmapped_leading_dims():
  x = np.arange(15, dtype=np.float32).reshape(3, 5)
  chunks = callbacks._to_chunks(jnp.asarray(x), 16)  # 4 floats per chunk
  assert len(chunks) == 4 and all(c.size <= 4 for c in chunks)
  np.testing.assert_array_equal(callbacks._from_chunks(chunks, (3, 5), True), x)
  stacked = [np.stack([np.asarray(c), 2 * np.asarray(c)]) for c in chunks]  # as vmap adds a dim
  np.testing.assert_array_equal(callbacks._from_chunks(stacked, (3, 5), True), np.stack([x, 2 * x]))


def test_bfloat16_inputs_under_jit():
  h, v = _batch(2, seed=6)
  got_h, got_v = jax.jit(hy.ucm_from_dissimilarity_jax)(jnp.asarray(h, jnp.bfloat16),
                                                        jnp.asarray(v, jnp.bfloat16))
  assert got_h.dtype == jnp.float32
  h16 = np.asarray(jnp.asarray(h, jnp.bfloat16).astype(jnp.float32))
  v16 = np.asarray(jnp.asarray(v, jnp.bfloat16).astype(jnp.float32))
  want_h, want_v = _numpy_ucms(h16, v16, 30)
  np.testing.assert_array_equal(got_h, want_h)
  np.testing.assert_array_equal(got_v, want_v)


def test_mesh_with_a_model_axis():
  """Images split over 'data', replicated over 'model': each replica computes its data shard."""
  mesh = jax.make_mesh((2, 2), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  h, v = _batch(4, seed=8)
  got_h, got_v = jax.jit(functools.partial(hy.ucm_from_dissimilarity_jax, mesh=mesh))(h, v)
  want_h, want_v = _numpy_ucms(h, v, 30)
  np.testing.assert_array_equal(np.asarray(got_h), want_h)
  np.testing.assert_array_equal(np.asarray(got_v), want_v)
