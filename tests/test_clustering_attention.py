"""Decoder cross-attention exposed by the clustering transformers (for visualisation)."""
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jhseg.models import clustering_transformer as ct

DIM = 16


def _model(num_clusters=(6, 3)):
  # 1 + 1 layers and no dropout keep compile time low on the shared CPU.
  return ct.HierarchicalClustering(DIM, num_clusters=num_clusters, dropout=0.0,
                                   num_encoder_layers=1, num_decoder_layers=1,
                                   rngs=nnx.Rngs(0))


# Jitted calls: one XLA program per call signature compiles several times faster on the
# shared CPU than the eager op-by-op dispatch of the whole transformer.
_attention = nnx.jit(lambda module, x, mask: module(x, mask).attention)


@nnx.jit
def _hierarchy_attention(model, x, mask):
  return tuple(level.attention for level in model(x, mask).levels)


def _inputs(b=2, n=10, counts=(10, 4)):
  x = jax.random.normal(jax.random.key(1), (b, n, DIM))
  mask = jnp.arange(n)[None] < jnp.asarray(counts)[:, None]
  return x, mask


def test_attention_rows_sum_to_one_over_valid_segments_and_zero_on_masked():
  model = _model()
  x, mask = _inputs()
  first, second = (np.asarray(a) for a in _hierarchy_attention(model, x, mask))  # training mode
  assert first.shape == (2, 6, 10) and second.shape == (2, 3, 6)
  assert first.dtype == np.float32
  np.testing.assert_allclose(first.sum(-1), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(first[1, :, 4:], 0.0)  # masked segments exactly 0
  assert np.all(first[1, :, :4] > 0)
  assert np.all(first >= 0)
  # Level 2 attends over the 6 level-1 clusters, all valid.
  np.testing.assert_allclose(second.sum(-1), 1.0, rtol=1e-5)
  assert np.all(second > 0)


# flax deprecates sow() outside nnx.capture(); the sown weights are what is compared.
@pytest.mark.filterwarnings("ignore:Using 'Module.sow\\(\\)'")
def test_attention_equals_the_weights_flax_uses_in_the_last_cross_attention():
  # Independent reference: flax's own sown attention probabilities, read from the
  # cross-attention with the same inputs (eval mode: deterministic BatchNorm).
  model = _model()
  model.eval()
  x, mask = _inputs()
  level = model.levels[0]
  attention = _attention(level, x, mask)

  @nnx.jit
  def sown_weights(level, x, mask):
    layer = level.decoder[-1]
    y = level.encoder[0](x, mask)
    mean, std = ct.masked_mean_std(y, mask)
    t = level.stats_fc2(jax.nn.relu(level.stats_norm(
        level.stats_fc1(jnp.concatenate([mean, std], axis=-1)))))
    t = jnp.broadcast_to(t[:, None], (2, 6, DIM))
    queries = jnp.broadcast_to(level.queries[...][None], t.shape)
    t = layer.norm1(t + layer.self_attn(t + queries, t + queries, t))
    layer.cross_attn(t + queries, y, y, mask=ct._key_mask(mask, 6), sow_weights=True)
    sown = nnx.state(layer.cross_attn, nnx.Intermediate)
    (weights,) = jax.tree.leaves(sown)
    return weights

  weights = sown_weights(level, x, mask)
  assert weights.shape == (2, 4, 6, 10)  # (B, heads, queries, segments)
  expected = np.asarray(weights).mean(axis=1) * np.asarray(mask)[:, None, :]
  np.testing.assert_allclose(np.asarray(attention), expected, atol=1e-6)


def test_padding_does_not_change_the_attention_of_valid_segments():
  model = _model()
  model.eval()
  x, mask = _inputs(counts=(10, 4))
  short = _attention(model.levels[0], x[1:, :4], mask[1:, :4])
  padded = _attention(model.levels[0], x, mask)
  np.testing.assert_allclose(np.asarray(padded[1:, :, :4]), np.asarray(short), atol=1e-5)
