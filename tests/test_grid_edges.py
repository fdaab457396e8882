"""jhseg.grid edges: Higra's flat order, pixel maps -> edge weights. Hand-computed cases."""
import higra as hg
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jhseg import grid


def _higra_flat_from_edges(h, v):
  """Independent reference: read each Higra edge's endpoints and look its weight up in h/v."""
  height, width = h.shape[0], h.shape[1] + 1
  graph = hg.get_4_adjacency_graph((height, width))
  sources, targets = graph.edge_list()
  out = np.empty(graph.num_edges(), dtype=h.dtype)
  for e, (s, t) in enumerate(zip(sources, targets)):
    i, j = divmod(int(s), width)
    if t == s + 1 and t % width != 0:  # same row
      out[e] = h[i, j]
    else:
      assert t == s + width
      out[e] = v[i, j]
  return out


def test_flat_order_by_hand_2x3():
  h = np.array([[1, 2], [3, 4]], np.float32)
  v = np.array([[5, 6, 7]], np.float32)
  # raster order, right edge then down edge: h00 v00 h01 v01 v02 h10 h11
  np.testing.assert_array_equal(grid.edges_to_flat(h, v), [1, 5, 2, 6, 7, 3, 4])


@pytest.mark.parametrize("shape", [(1, 1), (1, 4), (4, 1), (3, 3), (4, 5)])
def test_flat_order_matches_higra(shape):
  height, width = shape
  rng = np.random.default_rng(0)
  h = rng.random((height, width - 1)).astype(np.float32)
  v = rng.random((height - 1, width)).astype(np.float32)
  flat = np.asarray(grid.edges_to_flat(h, v))
  np.testing.assert_array_equal(flat, _higra_flat_from_edges(h, v))
  h2, v2 = grid.flat_to_edges(flat, shape)
  np.testing.assert_array_equal(h2, h)
  np.testing.assert_array_equal(v2, v)


def test_flat_round_trip_batched_under_jit():
  rng = np.random.default_rng(1)
  h = rng.random((2, 3, 4, 4)).astype(np.float32)
  v = rng.random((2, 3, 3, 5)).astype(np.float32)
  flat = jax.jit(grid.edges_to_flat)(h, v)
  assert flat.shape == (2, 3, grid.num_edges((4, 5)))
  np.testing.assert_array_equal(flat[1, 2], grid.edges_to_flat(h[1, 2], v[1, 2]))
  h2, v2 = jax.jit(grid.flat_to_edges, static_argnums=1)(flat, (4, 5))
  np.testing.assert_array_equal(h2, h)
  np.testing.assert_array_equal(v2, v)


def test_flat_permutation_and_positions_agree():
  h_pos, v_pos = grid.flat_edge_positions((3, 4))
  perm = grid.flat_edge_permutation((3, 4))
  both = np.concatenate([h_pos.ravel(), v_pos.ravel()])
  np.testing.assert_array_equal(both[perm], np.arange(grid.num_edges((3, 4))))


def test_edge_shape_errors_name_argument():
  with pytest.raises(ValueError, match=r"`v` must have shape .*\(2, 3\)"):
    grid.edges_to_flat(np.zeros((3, 2)), np.zeros((3, 3)))
  with pytest.raises(ValueError, match=r"`v` must have shape"):
    grid.edges_to_flat(np.zeros((2, 3, 2)), np.zeros((1, 2, 3)))
  with pytest.raises(ValueError, match=r"`w` must have shape \(\.\.\., E\) with E .* 7"):
    grid.flat_to_edges(np.zeros(6), (2, 3))


X = np.array([[0, 1, 3], [2, 2, 0]], np.float32)


@pytest.mark.parametrize("reduction, h, v", [
    ("mean", [[0.5, 2], [2, 1]], [[1, 1.5, 1.5]]),
    ("max", [[1, 3], [2, 2]], [[2, 2, 3]]),
    ("absdiff", [[1, 2], [0, 2]], [[2, 1, 3]]),
])
def test_pixel_edges_by_hand(reduction, h, v):
  got_h, got_v = grid.pixel_edges(X, reduction=reduction)
  np.testing.assert_allclose(got_h, h)
  np.testing.assert_allclose(got_v, v)


def test_pixel_edges_batched_jit():
  batch = np.stack([X, 2 * X])
  fn = jax.jit(lambda x: grid.pixel_edges(x, reduction="mean"))
  h, v = fn(batch)
  assert h.shape == (2, 2, 2) and v.shape == (2, 1, 3)
  np.testing.assert_allclose(h[1], 2 * np.asarray(grid.pixel_edges(X, reduction="mean")[0]))


def test_pixel_edges_absdiff_l2_over_channels():
  x = np.zeros((2, 2, 2), np.float32)
  x[0, 1] = (3, 4)  # |(3,4) - (0,0)| = 5
  x[1, 0] = (1, 1)  # sqrt(2)
  h, v = grid.pixel_edges(x, reduction="absdiff", num_channel_dims=1)
  np.testing.assert_allclose(h, [[5], [np.sqrt(2)]], rtol=1e-6)
  np.testing.assert_allclose(v, [[np.sqrt(2), 5]], rtol=1e-6)
  # two channel dims are reduced together
  h2, _ = grid.pixel_edges(x[..., None], reduction="absdiff", num_channel_dims=2)
  np.testing.assert_allclose(h2, h)


def test_pixel_edges_errors():
  with pytest.raises(ValueError, match=r"valid names: \['absdiff', 'max', 'mean'\]"):
    grid.pixel_edges(X, reduction="min")
  with pytest.raises(ValueError, match="Only 'absdiff'"):
    grid.pixel_edges(X[..., None], reduction="mean", num_channel_dims=1)
  with pytest.raises(ValueError, match="`x` must have shape"):
    grid.pixel_edges(np.zeros(3), reduction="max")


def test_pixel_edges_gradient_flows():
  g = jax.grad(lambda x: jnp.sum(grid.pixel_edges(x, reduction="mean")[0]))(jnp.asarray(X))
  # each pixel counts 0.5 per incident horizontal edge: 1 edge at the ends, 2 in the middle
  np.testing.assert_allclose(g, [[0.5, 1, 0.5], [0.5, 1, 0.5]])


def test_absdiff_over_channels_has_finite_gradient_at_equal_pixels():
  x = jnp.zeros((2, 2, 3))  # all pixels equal: the norm is at its kink everywhere
  g = jax.grad(lambda x: jnp.sum(grid.pixel_edges(x, reduction="absdiff", num_channel_dims=1)[0]))(x)
  assert np.all(np.isfinite(g))
