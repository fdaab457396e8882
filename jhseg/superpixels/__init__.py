"""Superpixels on the host (NumPy), one home for every method's over-segmentation.

Each method returns an (H, W) int32 label map numbered 0..n-1; `labels.pad_superpixels`
turns it into fixed-shape arrays (labels + a mask of the used ids) for batching.
`METHODS` maps a name to the function `f(image, **options) -> labels`; SEEDS (CAST)
registers here as "seeds" from `jhseg.superpixels.seeds`.
"""
from typing import Callable

from jhseg.superpixels.labels import pad_superpixels
from jhseg.superpixels.labels import relabel_consecutive
from jhseg.superpixels.labels import superpixel_segment_labels
from jhseg.superpixels.seeds import seeds_label_map
from jhseg.superpixels.slic import make_slic_transform
from jhseg.superpixels.slic import slic_opencv_superpixels
from jhseg.superpixels.slic import slic_superpixels

# name -> f(image (H, W, 3), **options) -> (H, W) int32 labels 0..n-1
METHODS: dict[str, Callable] = {
    "slic": slic_superpixels,
    "slic_opencv": slic_opencv_superpixels,
    "seeds": seeds_label_map,
}


def get_method(name: str) -> Callable:
  """The superpixel function called `name`; the error lists the valid names."""
  if name not in METHODS:
    raise ValueError(f"unknown superpixel method {name!r}; valid names: {sorted(METHODS)}")
  return METHODS[name]


__all__ = [
    "METHODS",
    "get_method",
    "make_slic_transform",
    "pad_superpixels",
    "relabel_consecutive",
    "slic_opencv_superpixels",
    "slic_superpixels",
    "superpixel_segment_labels",
]
