"""Learned 2-D position embeddings and segment positions, checked by hand."""
from flax import nnx
import jax.numpy as jnp
import numpy as np
import pytest

from jhseg.models import position_embedding as pe


def _embedding(dim=4, num_positions=5):
  emb = pe.LearnedPositionEmbedding(dim, num_positions=num_positions, rngs=nnx.Rngs(0))
  # Recognisable tables: row r -> (100 r, 100 r + 1), column c -> (c, c + 0.5).
  emb.row_embed[...] = jnp.stack([100.0 * jnp.arange(num_positions),
                                  100.0 * jnp.arange(num_positions) + 1], axis=1)
  emb.col_embed[...] = jnp.stack([1.0 * jnp.arange(num_positions),
                                  jnp.arange(num_positions) + 0.5], axis=1)
  return emb


def test_initial_tables_are_uniform_in_unit_interval():
  emb = pe.LearnedPositionEmbedding(8, rngs=nnx.Rngs(1))
  for table in (emb.row_embed[...], emb.col_embed[...]):
    assert table.shape == (pe.NUM_POSITIONS, 4)
    assert float(table.min()) >= 0.0 and float(table.max()) < 1.0
    assert float(table.std()) > 0.2  # uniform [0, 1) has std 0.29


def test_grid_is_columns_then_rows():
  pos = np.asarray(_embedding()(2, 3))
  assert pos.shape == (2, 3, 4)
  for i in range(2):
    for j in range(3):
      np.testing.assert_allclose(pos[i, j], [j, j + 0.5, 100 * i, 100 * i + 1])


def test_grid_beyond_the_table_is_an_error():
  with pytest.raises(ValueError, match="more than the 5 positions"):
    _embedding()(6, 2)


def test_resized_is_identity_on_the_training_grid_and_clamps_beyond_the_table():
  emb = _embedding()
  np.testing.assert_array_equal(emb.resized((3, 4), 3, 4), emb(3, 4))
  big = np.asarray(emb.resized((7, 2), 7, 2))
  np.testing.assert_array_equal(big[4], big[6])          # rows 5, 6 reuse row 4
  np.testing.assert_allclose(big[6, 1], [1, 1.5, 400, 401])


def test_resized_interpolates_between_cells():
  emb = _embedding()
  up = np.asarray(emb.resized((2, 2), 4, 4))
  # Half-pixel centres: output row 1 sits at source row 0.25 -> 25 (+ 1).
  np.testing.assert_allclose(up[1, 0, 2:], [25.0, 26.0], atol=1e-5)
  np.testing.assert_allclose(up[0, 0], [0, 0.5, 0, 1], atol=1e-5)


def test_grid_for_rounds_up():
  assert pe.grid_for(64, 50, 8) == (8, 7)
  assert pe.grid_for(33, 32, 4.0) == (9, 8)


def test_segment_positions_are_pixel_means_with_empty_segments_zero():
  positions = jnp.arange(2 * 3 * 2, dtype=jnp.float32).reshape(2, 3, 2)
  labels = jnp.array([[[0, 0, 1], [-1, 1, 1]]])
  out = np.asarray(pe.segment_positions(positions, labels, 3))
  flat = np.asarray(positions).reshape(6, 2)
  np.testing.assert_allclose(out[0, 0], flat[[0, 1]].mean(0), rtol=1e-6)
  np.testing.assert_allclose(out[0, 1], flat[[2, 4, 5]].mean(0), rtol=1e-6)
  np.testing.assert_array_equal(out[0, 2], [0, 0])     # empty; pixel 3 (-1) is ignored


def test_segment_positions_accept_per_image_positions():
  positions = jnp.stack([jnp.zeros((2, 2, 2)), jnp.ones((2, 2, 2))])
  labels = jnp.zeros((2, 2, 2), jnp.int32)
  out = np.asarray(pe.segment_positions(positions, labels, 1))
  np.testing.assert_array_equal(out[:, 0, 0], [0, 1])


def test_odd_dimension_is_an_error():
  with pytest.raises(ValueError, match="must be even"):
    pe.LearnedPositionEmbedding(5, rngs=nnx.Rngs(0))
