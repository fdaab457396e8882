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
  """A single `UcmEvaluation.result()` or {method name: result}."""
  if "lrf" in results and "fdf" in results:
    return {"": results}
  for name, result in results.items():
    if not isinstance(result, Mapping) or not {"lrf", "fdf", "thresholds", "levels"} <= set(
        result):
      raise ValueError(f"lrf_fdf_figure: results[{name!r}] must be a "
                       f"UcmEvaluation.result() dict (thresholds, levels, lrf, fdf)")
  return dict(results)


def _level_name(level: float, level_names: Mapping[float, str] | None) -> str:
  if level_names and level in level_names:
    return level_names[level]
  return f"level {level:g}"


def _draw_method(ax, colour, name: str, result: Mapping,
                 level_names: Mapping[float, str] | None) -> None:
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


def _style_axes(ax) -> None:
  ax.set_xlim(0, 1)
  ax.set_ylim(0, 1.02)
  ax.grid(True, alpha=0.3)


def lrf_fdf_figure(results: Mapping, *, level_names: Mapping[float, str] | None = None,
                   title: str | None = None, size: tuple[float, float] = (6.0, 4.0)) -> Figure:
  """LRF per level and FDF against the threshold for one or several methods.

  Args:
    results: a `UcmEvaluation.result()` dict, or {name: result}.
    level_names: optional names of the levels, e.g. {1.0: "objects", 0.5: "parts"}.
    title: optional axes title.
  """
  methods = _as_methods(results)
  palette = segments.label_palette(max(len(methods), 1))
  figure = _canvas.new_figure(width=size[0], height=size[1])
  ax = figure.subplots()
  for colour, (name, result) in zip(palette, methods.items()):
    _draw_method(ax, colour, name, result, level_names)
  ax.set_xlabel("threshold t")
  ax.set_ylabel("fraction")
  _style_axes(ax)
  ax.legend(fontsize="small", loc="best")
  if title:
    ax.set_title(title)
  figure.tight_layout()
  return figure


def save_lrf_fdf_png(path: str | os.PathLike, results: Mapping, **kwargs) -> str:
  """Writes `lrf_fdf_figure(results, ...)` as a PNG; returns the path."""
  return _canvas.save_png(lrf_fdf_figure(results, **kwargs), path)


def per_class_figure(result: Mapping, *, class_names: Mapping[int, str] | None = None,
                     level_names: Mapping[float, str] | None = None, columns: int = 5,
                     panel_size: float = 2.4) -> Figure:
  """Small multiples of LRF/FDF, one panel per object class (per-class crops).

  Args:
    result: a `UcmEvaluation.result()` with `per_class` entries.
    class_names: optional {class id: name} for the panel titles.
  """
  per_class = result.get("per_class") or {}
  if not per_class:
    raise ValueError("per_class_figure: the result has no per-class curves (pass "
                     "instance_classes to UcmEvaluation.add)")
  columns = max(1, min(columns, len(per_class)))
  rows = -(-len(per_class) // columns)
  figure = _canvas.new_figure(width=panel_size * columns, height=panel_size * rows + 0.3)
  axes = figure.subplots(rows, columns, squeeze=False).ravel()
  colour = segments.label_palette(1)[0]
  for ax, (class_id, curves_of_class) in zip(axes, per_class.items()):
    _draw_method(ax, colour, "", {"thresholds": result["thresholds"],
                                  "levels": result["levels"], **curves_of_class},
                 level_names)
    name = class_names.get(class_id, str(class_id)) if class_names else str(class_id)
    ax.set_title(f"{name} (n={curves_of_class['num_instances']})", fontsize="small")
    _style_axes(ax)
    ax.tick_params(labelsize="x-small")
  for ax in axes[len(per_class):]:
    ax.set_axis_off()
  axes[0].legend(fontsize="x-small", loc="best")
  figure.tight_layout()
  return figure


def save_per_class_png(path: str | os.PathLike, result: Mapping, **kwargs) -> str:
  """Writes `per_class_figure(result, ...)` as a PNG; returns the path."""
  return _canvas.save_png(per_class_figure(result, **kwargs), path)
