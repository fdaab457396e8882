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


def write_boundary_report(out_dir: str, step: int, scalars: Mapping[str, float],
                          curves: Mapping[str, Any], *, labels: Mapping[str, str],
                          title: str) -> None:
  """`summary.json` (the scalars and each method's boundary PR curve) and `pr_curve.png`
  (one curve per method, named by `labels[method]`, with its ODS point).

  `curves` maps a method to its `jhseg.metrics.boundary.BoundaryResult`.
  """
  from jhseg.viz import pr_curve  # pylint: disable=g-import-not-at-top  (matplotlib)
  os.makedirs(out_dir, exist_ok=True)
  write_summary(out_dir, {
      "step": step, "scalars": scalars,
      "boundary": {name: {**b.summary(), "thresholds": b.thresholds, "recall": b.recall,
                          "precision": b.precision} for name, b in curves.items()}})
  pr_curve.save_pr_curve_png(
      os.path.join(out_dir, "pr_curve.png"),
      {labels[k]: (b.recall, b.precision) for k, b in curves.items()},
      ods_points={labels[k]: (b.ods_recall, b.ods_precision) for k, b in curves.items()},
      title=title)
