"""A model with NumPy-random values, for tests whose initial values are not under test."""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def numpy_initialised(build):
  """`build()`'s model with NumPy-random values: eager JAX initialisation compiles one
  program per parameter shape (minutes on the shared CPU); initial values are not tested."""
  model = nnx.eval_shape(build)
  rng = np.random.default_rng(0)
  for index, (path, variable) in enumerate(nnx.iter_graph(model)):
    if not isinstance(variable, nnx.Variable):
      continue
    if isinstance(variable, nnx.RngKey):
      variable.set_value(jax.random.key(index))
    elif isinstance(variable, nnx.RngCount):
      variable.set_value(jnp.zeros((), jnp.uint32))
    elif path[-1] in ("var", "scale"):
      variable.set_value(jnp.ones(variable.shape, jnp.float32))
    elif path[-1] in ("mean", "bias"):
      variable.set_value(jnp.zeros(variable.shape, jnp.float32))
    else:
      fan_in = int(np.prod(variable.shape[:-1])) if len(variable.shape) > 1 else 1
      variable.set_value(jnp.asarray(rng.normal(size=variable.shape) / np.sqrt(fan_in),
                                     jnp.float32))
  return model
