"""Reader for PASCAL-Context label maps (Mottaghi et al., CVPR 2014), official release format.

`trainval.tar.gz` from the PASCAL-Context page holds `trainval/<VOC id>.mat`, each with one
variable `LabelMap`: an HxW uint16 array of indices into the release's `labels.txt`
(459 classes, 1-based). The BGM_PC target of the paper is the binary boundary map of this
semantic partition (an edge is a boundary where the two labels differ).
"""
from __future__ import annotations

import os

import numpy as np
import scipy.io

from tfds_builders import bad_files


class ContextFormatError(bad_files.BadFileError):
  """A PASCAL-Context .mat file does not follow the release format."""


def read_label_map(path: os.PathLike | str) -> np.ndarray:
  """`LabelMap` of one `trainval/<id>.mat` as int32 HxW; raises ContextFormatError if malformed."""
  name = os.fspath(path)
  try:
    contents = scipy.io.loadmat(name)
  except Exception as error:  # scipy raises several types for unreadable files.
    raise ContextFormatError(f"{name}: not a readable MATLAB .mat file ({error})") from error
  if "LabelMap" not in contents:
    variables = sorted(k for k in contents if not k.startswith("__"))
    raise ContextFormatError(f"{name}: field `LabelMap`: expected a variable LabelMap (HxW "
                             f"uint16 class indices), got variables {variables}")
  label_map = contents["LabelMap"]
  if not isinstance(label_map, np.ndarray) or label_map.ndim != 2 or label_map.dtype.kind not in "iu":
    got = (f"{label_map.dtype} array of shape {label_map.shape}"
           if isinstance(label_map, np.ndarray) else type(label_map).__name__)
    raise ContextFormatError(f"{name}: field `LabelMap`: expected a 2-D integer array (HxW "
                             f"uint16 class indices), got {got}")
  return label_map.astype(np.int32)
