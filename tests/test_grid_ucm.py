"""jhseg.grid UCM images and label maps: hand-computed cases, round trips."""
import jax
import numpy as np
import pytest

from jhseg import grid

H2 = np.array([[1], [2]], np.float32)  # 2x2 image
V2 = np.array([[3, 4]], np.float32)


def test_interpixel_by_hand():
  ucm = grid.edges_to_interpixel(H2, V2)
  np.testing.assert_array_equal(ucm, [[0, 1, 0], [3, 4, 4], [0, 2, 0]])
  ucm2 = grid.interpixel_to_ucm2(ucm)
  # border replicates the outer rows/columns, as the official BSDS ucm2 files
  np.testing.assert_array_equal(ucm2, [[0, 0, 1, 0, 0],
                                       [0, 0, 1, 0, 0],
                                       [3, 3, 4, 4, 4],
                                       [0, 0, 2, 0, 0],
                                       [0, 0, 2, 0, 0]])
  # image-resolution boundaries as the BSDS code reads them: corner below-right of each pixel;
  # pixel (0, 1) gets v[0, 1] and pixel (1, 0) gets h[1, 0] from the replicated border
  np.testing.assert_array_equal(ucm2[2::2, 2::2], [[4, 4], [2, 0]])
  zero = grid.interpixel_to_ucm2(ucm, border="zero")
  np.testing.assert_array_equal(zero[1:-1, 1:-1], ucm)
  assert not np.any(zero[0]) and not np.any(zero[-1]) and not np.any(zero[:, 0]) and not np.any(zero[:, -1])
  np.testing.assert_array_equal(zero[2::2, 2::2], [[4, 0], [0, 0]])
  with pytest.raises(ValueError, match=r"valid names: \['replicate', 'zero'\]"):
    grid.interpixel_to_ucm2(ucm, border="reflect")


def test_round_trips_batched_jit():
  rng = np.random.default_rng(0)
  h = rng.random((2, 4, 4)).astype(np.float32)
  v = rng.random((2, 3, 5)).astype(np.float32)
  ucm = jax.jit(grid.edges_to_interpixel)(h, v)
  assert ucm.shape == (2, 7, 9)
  ucm2 = jax.jit(grid.interpixel_to_ucm2)(ucm)
  assert ucm2.shape == (2, 9, 11)
  np.testing.assert_array_equal(grid.ucm2_to_interpixel(ucm2), ucm)
  h2, v2 = jax.jit(grid.interpixel_to_edges)(ucm)
  np.testing.assert_array_equal(h2, h)
  np.testing.assert_array_equal(v2, v)
  # corners are the max of the 4 incident edges
  np.testing.assert_array_equal(
      ucm[0, 3, 5], max(h[0, 1, 2], h[0, 2, 2], v[0, 1, 2], v[0, 1, 3]))
  # pixels are 0
  np.testing.assert_array_equal(ucm[:, 0::2, 0::2], 0)


def test_real_bsds_ucm2_round_trip(shared_data):
  """The official benchmark sample's ucm2 files are exactly interpixel_to_ucm2 of their interior."""
  import scipy.io
  for name in ("2018", "3063"):
    ucm2 = scipy.io.loadmat(shared_data / "bsds500_bench" / "ucm2" / f"{name}.mat")["ucm2"]
    interpixel = np.asarray(grid.ucm2_to_interpixel(ucm2))
    assert interpixel.shape == (ucm2.shape[0] - 2, ucm2.shape[1] - 2)
    np.testing.assert_array_equal(grid.interpixel_to_ucm2(interpixel), ucm2.astype(np.float32))
    # corners of real UCMs are the max of their incident edges; pixel sites are 0
    h, v = grid.interpixel_to_edges(interpixel)
    np.testing.assert_array_equal(grid.edges_to_interpixel(h, v), interpixel.astype(np.float32))


def test_single_row_image():
  h = np.array([[1, 2]], np.float32)
  v = np.zeros((0, 3), np.float32)
  np.testing.assert_array_equal(grid.edges_to_interpixel(h, v), [[0, 1, 0, 2, 0]])


def test_ucm_shape_errors():
  with pytest.raises(ValueError, match=r"`ucm` must have shape \(\.\.\., 2H-1, 2W-1\)"):
    grid.interpixel_to_edges(np.zeros((4, 5)))
  with pytest.raises(ValueError, match=r"`ucm2` must have shape \(\.\.\., 2H\+1, 2W\+1\)"):
    grid.ucm2_to_interpixel(np.zeros((1, 5)))
  with pytest.raises(ValueError, match="`v` must have shape"):
    grid.edges_to_interpixel(H2, H2)


LABELS = np.array([[0, 0, 1], [2, 2, 1]], np.int32)


def test_boundary_edges_by_hand():
  h, v = grid.boundary_edges(LABELS)
  np.testing.assert_array_equal(h, [[False, True], [False, True]])
  np.testing.assert_array_equal(v, [[True, True, False]])
  hb, vb = jax.jit(grid.boundary_edges)(np.stack([LABELS, np.zeros_like(LABELS)]))
  np.testing.assert_array_equal(hb[0], h)
  assert not hb[1].any() and not vb[1].any()


def test_boundary_edges_rejects_float_labels():
  with pytest.raises(ValueError, match="`labels` must hold integer labels"):
    grid.boundary_edges(LABELS.astype(np.float32))


FINE = np.array([[0, 1, 2], [3, 3, 2]], np.int32)
COARSE = np.array([[0, 0, 1], [0, 0, 1]], np.int32)


def test_nested_labels_to_ultrametric_by_hand():
  h, v = grid.nested_labels_to_ultrametric([FINE, COARSE], [0.5, 1.0])
  np.testing.assert_allclose(h, [[0.5, 1.0], [0.0, 1.0]])
  np.testing.assert_allclose(v, [[0.5, 0.5, 0.0]])
  assert h.dtype == np.float32


def test_nested_labels_to_ultrametric_batched_jit():
  labels = np.stack([np.stack([FINE, COARSE]), np.stack([COARSE, COARSE])], axis=1)  # (K=2, B=2, H, W)
  h, v = jax.jit(grid.nested_labels_to_ultrametric)(labels, np.array([0.5, 1.0]))
  assert h.shape == (2, 2, 2) and v.shape == (2, 1, 3)
  np.testing.assert_allclose(h[1], [[0, 1], [0, 1]])
  np.testing.assert_allclose(v[1], [[0, 0, 0]])


def test_nested_labels_errors():
  with pytest.raises(ValueError, match=r"`altitudes` must have shape \(K,\) = \(2,\)"):
    grid.nested_labels_to_ultrametric([FINE, COARSE], [1.0])
  with pytest.raises(ValueError, match="one shape"):
    grid.nested_labels_to_ultrametric([FINE, COARSE[:1]], [0.5, 1.0])


def test_is_nested():
  assert bool(grid.is_nested(FINE, COARSE))
  assert not bool(grid.is_nested(COARSE, FINE))
  # fine label 0 is in two coarse labels although every coarse boundary is a fine boundary
  assert not bool(grid.is_nested(np.array([[0, 1, 0]]), np.array([[0, 0, 1]])))
  batched = jax.jit(grid.is_nested)(np.stack([FINE, COARSE]), np.stack([COARSE, FINE]))
  np.testing.assert_array_equal(batched, [True, False])
  with pytest.raises(ValueError, match="same shape"):
    grid.is_nested(FINE, COARSE[:1])
