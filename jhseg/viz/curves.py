"""LRF and FDF curves against the threshold, like Fig. 5 of Lapertot, Chierchia, Perret.

One axes, fractions against the threshold t: per method one colour; its
Level Recovery Fraction per ground-truth level with one line style per level
(the coarsest level solid, the next dashed, ...), and its False Discovery
Fraction dotted. A well-trained hierarchy keeps the object level up to high
thresholds, loses the part level around the middle, and has a low FDF.
"""
from __future__ import annotations

import os
from typing import Mapping

import numpy as np
from matplotlib.figure import Figure

from jhseg.viz import _canvas
from jhseg.viz import segments

LEVEL_LINESTYLES = ("-", "--", "-.", (0, (5, 1, 1, 1, 1, 1)))
FDF_LINESTYLE = ":"


def _as_methods(results: Mapping) -> dict[str, Mapping]:
  """A single `LevelRecoveryAccumulator.result()` or {method name: result}."""
  if "lrf" in results and "fdf" in results:
    return {"": results}
  for name, result in results.items():
    if not isinstance(result, Mapping) or not {"lrf", "fdf", "thresholds", "levels"} <= set(
        result):
      raise ValueError(f"lrf_fdf_figure: results[{name!r}] must be a "
                       f"LevelRecoveryAccumulator.result() dict (thresholds, levels, lrf, fdf)")
  return dict(results)


def _level_name(level: float, level_names: Mapping[float, str] | None) -> str:
  if level_names and level in level_names:
    return level_names[level]
  return f"level {level:g}"


def lrf_fdf_figure(results: Mapping, *, level_names: Mapping[float, str] | None = None,
                   title: str | None = None, size: tuple[float, float] = (6.0, 4.0)) -> Figure:
  """LRF per level and FDF against the threshold for one or several methods.

  Args:
    results: a `LevelRecoveryAccumulator.result()` dict, or {name: result}.
    level_names: optional names of the levels, e.g. {1.0: "objects", 0.5: "parts"}.
    title: optional axes title.
  """
  methods = _as_methods(results)
  palette = segments.label_palette(max(len(methods), 1))
  figure = _canvas.new_figure(width=size[0], height=size[1])
  ax = figure.subplots()
  for colour, (name, result) in zip(palette, methods.items()):
    thresholds = np.asarray(result["thresholds"])
    levels = list(result["levels"])
    prefix = f"{name}: " if name else ""
    # Coarsest (highest) level first, so objects are solid and parts dashed.
    for rank, index in enumerate(np.argsort(levels)[::-1]):
      ax.plot(thresholds, np.asarray(result["lrf"])[index], color=colour,
              linestyle=LEVEL_LINESTYLES[rank % len(LEVEL_LINESTYLES)],
              label=f"{prefix}LRF {_level_name(levels[index], level_names)}")
    ax.plot(thresholds, np.asarray(result["fdf"]), color=colour, linestyle=FDF_LINESTYLE,
            label=f"{prefix}FDF")
  ax.set_xlabel("threshold t")
  ax.set_ylabel("fraction")
  ax.set_xlim(0, 1)
  ax.set_ylim(0, 1.02)
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize="small", loc="best")
  if title:
    ax.set_title(title)
  figure.tight_layout()
  return figure


def save_lrf_fdf_png(path: str | os.PathLike, results: Mapping, **kwargs) -> str:
  """Writes `lrf_fdf_figure(results, ...)` as a PNG; returns the path."""
  return _canvas.save_png(lrf_fdf_figure(results, **kwargs), path)
