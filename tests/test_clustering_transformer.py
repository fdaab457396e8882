"""HSG clustering transformers: nesting across levels, masks, shapes, equivariance."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jhseg.models import clustering_transformer as ct

DIM = 16


def _model(dropout=0.0, seed=0, num_clusters=(8, 4)):
  # One encoder and one decoder layer and no dropout (its random bits dominate XLA's
  # CPU compile time) keep the tests cheap on the shared CPU; the paper's 2 + 2 layers
  # and dropout 0.1 are checked structurally in `test_paper_defaults`, dropout itself
  # in `test_dropout_is_random_in_training_and_off_in_eval`.
  return ct.HierarchicalClustering(DIM, num_clusters=num_clusters, dropout=dropout,
                                   num_encoder_layers=1, num_decoder_layers=1,
                                   rngs=nnx.Rngs(seed))


def test_paper_defaults():
  model = ct.HierarchicalClustering(DIM, rngs=nnx.Rngs(0))
  assert model.num_clusters == (8, 4)
  for level, k in zip(model.levels, (8, 4)):
    assert len(level.encoder) == 2 and len(level.decoder) == 2
    assert level.queries.shape == (k, DIM)
    attn = level.encoder[0].self_attn
    assert attn.num_heads == 4 and attn.dropout_rate == 0.1
    assert level.encoder[0].dropout1.rate == 0.1
    assert isinstance(level.encoder[0].norm1.norm, nnx.BatchNorm)
    assert level.encoder[0].ffn.linear1.out_features == 2 * DIM


def _inputs(seed=1, b=2, n=12, counts=(12, 7)):
  x = jax.random.normal(jax.random.key(seed), (b, n, DIM))
  mask = jnp.arange(n)[None] < jnp.asarray(counts)[:, None]
  return x, mask


def test_shapes_dtypes_and_masked_rows():
  model = _model()
  x, mask = _inputs()
  out = model(x, mask)
  assert len(out.levels) == 2
  for k, level, p, g in zip((8, 4), out.levels, out.assignments, out.labels):
    assert p.shape == (2, 12, k) and g.shape == (2, 12) and g.dtype == jnp.int32
    assert level.centroids.shape == (2, k, DIM) and level.features.shape == (2, k, DIM)
    rows = np.asarray(p.sum(-1))
    np.testing.assert_allclose(rows[np.asarray(mask)], 1.0, atol=1e-5)
    np.testing.assert_array_equal(rows[~np.asarray(mask)], 0.0)
    assert (np.asarray(g)[~np.asarray(mask)] == -1).all()
    assert ((np.asarray(g)[np.asarray(mask)] >= 0)
            & (np.asarray(g)[np.asarray(mask)] < k)).all()
  assert out.levels[0].memory.shape == (2, 12, DIM)
  assert out.levels[1].memory.shape == (2, 8, DIM)  # level 2 runs on the 8 clusters


def test_levels_compose_and_nested_labels_nest():
  """P_2 = P_1 C_2, G_l = argmax P_l (checked with NumPy); `nested_labels` nests them."""
  for seed in range(3):
    model = _model(seed=seed)
    x, mask = _inputs(seed=seed + 10)
    out = model(x, mask)
    m = np.asarray(mask)
    c2 = np.asarray(out.levels[1].assignment)
    p2 = np.einsum("bnj,bjk->bnk", np.asarray(out.assignments[0]), c2)
    np.testing.assert_allclose(out.assignments[1], p2, atol=1e-6)
    for p, g in zip(out.assignments, out.labels):
      np.testing.assert_array_equal(np.asarray(g)[m], np.argmax(np.asarray(p), -1)[m])
      assert (np.asarray(g)[~m] == -1).all()
    g1, g2 = (np.asarray(g) for g in ct.nested_labels(out.labels, model.num_clusters))
    np.testing.assert_array_equal(g1, out.labels[0])      # the finest level is kept
    raw2 = np.asarray(out.labels[1])
    for b in range(2):
      for group in np.unique(g1[b][g1[b] >= 0]):
        members = g1[b] == group
        assert len(np.unique(g2[b][members])) == 1        # nested
        # ... under the label most of the group's segments chose (ties: smaller id).
        assert g2[b][members][0] == np.argmax(np.bincount(raw2[b][members], minlength=4))
      assert (g2[b][g1[b] < 0] == -1).all()


def test_winner_take_all_of_the_propagated_assignment_by_hand():
  """HSG eq. 7 and sec. 3.3: G_2 = argmax(P_1 C_2), not the winner of G_1's own row.

  Segment 0 has P_1 = (0.6, 0.4); C_2 rows (0.6, 0.4) and (0, 1):
  P_2 = 0.6 (0.6, 0.4) + 0.4 (0, 1) = (0.36, 0.64) -> cluster 1, although its level-1
  winner (cluster 0) prefers cluster 0. Segment 1, P_1 = (1, 0): P_2 = (0.6, 0.4) -> 0.
  """
  p1 = jnp.asarray([[[0.6, 0.4], [1.0, 0.0], [0.5, 0.5]]])
  c2 = jnp.asarray([[[0.6, 0.4], [0.0, 1.0]]])
  mask = jnp.asarray([[True, True, False]])
  p2, g2 = ct.propagate(p1, c2, mask)
  np.testing.assert_allclose(p2, [[[0.36, 0.64], [0.6, 0.4], [0.0, 0.0]]], atol=1e-7)
  np.testing.assert_array_equal(g2, [[1, 0, -1]])
  # First level: P_1 = C_1 itself.
  p, g = ct.propagate(None, p1, mask)
  np.testing.assert_array_equal(g, [[0, 0, -1]])
  # Nesting for evaluation: G1 = (0, 0, 0, 1) with G2 = (1, 0, 1, 0) -> the G1 group 0
  # takes its majority G2 label 1 (2 votes to 1); group 1 keeps 0.
  g1n, g2n = ct.nested_labels((jnp.asarray([[0, 0, 0, 1, -1]]), jnp.asarray([[1, 0, 1, 0, -1]])),
                              (2, 2))
  np.testing.assert_array_equal(g1n, [[0, 0, 0, 1, -1]])
  np.testing.assert_array_equal(g2n, [[1, 1, 1, 0, -1]])


@pytest.mark.parametrize("train", [True, False])
def test_padding_contents_and_size_do_not_matter(train):
  model = _model()
  if not train:
    model.eval()
  x, mask = _inputs()
  out = model(x, mask)
  # Garbage in padded rows, then a larger padded size: valid outputs are unchanged.
  garbage = jnp.where(mask[..., None], x, 1e3)
  wider = jnp.concatenate([garbage, jnp.full((2, 5, DIM), -7.0)], axis=1)
  wider_mask = jnp.concatenate([mask, jnp.zeros((2, 5), bool)], axis=1)
  # Garbage padding gives identical results; a wider padding only changes float32
  # summation order (exact in float64), which the low-temperature softmax amplifies.
  for other, other_mask, atol in ((garbage, mask, 1e-6), (wider, wider_mask, 2e-3)):
    got = model(other, other_mask)
    for lvl in range(2):
      m = np.asarray(mask)
      np.testing.assert_allclose(np.asarray(got.assignments[lvl])[:, :12][m],
                                 np.asarray(out.assignments[lvl])[m], atol=atol)
      np.testing.assert_allclose(got.levels[lvl].centroids, out.levels[lvl].centroids,
                                 atol=10 * atol)


def test_permuting_segments_permutes_outputs():
  model = _model()
  x, mask = _inputs(counts=(12, 12))
  perm = np.random.default_rng(0).permutation(12)
  out = model(x, mask)
  got = model(x[:, perm], mask[:, perm])
  for lvl in range(2):
    np.testing.assert_allclose(got.assignments[lvl], np.asarray(out.assignments[lvl])[:, perm],
                               atol=2e-5)
    np.testing.assert_array_equal(got.labels[lvl], np.asarray(out.labels[lvl])[:, perm])


def test_dropout_is_random_in_training_and_off_in_eval():
  model = ct.ClusteringTransformer(DIM, 3, dropout=0.5, num_encoder_layers=1,
                                   num_decoder_layers=1, rngs=nnx.Rngs(0))
  x, mask = _inputs()
  a = model(x, mask).assignment
  b = model(x, mask).assignment
  assert not np.allclose(a, b)
  model.eval()
  np.testing.assert_array_equal(model(x, mask).assignment, model(x, mask).assignment)


def test_jit_positions_and_finite_gradients():
  model = _model()
  x, mask = _inputs(counts=(12, 1))  # a single-segment image
  pos = jax.random.normal(jax.random.key(3), x.shape)

  @nnx.jit
  def loss_fn(model, x):
    out = model(x, mask, pos)
    return sum(jnp.sum(p ** 2) for p in out.assignments) + jnp.sum(
        out.levels[-1].centroids ** 2)

  loss, grads = nnx.value_and_grad(loss_fn)(model, x)
  assert np.isfinite(float(loss))
  leaves = jax.tree.leaves(grads)
  assert leaves and all(np.isfinite(np.asarray(g)).all() for g in leaves)
  assert any(np.abs(np.asarray(g)).sum() > 0 for g in leaves)


def test_bad_inputs_are_named():
  model = _model()
  with pytest.raises(ValueError, match="x must be"):
    model(jnp.ones((2, 12, DIM + 1)))
  with pytest.raises(ValueError, match="mask must be"):
    model(jnp.ones((2, 12, DIM)), jnp.ones((2, 11), bool))
  with pytest.raises(ValueError, match="divisible"):
    ct.ClusteringTransformer(10, 4, num_heads=4, rngs=nnx.Rngs(0))


def test_masked_mean_std_by_hand():
  y = jnp.asarray([[[1.0], [3.0], [100.0]]])
  mean, std = ct.masked_mean_std(y, jnp.asarray([[True, True, False]]))
  np.testing.assert_allclose(mean, [[2.0]])
  np.testing.assert_allclose(std, [[np.sqrt(1.0 + 1e-6)]], rtol=1e-6)


def test_authors_mean_std_by_hand():
  """The authors' statistics: tokens (1, 3) valid, one padded row (value ignored).

  mean 2; the padded row enters as (0 - 2)^2 = 4: (1 + 1 + 4) / (n + 1 = 3) = 2.
  Without a mask (torch.std, divisor L - 1): tokens (1, 3, 5): mean 3, (4 + 0 + 4) / 2.
  """
  y = jnp.asarray([[[1.0], [3.0], [100.0]]])
  mean, std = ct.authors_mean_std(y, jnp.asarray([[True, True, False]]))
  np.testing.assert_allclose(mean, [[2.0]])
  np.testing.assert_allclose(std, [[np.sqrt(2.0)]], rtol=1e-6)
  mean, std = ct.authors_mean_std(jnp.asarray([[[1.0], [3.0], [5.0]]]), None)
  np.testing.assert_allclose(mean, [[3.0]])
  np.testing.assert_allclose(std, [[2.0]], rtol=1e-6)


def test_pixel_labels_by_hand():
  seg = jnp.asarray([[[0, 1], [2, -1]]])
  labels = jnp.asarray([[5, 6, -1]])
  np.testing.assert_array_equal(ct.pixel_labels(seg, labels), [[[5, 6], [-1, -1]]])


def test_learns_separable_groups_with_the_grouping_loss():
  """L_g alone (eq. 8) trains one level to split 4 well-separated groups of tokens.

  A regression test of real learning, not of the loss's value: after training, the
  evaluation-mode (running BatchNorm statistics, deterministic) assignments must use
  several clusters and keep every group inside one of them.
  """
  import optax  # pylint: disable=g-import-not-at-top
  from jhseg import losses  # pylint: disable=g-import-not-at-top

  groups, per_group, batch = 4, 6, 8
  rng = np.random.default_rng(0)
  centres = np.linalg.qr(rng.normal(size=(DIM, DIM)))[0][:groups]     # orthonormal
  truth = np.tile(np.repeat(np.arange(groups), per_group), (batch, 1))

  def sample(seed):
    r = np.random.default_rng(seed)
    x = centres[truth] + 0.15 * r.normal(size=truth.shape + (DIM,))
    perm = np.argsort(r.random(truth.shape), axis=1)                  # shuffle the order
    take = lambda a: np.take_along_axis(a, perm[..., None] if a.ndim == 3 else perm, 1)
    return jnp.asarray(take(x / np.linalg.norm(x, axis=-1, keepdims=True)),
                       jnp.float32), take(truth)

  model = ct.ClusteringTransformer(DIM, 4, num_heads=4, num_encoder_layers=1,
                                   num_decoder_layers=1, dropout=0.0, rngs=nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)

  @nnx.jit
  def step(model, optimizer, x):
    def loss_fn(model):
      out = model(x)
      return losses.grouping_loss(x, out.assignment, out.centroids)
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss

  model.train()
  for i in range(150):
    loss = step(model, optimizer, sample(i)[0])
  assert float(loss) < -0.3          # modularity of a real partition, not the uniform 0
  model.eval()
  x, labels = sample(1000)
  predicted = np.asarray(nnx.jit(lambda m, x: m(x).labels)(model, x))  # one compile, not eager
  for b in range(batch):
    assert len(np.unique(predicted[b])) >= 3, predicted[b]
    for g in range(groups):
      assert len(np.unique(predicted[b][labels[b] == g])) == 1, (b, g, predicted[b])
