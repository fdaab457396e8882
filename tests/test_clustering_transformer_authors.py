"""`authors_code=True` clustering transformers against a PyTorch transcription of the
authors' module (twke18/HSG `hsg/models/heads/transformer.py`, `TransformerClustering`,
`ResnetFcn._hierarchical_grouping`), with the same weights.

The transcription below is written from the authors' code for this test (DETR-style
post-norm layers, BatchNorm over every token of the padded batch, the masked statistics
with divisor n + 1, torch.std without a mask, the final top-k re-ordering of clusters).
"""

import math

from flax import nnx
import jax.numpy as jnp
import numpy as np
import pytest

from jhseg.models import clustering_transformer as ct

torch = pytest.importorskip("torch")
tnn = torch.nn

DIM, HEADS, FFN = 16, 4, 32


class _TokenBN(tnn.Module):
  """BatchNorm1d over [L, B, C] tokens: statistics over all L x B tokens."""

  def __init__(self, c):
    super().__init__()
    self.norm = tnn.BatchNorm1d(c)

  def forward(self, x):
    return self.norm(x.transpose(1, 2)).transpose(1, 2)


class _Encoder(tnn.Module):

  def __init__(self):
    super().__init__()
    self.self_attn = tnn.MultiheadAttention(DIM, HEADS, dropout=0.0)
    self.linear1, self.linear2 = tnn.Linear(DIM, FFN), tnn.Linear(FFN, DIM)
    self.norm1, self.norm2 = _TokenBN(DIM), _TokenBN(DIM)

  def forward(self, src, padding, pos):
    q = src if pos is None else src + pos
    src = self.norm1(src + self.self_attn(q, q, value=src, key_padding_mask=padding)[0])
    return self.norm2(src + self.linear2(torch.relu(self.linear1(src))))


class _Decoder(tnn.Module):

  def __init__(self):
    super().__init__()
    self.self_attn = tnn.MultiheadAttention(DIM, HEADS, dropout=0.0)
    self.multihead_attn = tnn.MultiheadAttention(DIM, HEADS, dropout=0.0)
    self.linear1, self.linear2 = tnn.Linear(DIM, FFN), tnn.Linear(FFN, DIM)
    self.norm1, self.norm2, self.norm3 = _TokenBN(DIM), _TokenBN(DIM), _TokenBN(DIM)

  def forward(self, tgt, memory, padding, pos, query_pos):
    q = tgt + query_pos
    tgt = self.norm1(tgt + self.self_attn(q, q, value=tgt)[0])
    key = memory if pos is None else memory + pos
    tgt = self.norm2(tgt + self.multihead_attn(tgt + query_pos, key, value=memory,
                                               key_padding_mask=padding)[0])
    return self.norm3(tgt + self.linear2(torch.relu(self.linear1(tgt))))


class _AuthorsClustering(tnn.Module):
  """Transformer + TransformerClustering of the authors, 1 encoder and 1 decoder layer."""

  def __init__(self, num_clusters):
    super().__init__()
    self.encoder, self.decoder = _Encoder(), _Decoder()
    self.decoder_norm = _TokenBN(DIM)
    self.tgt_fc = tnn.Sequential(tnn.Linear(2 * DIM, FFN, bias=False), tnn.BatchNorm1d(FFN),
                                 tnn.ReLU(), tnn.Linear(FFN, DIM))
    self.centroid_fc = tnn.Sequential(tnn.ReLU(), tnn.Linear(DIM, DIM, bias=False),
                                      tnn.BatchNorm1d(DIM))
    self.centroid_feat_fc = tnn.Sequential(tnn.ReLU(), tnn.Linear(DIM, DIM, bias=False),
                                           tnn.BatchNorm1d(DIM))
    self.query = tnn.Parameter(torch.zeros(num_clusters, DIM))
    self.k = num_clusters

  def forward(self, src, padding, pos):
    """src, pos: [B, L, C]; padding: [B, L] True = padded. Returns centroids Z [B, k, C],
    features X [B, k, C], softmax C [B, L, k], the top-k order [B, k]."""
    b, length, c = src.shape
    src, pos = src.transpose(0, 1), None if pos is None else pos.transpose(0, 1)
    query_pos = self.query.unsqueeze(1).repeat(1, b, 1)
    memory = self.encoder(src, padding, pos)
    if padding is not None:
      mask_t = (~padding).t().type_as(memory).unsqueeze(2)
      count = torch.clamp(mask_t.sum(0), min=1)
      masked = memory * mask_t
      mean = masked.sum(0) / count
      std = torch.sqrt(torch.pow(masked - mean.unsqueeze(0), 2).sum(0) / (count + 1))
    else:
      mean, std = memory.mean(0), memory.std(0)
    tgt = self.tgt_fc(torch.cat([mean, std], -1)).unsqueeze(0).repeat(self.k, 1, 1)
    out = self.decoder_norm(self.decoder(tgt, memory, padding, pos, query_pos))
    flat = out.transpose(0, 1).flatten(0, 1)
    z = self.centroid_fc(flat).view(b, self.k, c)
    x = self.centroid_feat_fc(flat).view(b, self.k, c)
    logits = torch.einsum("bkc,lbc->bkl", z, memory) / math.sqrt(c)
    order = torch.topk(logits.max(-1)[0], self.k, dim=-1)[1]
    take = lambda t: torch.gather(t, 1, order.unsqueeze(2).repeat(1, 1, t.shape[-1]))
    z, x, logits = take(z), take(x), take(logits)
    return z, x, torch.softmax(logits, dim=1).transpose(1, 2), order


