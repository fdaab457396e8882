"""The linear probe (jhseg.metrics.linear_probe): PyTorch SGD reference, separable data."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jhseg.metrics import linear_probe


def _torch_probe(params, features, labels, orders, options):
  """The authors' loop in PyTorch: nn.Linear + SGD(momentum, wd), lr set per epoch."""
  torch = pytest.importorskip("torch")
  layer = torch.nn.Linear(features.shape[1], params["bias"].shape[0])
  with torch.no_grad():
    layer.weight.copy_(torch.tensor(np.asarray(params["kernel"]).T))
    layer.bias.copy_(torch.tensor(np.asarray(params["bias"])))
  lr = options.base_learning_rate * options.batch_size / 256
  optimizer = torch.optim.SGD(layer.parameters(), lr, momentum=options.momentum,
                              weight_decay=options.weight_decay)
  x, y = torch.tensor(features, dtype=torch.float32), torch.tensor(labels)
  for epoch, order in enumerate(np.asarray(orders)):
    for group in optimizer.param_groups:
      group["lr"] = lr * 0.5 * (1.0 + np.cos(np.pi * epoch / options.epochs))
    for start in range(0, len(order), options.batch_size):
      index = order[start:start + options.batch_size]
      index = torch.tensor(index[index >= 0])
      loss = torch.nn.functional.cross_entropy(layer(x[index]), y[index])
      optimizer.zero_grad()
      loss.backward()
      optimizer.step()
  return layer.weight.detach().numpy().T, layer.bias.detach().numpy()


def test_probe_matches_pytorch_sgd_with_a_short_last_batch():
  rng = np.random.default_rng(0)
  features = rng.normal(size=(11, 5)).astype(np.float32)
  labels = rng.integers(0, 3, 11)
  options = linear_probe.ProbeOptions(epochs=3, batch_size=4, base_learning_rate=64.0,
                                      weight_decay=0.01)  # lr 1.0; wd checks the decay's place
  params = linear_probe.init_classifier(jax.random.key(0), 5, 3)
  orders = linear_probe.epoch_orders(jax.random.key(1), 11, options)
  assert orders.shape == (3, 12)
  for order in np.asarray(orders):  # a permutation of every example, then one padding slot
    np.testing.assert_array_equal(np.sort(order[:11]), np.arange(11))
    assert order[11] == -1
  trained = linear_probe.train_linear_probe(params, jnp.asarray(features), jnp.asarray(labels),
                                            orders, options=options)
  kernel, bias = _torch_probe(params, features, labels, orders, options)
  np.testing.assert_allclose(trained["kernel"], kernel, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(trained["bias"], bias, rtol=1e-4, atol=1e-5)
  assert not np.allclose(trained["kernel"], params["kernel"])


def test_one_full_batch_step_is_the_closed_form_gradient_step():
  rng = np.random.default_rng(1)
  x, y = rng.normal(size=(6, 4)).astype(np.float32), np.array([0, 1, 2, 0, 1, 2])
  options = linear_probe.ProbeOptions(epochs=1, batch_size=6, base_learning_rate=256 / 6 * 0.5)
  params = {"kernel": jnp.zeros((4, 3)), "bias": jnp.zeros(3)}
  trained = linear_probe.train_linear_probe(params, jnp.asarray(x), jnp.asarray(y),
                                            jnp.arange(6)[None], options=options)
  # From W = 0 the softmax is uniform: dL/dW = X^T (1/3 - onehot) / N; lr 0.5.
  grad = x.T @ (np.full((6, 3), 1 / 3) - np.eye(3)[y]) / 6
  np.testing.assert_allclose(trained["kernel"], -0.5 * grad, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(trained["bias"], -0.5 * (1 / 3 - np.bincount(y) / 6), atol=1e-7)


def test_linearly_separable_features_are_classified_perfectly():
  rng = np.random.default_rng(2)
  centres = 3.0 * np.eye(4)[:, :3]  # classes 0..2 along the axes, class 3 at the origin
  labels = np.repeat(np.arange(4), 30)
  features = centres[labels] + 0.2 * rng.normal(size=(120, 3))
  order = rng.permutation(120)
  train, test = order[:80], order[80:]
  options = linear_probe.ProbeOptions(epochs=20, batch_size=16, base_learning_rate=16.0)
  accuracy = linear_probe.linear_probe_accuracy(features[train], labels[train], features[test],
                                                labels[test], num_classes=4, options=options)
  assert accuracy == 1.0
  # shuffled labels carry no signal: far from perfect on the held-out half
  shuffled = rng.permutation(labels)
  chance = linear_probe.linear_probe_accuracy(features[train], shuffled[train], features[test],
                                              shuffled[test], num_classes=4, options=options)
  assert chance < 0.75
  with pytest.raises(ValueError, match=r"lie in \[0, 3\)"):
    linear_probe.linear_probe_accuracy(features, labels, features, labels, num_classes=3)
