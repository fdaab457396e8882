"""HiPoSeg losses on a hand-built 2-class / 4-part example, checked against NumPy
transcriptions of eqs. 5-15 written here (independent of jhseg), closed forms, the
memory update, the schedule's switch steps, sampling and where gradients flow."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jhseg.losses import hiposeg

# Objects A (0) and B (1); parts 0, 1 -> A and 2, 3 -> B (pi of eq. 2).
PARENT = np.array([0, 0, 1, 1])
IGNORE = 255


def _unit(x):
  x = np.asarray(x, np.float64)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


# Eight pixels in R^3 (unit vectors), one ignored.
Z = _unit([[1, 0.1, 0], [1, -0.2, 0.1], [0.8, 0.6, 0], [0.7, 0.7, 0.1],
           [0, 1, 0.2], [0.1, 0.9, -0.3], [0, 0.2, 1], [0.5, 0.5, 0.5]])
LOW = np.array([0, 0, 1, 1, 2, 2, 3, IGNORE])
HIGH = np.where(LOW == IGNORE, IGNORE, PARENT[np.minimum(LOW, 3)])


# -- NumPy transcriptions of the equations -------------------------------------------

def np_prototypes(z, labels, k, eps=1e-6):  # eqs. 5-6
  protos = np.zeros((k, z.shape[1]))
  for c in range(k):
    members = z[labels == c]
    mu = members.sum(0) / (len(members) + eps)
    protos[c] = mu / np.linalg.norm(mu) if len(members) else 0.0
  return protos


def np_s(a, b):
  return -np.sum((a - b) ** 2)


def np_feature_loss(z, labels, protos, tau):  # eqs. 7 / 9
  losses = []
  for zn, y in zip(z, labels):
    if y == IGNORE:
      continue
    logits = np.array([np_s(zn, p) / tau for p in protos])
    losses.append(-(logits[y] - np.log(np.exp(logits).sum())))
  return np.mean(losses)


def np_repulsion(protos, kappa):  # eqs. 8 / 10
  k = len(protos)
  total = sum(np.exp(np_s(protos[i], protos[j]) / kappa)
              for i in range(k) for j in range(k) if i != j)
  return total / (k * (k - 1))


def np_align_in(low, high, parent, sigma1):  # eq. 11
  return np.mean([max(0.0, np.linalg.norm(low[j] - high[parent[j]]) - sigma1)
                  for j in range(len(low))])


def np_align_out(high, sigma2):  # eq. 12
  k = len(high)
  total = sum(max(0.0, sigma2 - np.linalg.norm(high[i] - high[j]))
              for i in range(k) for j in range(k) if i != j)
  return total / (k * (k - 1))


# -- the pieces ----------------------------------------------------------------------

def test_batch_prototypes_eqs_5_6():
  protos, counts = hiposeg.batch_prototypes(jnp.asarray(Z, jnp.float32), jnp.asarray(LOW), 4)
  np.testing.assert_allclose(protos, np_prototypes(Z, LOW, 4), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(counts, [2, 2, 2, 1])
  high, high_counts = hiposeg.batch_prototypes(jnp.asarray(Z, jnp.float32),
                                               jnp.asarray(HIGH), 2)
  np.testing.assert_allclose(high, np_prototypes(Z, HIGH, 2), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(high_counts, [4, 3])
  # An absent class gets a zero row (no NaN).
  protos, counts = hiposeg.batch_prototypes(jnp.asarray(Z[:2], jnp.float32),
                                            jnp.asarray([0, 0]), 3)
  assert np.all(np.isfinite(protos)) and not np.any(protos[1:])


@pytest.mark.parametrize("tau", [0.2, 1.0])
def test_feature_prototype_losses_eqs_7_9(tau):
  high = np_prototypes(Z, HIGH, 2)
  low = np_prototypes(Z, LOW, 4)
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  fh = hiposeg.feature_prototype_loss(f32(Z), jnp.asarray(HIGH), f32(high), temperature=tau)
  fl = hiposeg.feature_prototype_loss(f32(Z), jnp.asarray(LOW), f32(low), temperature=tau)
  assert float(fh) == pytest.approx(np_feature_loss(Z, HIGH, high, tau), rel=1e-5)
  assert float(fl) == pytest.approx(np_feature_loss(Z, LOW, low, tau), rel=1e-5)


def test_feature_loss_closed_form_and_masks():
  # One pixel at e1, prototypes e1 (its class) and e2: s = 0 and -2, so
  # L = -log(1 / (1 + exp(-2 / tau))) = log(1 + exp(-2 / tau)).
  z = jnp.asarray([[1.0, 0.0]])
  protos = jnp.eye(2)
  loss = hiposeg.feature_prototype_loss(z, jnp.asarray([0]), protos, temperature=0.5)
  assert float(loss) == pytest.approx(np.log1p(np.exp(-4.0)), rel=1e-5)
  # Masking the negative prototype leaves a single class: loss 0.
  masked = hiposeg.feature_prototype_loss(z, jnp.asarray([0]), protos, temperature=0.5,
                                          prototype_mask=jnp.asarray([True, False]))
  assert float(masked) == pytest.approx(0.0, abs=1e-7)
  # A pixel whose class has no prototype does not count.
  none = hiposeg.feature_prototype_loss(z, jnp.asarray([1]), protos,
                                        prototype_mask=jnp.asarray([True, False]))
  assert float(none) == 0.0


def test_repulsion_losses_eqs_8_10():
  high = np_prototypes(Z, HIGH, 2)
  low = np_prototypes(Z, LOW, 4)
  for protos in (high, low):
    for kappa in (0.5, 2.0):
      got = hiposeg.prototype_repulsion_loss(jnp.asarray(protos, jnp.float32),
                                             temperature=kappa)
      assert float(got) == pytest.approx(np_repulsion(protos, kappa), rel=1e-5)
  # Closed form: orthogonal unit prototypes are at squared distance 2 -> exp(-2 / kappa).
  got = hiposeg.prototype_repulsion_loss(jnp.eye(3), temperature=0.5)
  assert float(got) == pytest.approx(np.exp(-4.0), rel=1e-6)


def test_alignment_losses_eqs_11_13():
  high = np_prototypes(Z, HIGH, 2)
  low = np_prototypes(Z, LOW, 4)
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  got_in = hiposeg.alignment_in_loss(f32(low), f32(high), PARENT, margin=0.25)
  # sigma_2 = 1.5 (paper: 1) so that the inter-high hinge is active in this example.
  got_out = hiposeg.alignment_out_loss(f32(high), margin=1.5)
  want_in, want_out = np_align_in(low, high, PARENT, 0.25), np_align_out(high, 1.5)
  assert want_in > 0 and want_out > 0
  assert float(got_in) == pytest.approx(want_in, rel=1e-5)
  assert float(got_out) == pytest.approx(want_out, rel=1e-5)
  total = hiposeg.alignment_loss(f32(low), f32(high), PARENT, alpha=2.0, beta=0.5,
                                 margin_out=1.5)
  assert float(total) == pytest.approx(2.0 * want_in + 0.5 * want_out, rel=1e-5)
  # Closed form: h = (e1, e2) are sqrt(2) > sigma_2 = 1 apart -> L_out = 0; a part at
  # distance 0.5 from its parent contributes 0.5 - 0.25.
  high2 = jnp.eye(2)
  low2 = jnp.asarray([[1.0, 0.0], [np.cos(2 * np.arcsin(0.25)), np.sin(2 * np.arcsin(0.25))],
                      [0.0, 1.0], [0.0, 1.0]])
  assert float(hiposeg.alignment_out_loss(high2)) == 0.0
  assert float(hiposeg.alignment_in_loss(low2, high2, PARENT)) == pytest.approx(
      0.25 / 4, rel=1e-5)
  with pytest.raises(ValueError, match="margin_in < margin_out"):
    hiposeg.alignment_loss(low2, high2, PARENT, margin_in=1.0, margin_out=0.5)


def test_memory_update_eq_15():
  e = np.eye(3, dtype=np.float32)
  memory = hiposeg.PrototypeMemory(jnp.asarray([e[0], np.zeros(3), e[2]]),
                                   jnp.asarray([True, False, True]))
  batch = jnp.asarray([e[1], e[2], e[0]])
  counts = jnp.asarray([5.0, 2.0, 0.0])  # class 2 absent from the batch
  raw = hiposeg.update_memory(memory, batch, counts, momentum=0.9, renormalize=False)
  np.testing.assert_allclose(raw.prototypes[0], 0.9 * e[0] + 0.1 * e[1], rtol=1e-6)
  np.testing.assert_allclose(raw.prototypes[1], e[2])   # first sighting: copied
  np.testing.assert_allclose(raw.prototypes[2], e[2])   # absent: unchanged
  np.testing.assert_array_equal(raw.seen, [True, True, True])
  unit = hiposeg.update_memory(memory, batch, counts)
  np.testing.assert_allclose(unit.prototypes[0], _unit(0.9 * e[0] + 0.1 * e[1]), rtol=1e-6)
  # Two updates with the same prototype converge geometrically: 1 - 0.9^2 of the way.
  twice = hiposeg.update_memory(raw, batch, counts, renormalize=False)
  np.testing.assert_allclose(twice.prototypes[0], 0.81 * e[0] + 0.19 * e[1], rtol=1e-6)
  with pytest.raises(ValueError, match="momentum"):
    hiposeg.update_memory(memory, batch, counts, momentum=1.0)


def test_schedule_switch_steps_and_weights():
  assert hiposeg.phase_switch_steps(1000) == (75, 225, 375)
  assert hiposeg.phase_switch_steps(100) == (8, 23, 38)
  assert hiposeg.phase_switch_steps(60000) == (4500, 13500, 22500)
  weights = hiposeg.LossWeights(ce=1.0, fh=2.0, hh=3.0, fl=4.0, ll=5.0, align=6.0)
  fn = jax.jit(lambda s: hiposeg.loss_weights(s, 1000, weights=weights))
  expected = {0: (1, 0, 0, 0, 0, 0), 74: (1, 0, 0, 0, 0, 0), 75: (1, 2, 3, 0, 0, 0),
              224: (1, 2, 3, 0, 0, 0), 225: (1, 2, 3, 4, 5, 0), 374: (1, 2, 3, 4, 5, 0),
              375: (1, 2, 3, 4, 5, 6), 999: (1, 2, 3, 4, 5, 6)}
  for step, want in expected.items():
    np.testing.assert_array_equal(np.array(fn(jnp.asarray(step))), want, err_msg=str(step))
    assert int(hiposeg.training_phase(step, 1000)) == sum(
        step >= s for s in (75, 225, 375))
  joint = hiposeg.loss_weights(0, 1000, weights=weights, staged=False)
  np.testing.assert_array_equal(np.array(joint), weights)
  with pytest.raises(ValueError, match="non-decreasing"):
    hiposeg.phase_switch_steps(10, phase_starts=(0.5, 0.2, 0.9))


def test_total_loss_eq_14():
  terms = dict(ce=1.0, fh=2.0, hh=3.0, fl=4.0, ll=5.0, align=6.0, align_in=9.0)
  weights = hiposeg.LossWeights(1.0, 0.1, 0.2, 0.3, 0.4, 0.5)
  assert float(hiposeg.total_loss(terms, weights)) == pytest.approx(
      1 + 0.2 + 0.6 + 1.2 + 2.0 + 3.0)
  with pytest.raises(ValueError, match="lacks"):
    hiposeg.total_loss({"ce": 1.0}, weights)


def test_sample_pixels_fixed_shape_distinct_valid_and_balanced():
  labels = np.full((2, 100), IGNORE)
  labels[0, :90], labels[0, 90:] = 0, 1          # 90 / 10 pixels
  labels[1, :5] = 3                              # only 5 valid pixels
  labels = jnp.asarray(labels)
  keys = jax.random.split(jax.random.key(0), 200)
  draw = jax.jit(jax.vmap(lambda k: hiposeg.sample_pixels(k, labels, 10, num_classes=4)))
  indices, valid = draw(keys)
  assert indices.shape == (200, 2, 10) and valid.shape == (200, 2, 10)
  assert all(len(set(row.tolist())) == 10 for row in np.asarray(indices).reshape(-1, 10))
  assert np.all(valid[:, 0]) and np.all(valid[:, 1].sum(-1) == 5)
  picked = np.take_along_axis(np.asarray(labels)[None].repeat(200, 0), np.asarray(indices), 2)
  assert np.all(picked[valid] != IGNORE)
  # Class-balanced: about half of image 0's draws from the 10-pixel class (uniform: 1/10).
  assert 0.4 < np.mean(picked[:, 0] == 1) < 0.6
  uniform = jax.vmap(lambda k: hiposeg.sample_pixels(k, labels, 10, num_classes=4,
                                                     class_balanced=False))(keys)[0]
  share = np.mean(np.take_along_axis(np.asarray(labels)[None].repeat(200, 0),
                                     np.asarray(uniform), 2)[:, 0] == 1)
  assert 0.05 < share < 0.15


# -- one batch end to end ------------------------------------------------------------

def _batch_inputs():
  # (1, 2, 4, 3) embeddings, labels at the same size (nearest resize is the identity).
  emb = jnp.asarray(Z.reshape(1, 2, 4, 3), jnp.float32)
  labels = jnp.asarray(LOW.reshape(1, 2, 4))
  memory = hiposeg.init_hierarchical_memory(2, 4, 3)
  return emb, labels, memory


def test_hiposeg_losses_match_the_equations_on_a_fresh_memory():
  emb, labels, memory = _batch_inputs()
  terms, new = hiposeg.hiposeg_losses(emb, labels, PARENT, memory, jax.random.key(0),
                                      num_samples=8, class_balanced=False)
  high, low = np_prototypes(Z, HIGH, 2), np_prototypes(Z, LOW, 4)
  # Fresh memory: the entries become the batch prototypes (first sighting).
  np.testing.assert_allclose(new.high.prototypes, high, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(new.low.prototypes, low, rtol=1e-5, atol=1e-6)
  tau, kappa = hiposeg.DEFAULT_TEMPERATURE, hiposeg.DEFAULT_REPULSION_TEMPERATURE
  want = dict(fh=np_feature_loss(Z, HIGH, high, tau), fl=np_feature_loss(Z, LOW, low, tau),
              hh=np_repulsion(high, kappa), ll=np_repulsion(low, kappa),
              align_in=np_align_in(low, high, PARENT, 0.25),
              align_out=np_align_out(high, 1.0))
  want["align"] = want["align_in"] + want["align_out"]
  for name, value in want.items():
    assert float(terms[name]) == pytest.approx(value, rel=1e-4), name


def test_hiposeg_losses_against_an_existing_memory():
  emb, labels, _ = _batch_inputs()
  rng = np.random.default_rng(0)
  old_high, old_low = _unit(rng.standard_normal((2, 3))), _unit(rng.standard_normal((4, 3)))
  memory = hiposeg.HierarchicalMemory(
      hiposeg.PrototypeMemory(jnp.asarray(old_high, jnp.float32), jnp.ones(2, bool)),
      hiposeg.PrototypeMemory(jnp.asarray(old_low, jnp.float32), jnp.ones(4, bool)))
  terms, new = hiposeg.hiposeg_losses(emb, labels, PARENT, memory, jax.random.key(0),
                                      num_samples=8, class_balanced=False)
  high = _unit(0.9 * old_high + 0.1 * np_prototypes(Z, HIGH, 2))
  low = _unit(0.9 * old_low + 0.1 * np_prototypes(Z, LOW, 4))
  np.testing.assert_allclose(new.high.prototypes, high, rtol=1e-5, atol=1e-6)
  # L_fh / L_fl contrast the features with the updated memory.
  tau = hiposeg.DEFAULT_TEMPERATURE
  assert float(terms["fh"]) == pytest.approx(np_feature_loss(Z, HIGH, high, tau), rel=1e-4)
  assert float(terms["fl"]) == pytest.approx(np_feature_loss(Z, LOW, low, tau), rel=1e-4)
  # Repulsion / alignment act on this batch's prototypes (all classes are present).
  batch_high = np_prototypes(Z, HIGH, 2)
  assert float(terms["hh"]) == pytest.approx(np_repulsion(batch_high, 0.5), rel=1e-4)


@functools.partial(jax.jit, static_argnums=0)
def _loss_and_grads(prototype_targets, weights):
  """Gradients of a weighted loss w.r.t. the embeddings and the memory entries (jitted once
  per target kind: the weights are traced, so the five terms share one compilation)."""
  emb, labels, _ = _batch_inputs()
  # Memory entries far from the batch, so that every term is non-zero.
  high = jnp.asarray(_unit([[0, 0, 1], [0, 0.1, 1]]), jnp.float32)
  low = jnp.asarray(_unit(np.tile([0, 0, 1.0], (4, 1)) + np.eye(4, 3) * 0.1), jnp.float32)

  def loss(emb, high, low):
    memory = hiposeg.HierarchicalMemory(hiposeg.PrototypeMemory(high, jnp.ones(2, bool)),
                                        hiposeg.PrototypeMemory(low, jnp.ones(4, bool)))
    terms, _ = hiposeg.hiposeg_losses(emb, labels, PARENT, memory, jax.random.key(0),
                                      num_samples=8, prototype_targets=prototype_targets)
    terms["ce"] = 0.0
    return hiposeg.total_loss(terms, weights)

  grads = jax.grad(loss, argnums=(0, 1, 2))(emb, high, low)
  return grads[0], grads[1:]


@pytest.mark.parametrize("term", ["fh", "hh", "fl", "ll", "align"])
def test_each_term_trains_the_embeddings_and_never_the_memory(term):
  weights = hiposeg.LossWeights(**{name: float(name == term)
                                   for name in hiposeg.LossWeights._fields})
  grad_emb, grad_memory = _loss_and_grads("batch", weights)
  assert np.all(np.isfinite(grad_emb)) and np.abs(grad_emb).sum() > 1e-4
  for leaf in grad_memory:
    np.testing.assert_array_equal(leaf, 0.0)


def test_memory_targets_make_prototype_terms_constant():
  # The literal reading (prototype terms on memory entries) trains nothing: the reason
  # for the "batch" default.
  weights = hiposeg.LossWeights(ce=0.0, fh=0.0, hh=1.0, fl=0.0, ll=1.0, align=1.0)
  grad_emb, _ = _loss_and_grads("memory", weights)
  np.testing.assert_array_equal(grad_emb, 0.0)


def test_single_part_objects_give_finite_gradients():
  # Every pixel of object 1 is part 2: l_2 == h_1 exactly (boat, background).
  emb = jnp.asarray(_unit([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0.1, 1, 0]])
                    .reshape(1, 2, 2, 3), jnp.float32)
  labels = jnp.asarray([[[0, 1], [2, 2]]])
  memory = hiposeg.init_hierarchical_memory(2, 4, 3)

  def loss(emb):
    terms, _ = hiposeg.hiposeg_losses(emb, labels, PARENT, memory, jax.random.key(0),
                                      num_samples=4)
    return terms["align"] + terms["ll"] + terms["fl"]

  assert np.all(np.isfinite(jax.jit(jax.grad(loss))(emb)))  # jitted: eager op dispatch is slow


def test_bad_options_are_named():
  emb, labels, memory = _batch_inputs()
  with pytest.raises(ValueError, match=r"feature_targets='batches'.*\['memory', 'batch'\]"):
    hiposeg.hiposeg_losses(emb, labels, PARENT, memory, jax.random.key(0), num_samples=4,
                           feature_targets="batches")
  with pytest.raises(ValueError, match="parent has shape"):
    hiposeg.hiposeg_losses(emb, labels, PARENT[:3], memory, jax.random.key(0),
                           num_samples=4)
  with pytest.raises(ValueError, match="num_samples=9"):
    hiposeg.hiposeg_losses(emb, labels, PARENT, memory, jax.random.key(0), num_samples=9)