def _authors_hierarchy(fine, coarse, src, padding, pos):
  """`ResnetFcn._hierarchical_grouping`: G1 = argmax C1, positions averaged over G1,
  P2 = P1 C2, G2 = argmax P2."""
  z1, x1, c1, order1 = fine(src, padding, pos)
  g1 = torch.argmax(c1, -1)
  one_hot = torch.nn.functional.one_hot(g1, fine.k).float() * (~padding).float()[..., None]
  pos1 = torch.einsum("blk,blc->bkc", one_hot, pos) / one_hot.sum(1).clamp(min=1e-12)[..., None]
  _, _, c2, order2 = coarse(x1, None, pos1)
  p2 = torch.einsum("blj,bjk->blk", c1, c2)
  return c1, order1, p2, order2, torch.argmax(p2, -1)


def _t(a):
  return torch.tensor(np.asarray(a), dtype=torch.float32)


def _copy_attention(attn: nnx.MultiHeadAttention, mha):
  qkv = [np.asarray(p.kernel[...]).reshape(DIM, DIM).T for p in (attn.query, attn.key,
                                                                 attn.value)]
  mha.in_proj_weight.data = _t(np.concatenate(qkv))
  mha.in_proj_bias.data = _t(np.concatenate([np.asarray(p.bias[...]).reshape(DIM)
                                             for p in (attn.query, attn.key, attn.value)]))
  mha.out_proj.weight.data = _t(np.asarray(attn.out.kernel[...]).reshape(DIM, DIM).T)
  mha.out_proj.bias.data = _t(attn.out.bias[...])


def _copy_linear(linear: nnx.Linear, torch_linear):
  torch_linear.weight.data = _t(np.asarray(linear.kernel[...]).T)
  if linear.bias is not None:
    torch_linear.bias.data = _t(linear.bias[...])


def _copy_bn(bn: nnx.BatchNorm, torch_bn):
  torch_bn.weight.data, torch_bn.bias.data = _t(bn.scale[...]), _t(bn.bias[...])
  torch_bn.running_mean.data, torch_bn.running_var.data = _t(bn.mean[...]), _t(bn.var[...])


def _to_torch(level: ct.ClusteringTransformer) -> _AuthorsClustering:
  t = _AuthorsClustering(level.num_clusters)
  enc, dec = level.encoder[0], level.decoder[0]
  _copy_attention(enc.self_attn, t.encoder.self_attn)
  _copy_attention(dec.self_attn, t.decoder.self_attn)
  _copy_attention(dec.cross_attn, t.decoder.multihead_attn)
  for ours, theirs in ((enc, t.encoder), (dec, t.decoder)):
    _copy_linear(ours.ffn.linear1, theirs.linear1)
    _copy_linear(ours.ffn.linear2, theirs.linear2)
  for ours, theirs in ((enc.norm1, t.encoder.norm1), (enc.norm2, t.encoder.norm2),
                       (dec.norm1, t.decoder.norm1), (dec.norm2, t.decoder.norm2),
                       (dec.norm3, t.decoder.norm3), (level.decoder_norm, t.decoder_norm)):
    _copy_bn(ours.norm, theirs.norm)
  _copy_linear(level.stats_fc1, t.tgt_fc[0])
  _copy_bn(level.stats_norm, t.tgt_fc[1])
  _copy_linear(level.stats_fc2, t.tgt_fc[3])
  for head, theirs in ((level.centroid_head, t.centroid_fc),
                       (level.feature_head, t.centroid_feat_fc)):
    _copy_linear(head.linear, theirs[1])
    _copy_bn(head.norm.norm, theirs[2])
  t.query.data = _t(level.queries[...])
  return t


def _model(seed=0):
  return ct.HierarchicalClustering(DIM, num_clusters=(6, 3), num_heads=HEADS,
                                   num_encoder_layers=1, num_decoder_layers=1, ffn_dim=FFN,
                                   dropout=0.0, authors_code=True, rngs=nnx.Rngs(seed))


def _inputs(seed=0, counts=(4, 7, 10), length=10):
  rng = np.random.default_rng(seed)
  valid = np.arange(length)[None] < np.asarray(counts)[:, None]
  x = rng.normal(size=(len(counts), length, DIM)).astype(np.float32) * valid[..., None]
  pos = rng.normal(size=x.shape).astype(np.float32) * valid[..., None]
  return x, valid, pos


