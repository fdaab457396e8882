"""jhseg.segments: pooling values and exact gradient, adjacency pairs, label resizing."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from jhseg import segments

LABELS = np.array([[[0, 0, 1], [2, 2, 1], [2, -1, 1]]], np.int32)


def test_segment_mean_values_and_counts():
  x = np.arange(18, dtype=np.float32).reshape(1, 3, 3, 2)
  means, counts = segments.segment_mean(jnp.asarray(x), jnp.asarray(LABELS), 4)
  np.testing.assert_array_equal(counts, [[2, 3, 3, 0]])
  for k in range(3):
    np.testing.assert_allclose(means[0, k], x[0][LABELS[0] == k].mean(0), rtol=1e-6)
  np.testing.assert_array_equal(means[0, 3], [0, 0])


def test_segment_mean_gradient_by_finite_differences():
  rng = np.random.default_rng(0)
  labels = jnp.asarray(rng.integers(-1, 3, (2, 4, 5)))
  x = rng.normal(size=(2, 4, 5, 3))
  weights = rng.normal(size=(2, 3, 3))

  def f(values):
    means, _ = segments.segment_mean(values, labels, 3)
    return jnp.sum(jnp.sin(means) * weights)

  with jax.enable_x64():
    x64 = jnp.asarray(x, jnp.float64)
    grad = np.asarray(jax.grad(f)(x64))
    eps = 1e-6
    for index in itertools.islice(np.ndindex(x.shape), 0, None, 7):
      delta = np.zeros_like(x)
      delta[index] = eps
      numeric = (f(x64 + delta) - f(x64 - delta)) / (2 * eps)
      np.testing.assert_allclose(grad[index], numeric, atol=1e-7)
  # pixels of no segment get no gradient
  assert np.all(grad[np.asarray(labels) < 0] == 0)


def test_segment_adjacency_fixed_size():
  pairs, mask = segments.segment_adjacency(jnp.asarray(LABELS), 4, 5)
  np.testing.assert_array_equal(mask, [[True, True, True, False, False]])
  np.testing.assert_array_equal(pairs[0, :3], [[0, 1], [0, 2], [1, 2]])
  np.testing.assert_array_equal(pairs[0, 3:], 0)


def test_segment_adjacency_matches_numpy_on_random_maps():
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 6, (3, 7, 8))
  pairs, mask = jax.jit(segments.segment_adjacency, static_argnums=(1, 2))(
      jnp.asarray(labels), 6, 18)
  for b in range(3):
    lab = labels[b]
    expected = set()
    for a, c in [(lab[:, :-1], lab[:, 1:]), (lab[:-1], lab[1:])]:
      for u, w in zip(a.ravel(), c.ravel()):
        if u != w:
          expected.add((min(u, w), max(u, w)))
    got = {tuple(p) for p, m in zip(np.asarray(pairs[b]).tolist(), np.asarray(mask[b])) if m}
    assert got == expected


def test_prototypes_gather_and_resize():
  x = jnp.asarray(np.random.default_rng(2).normal(size=(1, 3, 3, 4)).astype(np.float32))
  protos, present = segments.segment_prototypes(x, jnp.asarray(LABELS), 4)
  np.testing.assert_allclose(jnp.linalg.norm(protos[0, :3], axis=-1), 1, rtol=1e-5)
  np.testing.assert_array_equal(present, [[True, True, True, False]])
  painted = segments.gather_segments(protos, jnp.asarray(LABELS))
  np.testing.assert_allclose(painted[0, 1, 2], protos[0, 1])
  np.testing.assert_array_equal(painted[0, 2, 1], 0)
  up = segments.resize_labels_nearest(jnp.asarray(LABELS), 6, 6)
  np.testing.assert_array_equal(up[0, ::2, ::2], LABELS[0])
  np.testing.assert_array_equal(up[0, 1::2, 1::2], LABELS[0])


def test_resize_labels_nearest_takes_pytorch_source_pixels():
  labels = jnp.arange(16).reshape(1, 4, 4)
  np.testing.assert_array_equal(segments.resize_labels_nearest(labels, 2, 2),
                                [[[0, 2], [8, 10]]])
  np.testing.assert_array_equal(segments.resize_labels_nearest(labels, 4, 4), labels)


def test_resize_labels_nearest_host_arrays_stay_numpy_and_match_device():
  """The one nearest-label resize serves host code (CAST's evaluation) too."""
  # 2 -> 5 rows: source rows floor(i 2 / 5) = 0, 0, 0, 1, 1.
  np.testing.assert_array_equal(
      segments.resize_labels_nearest(np.array([[[1], [2]]]), 5, 1)[0, :, 0], [1, 1, 1, 2, 2])
  labels = np.random.default_rng(0).integers(0, 50, size=(2, 7, 9))
  for height, width in ((13, 20), (3, 4), (7, 5)):
    host = segments.resize_labels_nearest(labels, height, width)
    assert isinstance(host, np.ndarray) and host.dtype == labels.dtype
    # Independent reference: integer floor(i H / height) source indices.
    rows = np.arange(height) * 7 // height
    cols = np.arange(width) * 9 // width
    np.testing.assert_array_equal(host, labels[:, rows[:, None], cols[None, :]])
  np.testing.assert_array_equal(  # the device path gives the same (one size: compiles)
      host, segments.resize_labels_nearest(jnp.asarray(labels), height, width))


def test_resize_labels_nearest_at_pixel_centres():
  labels = jnp.arange(16).reshape(1, 4, 4)
  np.testing.assert_array_equal(
      segments.resize_labels_nearest(labels, 2, 2, pixel_centres=True), [[[5, 7], [13, 15]]])
  # 4 -> 3 columns: centres at 2/3, 2, 10/3 source pixels -> 0, 2, 3.
  np.testing.assert_array_equal(
      segments.resize_labels_nearest(labels, 4, 3, pixel_centres=True)[0, 0], [0, 2, 3])
  np.testing.assert_array_equal(segments.resize_labels_nearest(labels, 4, 3)[0, 0], [0, 1, 2])
