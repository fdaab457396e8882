"""A pyplot-free Figure on an Agg canvas, and saving it as PNG."""
from __future__ import annotations

import os

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def new_figure(*, width: float, height: float, dpi: int = 100) -> Figure:
  """Figure (inches) attached to its own Agg canvas."""
  figure = Figure(figsize=(width, height), dpi=dpi)
  FigureCanvasAgg(figure)
  return figure


def prepare_png_path(path: str | os.PathLike, *, caller: str) -> str:
  """`path` as a string, checked to end in .png, with its folder created."""
  path = os.fspath(path)
  if not path.lower().endswith(".png"):
    raise ValueError(f"{caller}: path must end in .png, got {path!r}")
  folder = os.path.dirname(path)
  if folder:
    os.makedirs(folder, exist_ok=True)
  return path


def save_png(figure: Figure, path: str | os.PathLike) -> str:
  """Writes `figure` to `path` (PNG), creating the folder; returns the path."""
  path = prepare_png_path(path, caller="save_png")
  figure.savefig(path, format="png")
  return path