def _warm_up_running_statistics(model, x, valid, pos):
  """Non-trivial running statistics: a few training-mode passes, then evaluation mode."""
  model.train()
  for shift in (0.5, -0.3, 1.0):
    model(jnp.asarray(x + shift), jnp.asarray(valid), jnp.asarray(pos))


@pytest.fixture(scope="module")
def warm_model():
  """One model for the module (eager construction and first calls dominate the cost)."""
  model = _model()
  _warm_up_running_statistics(model, *_inputs())
  return model


@pytest.mark.parametrize("train", [False, True])
def test_authors_code_matches_a_torch_transcription(warm_model, train):
  model = nnx.clone(warm_model)
  x, valid, pos = _inputs()
  fine, coarse = (_to_torch(level) for level in model.levels)
  if train:
    model.train()
    fine.train(), coarse.train()
  else:
    model.eval()
    fine.eval(), coarse.eval()
  out = model(jnp.asarray(x), jnp.asarray(valid), jnp.asarray(pos))
  with torch.no_grad():
    c1, order1, p2, order2, g2 = _authors_hierarchy(fine, coarse, _t(x), _t(~valid).bool(),
                                                    _t(pos))
  order1, order2 = order1.numpy(), order2.numpy()
  level1 = out.levels[0]
  ours_c1 = np.take_along_axis(np.asarray(level1.assignment), order1[:, None, :], 2)
  np.testing.assert_allclose(ours_c1[valid], c1.numpy()[valid], atol=1e-4)
  ours_p2 = np.take_along_axis(np.asarray(out.assignments[1]), order2[:, None, :], 2)
  np.testing.assert_allclose(ours_p2[valid], p2.numpy()[valid], atol=1e-4)
  # Same G2 partition (cluster ids differ by the authors' re-ordering).
  np.testing.assert_array_equal(order2[np.arange(3)[:, None], g2.numpy()][valid],
                                np.asarray(out.labels[1])[valid])
  if train:  # PyTorch's running variance is the unbiased one
    np.testing.assert_allclose(np.asarray(model.levels[0].stats_norm.var[...]),
                               fine.tgt_fc[1].running_var.numpy(), rtol=1e-4)
    np.testing.assert_allclose(np.asarray(model.levels[0].encoder[0].norm1.norm.var[...]),
                               fine.encoder.norm1.norm.running_var.numpy(), rtol=1e-4)


def test_default_differs_from_the_authors_statistics_with_padding(warm_model):
  """Same weights: extra padded rows change the authors' C (their statistics count the
  padding) but not the default's (why the default differs)."""
  authors = nnx.clone(warm_model)
  default = ct.HierarchicalClustering(DIM, num_clusters=(6, 3), num_heads=HEADS,
                                      num_encoder_layers=1, num_decoder_layers=1,
                                      ffn_dim=FFN, dropout=0.0, rngs=nnx.Rngs(0))
  nnx.update(default, nnx.state(authors))
  x, valid, pos = _inputs()
  wider = [np.concatenate([a, np.zeros((3, 6) + a.shape[2:], a.dtype)], 1)
           for a in (x, valid, pos)]
  m = valid
  for model, should_change in ((authors, True), (default, False)):
    model.eval()
    a = np.asarray(model(*map(jnp.asarray, (x, valid, pos))).assignments[0])
    b = np.asarray(model(*map(jnp.asarray, wider)).assignments[0])[:, :10]
    assert (np.abs(a[m] - b[m]).max() > 1e-3) == should_change


def test_authors_initialisation_bounds():
  level = _model(seed=3).levels[0]
  attn = level.encoder[0].self_attn
  packed = math.sqrt(6 / (4 * DIM))          # xavier over PyTorch's [3m, m] in_proj
  for proj in (attn.query, attn.key, attn.value):
    w = np.abs(np.asarray(proj.kernel[...]))
    assert w.max() <= packed and w.max() > 0.8 * packed
    np.testing.assert_array_equal(proj.bias[...], 0.0)
  for linear, fan_in in ((level.encoder[0].ffn.linear1, DIM), (level.encoder[0].ffn.linear2, FFN),
                         (level.stats_fc2, FFN)):
    bias = np.abs(np.asarray(linear.bias[...]))
    assert bias.max() <= 1 / math.sqrt(fan_in) and bias.max() > 0.5 / math.sqrt(fan_in)
  head = np.abs(np.asarray(level.centroid_head.linear.kernel[...]))
  assert head.max() <= 1 / math.sqrt(DIM) and head.max() > 0.8 / math.sqrt(DIM)
  default = ct.ClusteringTransformer(DIM, 3, num_heads=HEADS, ffn_dim=FFN, rngs=nnx.Rngs(3))
  np.testing.assert_array_equal(default.encoder[0].ffn.linear1.bias[...], 0.0)
  assert np.abs(np.asarray(default.encoder[0].self_attn.query.kernel[...])).max() > packed
