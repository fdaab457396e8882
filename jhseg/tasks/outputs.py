"""Host-side helpers shared by the tasks' evaluations."""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import numpy as np


def to_host(tree: Any) -> Any:
  """Host NumPy copies of (possibly multi-process) global arrays."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # Only multi-process runs need it.
    return multihost_utils.process_allgather(tree, tiled=True)
  return jax.device_get(tree)


def jsonable(value: Any) -> Any:
  """Plain JSON types for NumPy scalars/arrays; non-finite floats become null."""
  if isinstance(value, Mapping):
    return {str(k): jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [jsonable(v) for v in value]
  if isinstance(value, np.ndarray):
    return jsonable(value.tolist())
  if isinstance(value, (np.floating, float)):
    return None if not np.isfinite(value) else float(value)
  if isinstance(value, (np.integer, np.bool_)):
    return value.item()
  return value


def write_summary(out_dir: str, summary: Mapping[str, Any]) -> str:
  """Writes `out_dir/summary.json` (only process 0) and returns its path."""
  path = os.path.join(out_dir, "summary.json")
  if jax.process_index() == 0:
    os.makedirs(out_dir, exist_ok=True)
    with open(path, "w") as f:
      json.dump(jsonable(summary), f, indent=2)
  return path
