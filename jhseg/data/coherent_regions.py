"""HSG's coherent regions G_e: an edge map -> watershed hierarchy -> one cut per image.

Ke, Hwang, Guo, Wang, Yu, "Unsupervised Hierarchical Semantic Segmentation with
Multiview Cosegmentation and Clustering Transformers", CVPR 2022, sec. 3.1: during
training every k-means segment of G0 is split by the image's coherent regions G_e,
an oversegmentation from an OWT-UCM contour hierarchy.

Pipeline (once per image, as a data transform, never in the training step):

1. Edge map E (H, W) in [0, 1] from a pluggable source (`EDGE_SOURCES`):
   'builtin' (`ColourGradientEdges`, offline, default), 'opencv_sed'
   (`OpenCVStructuredEdges`, OpenCV's structured-edge detector -- the detector the
   authors used for VOC/COCO, SE-OWT-UCM) or 'stored' (`StoredEdges`, an edge map
   stored in the dataset).
2. Pixel-edge weights w({p, q}) = (E_p + E_q) / 2 (the 'mean' reduction of
   `jhseg.grid.pixel_edges`, as Higra's own structured-edges + mean-pb example):
   the watershed cut then falls exactly between the two pixels straddling a
   symmetric ridge ('max' would make a plateau of three equal edges there and
   shift boundaries by a pixel). Consequence: a contour one pixel wide of
   strength s gives boundary strength s / 2; a ridge two or more pixels wide gives
   its crest value.
3. The watershed hierarchy of OWT-UCM's last step (`ucm_mean_pb`): watershed
   basins of the weights, merged greedily by the mean weight along their common
   boundary (average linkage), via `jhseg.hierarchy.ucm_from_dissimilarity`.
   Regions smaller than `min_region_area` pixels are removed (0 = none, as OWT-UCM).
   With the texture-sensitive 'builtin' edges, many of the 48 regions are then specks
   of a few pixels; min_region_area ~ 100 spends the budget on larger regions
   (checked by eye on VOC/BSDS samples; not the authors' setting).
4. The cut chosen as in the authors' `tools/generate_se_owt_ucm.m`: thresholds
   t_k = start_threshold + k * threshold_step, k = 0, 1, ... are tried in order and
   the first cut (boundaries: UCM edges > t_k; regions: 4-connected) with **at most**
   `max_regions` regions is kept. This is the finest cut on that threshold grid
   whose threshold is >= start_threshold and whose region count is <= max_regions.
   Defaults follow that script for VOC/COCO: start 0.25, step 0.01, at most 48
   regions (the script tests `numel(unique(labels)) <= 48`; the paper says "fewer
   than 48"; we follow the code). The paper uses at most 1024 regions for
   Cityscapes/KITTI-STEP and 128 for Potsdam (set `max_regions`); the authors'
   Cityscapes script (PMI edges) starts at 0.05.

Not reproduced (documented choices): OWT's orientation reweighting of boundary
arcs and the spectral globalisation (sPb) of the authors' script -- both need the
gPb machinery; the hierarchy is built on the edge map alone. Regions are labelled
with 4-connectivity (MATLAB's `bwlabel` on the double-size ucm2 uses 8).

Output of `CoherentRegions`: field `regions`, (H, W) int32 labels 0..n-1 (n <=
max_regions) numbered by first pixel in raster order.

Once per image: the authors compute G_e offline, once per training image, before
training. Here `CoherentRegions` computes it lazily, the first time it sees an image,
and caches it (`jhseg.data.cache.ExampleCache`: in memory by default, or one file per
image in `cache_dir`), so later epochs only decode the stored labels.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
from typing import Any, Mapping

import numpy as np
from scipy import ndimage

from jhseg import hierarchy
# The cache's pieces, also importable from here (MemoryStore, DiskStore: the stores).
from jhseg.data.cache import (CacheEntryError, DiskStore, ExampleCache, MemoryStore,  # noqa: F401
                              decode_arrays, encode_arrays, make_store)
from jhseg.data.options import checked_options
from jhseg.hierarchy import edge_hierarchy

Example = dict[str, np.ndarray]


def as_float_image(image, *, field: str = "image") -> np.ndarray:
  """(H, W, 3) float32 in [0, 1] from uint8 or float input; names `field` on bad input."""
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"field {field!r}: expected an (H, W, 3) RGB image; got shape {image.shape}")
  if image.dtype == np.uint8:
    return image.astype(np.float32) / 255.0
  if not np.issubdtype(image.dtype, np.floating):
    raise ValueError(f"field {field!r}: expected uint8 or float in [0, 1]; got dtype {image.dtype}")
  return image.astype(np.float32)


# --- Edge sources: example -> (H, W) float32 edge map in [0, 1]. ---
# Besides `__call__`, each source tells the cache what its result depends on:
# `fields_read()` (example fields hashed into the cache key) and `cache_identity()`
# (JSON-able settings, hashed into the key too).


@dataclasses.dataclass(frozen=True)
class ColourGradientEdges:
  """Multi-scale colour gradient magnitude: a built-in, offline edge detector.

  E(x) = clip(mean_s sqrt(2 pi) s ||grad (G_s * I)(x)||_2, 0, 1), the Euclidean norm
  taken over the RGB channels of the Gaussian-derivative gradients at scales s in
  `sigmas` (pixels). Multiplying by s makes the responses of the scales comparable
  (scale-normalised derivatives, Lindeberg 1998) and by sqrt(2 pi) calibrates them:
  an ideal step of RGB contrast c (Euclidean) gives E = c on its centre line, so
  HSG's start threshold 0.25 reads "a colour step of about 0.25". The
  normalisation is absolute (no per-image maximum): flat images get no edges.
  """
  sigmas: tuple[float, ...] = (1.0, 2.0, 4.0)

  def __call__(self, example: Example) -> np.ndarray:
    image = as_float_image(example["image"])  # float32: the filters run twice as fast
    response = np.zeros(image.shape[:2], np.float32)
    for sigma in self.sigmas:
      squared = sum(np.square(ndimage.gaussian_gradient_magnitude(image[..., c], sigma,
                                                                  mode="nearest"))
                    for c in range(3))
      response += np.float32(np.sqrt(2.0 * np.pi) * sigma) * np.sqrt(squared)
    return np.clip(response / len(self.sigmas), 0.0, 1.0).astype(np.float32)

  def fields_read(self) -> tuple[str, ...]:
    return ("image",)

  def cache_identity(self) -> dict[str, Any]:
    return {"sigmas": [float(s) for s in self.sigmas]}


@dataclasses.dataclass(frozen=True)
class OpenCVStructuredEdges:
  """OpenCV's structured-edge detector (Dollar & Zitnick), `cv2.ximgproc`.

  Needs the `opencv-contrib-python` package and the trained forest, e.g.
  `model.yml.gz` from opencv_extra (testdata/cv/ximgproc/model.yml.gz).
  `detectEdges` takes an RGB float32 image in [0, 1] and returns edges in [0, 1].
  """
  model_path: str | None = None

  def __post_init__(self):
    if not self.model_path:
      raise ValueError("edge source 'opencv_sed': option `model_path` (the structured-edge "
                       "model file, e.g. model.yml.gz from opencv_extra) is required")
    if not pathlib.Path(self.model_path).is_file():
      raise FileNotFoundError(f"edge source 'opencv_sed': model file {self.model_path!r} not found "
                              "(expected OpenCV's structured-edge forest, e.g. model.yml.gz)")
    _ = self._detector()  # fail at construction, not on the first example

  def _detector(self):
    try:
      import cv2  # pylint: disable=g-import-not-at-top  # optional dependency
    except ImportError as err:
      raise ImportError("edge source 'opencv_sed' needs OpenCV with the contrib modules: "
                        "pip install opencv-contrib-python") from err
    if not hasattr(cv2, "ximgproc"):
      raise ImportError("edge source 'opencv_sed': the installed cv2 lacks `ximgproc`; "
                        "install opencv-contrib-python instead of opencv-python")
    return cv2.ximgproc.createStructuredEdgeDetector(str(self.model_path))

  def __call__(self, example: Example) -> np.ndarray:
    image = np.ascontiguousarray(as_float_image(example["image"]))
    # A detector per call: OpenCV objects are not shared between grain worker threads.
    return np.clip(self._detector().detectEdges(image), 0.0, 1.0).astype(np.float32)

  def fields_read(self) -> tuple[str, ...]:
    return ("image",)

  def cache_identity(self) -> dict[str, Any]:
    # The model's bytes, not its path: a retrained forest saved under the same name
    # must not reuse regions cached with the old one.
    digest = hashlib.sha256()
    with open(self.model_path, "rb") as model:
      for chunk in iter(lambda: model.read(1 << 20), b""):
        digest.update(chunk)
    return {"model_sha256": digest.hexdigest()}


@dataclasses.dataclass(frozen=True)
class StoredEdges:
  """An edge map stored in the dataset under `feature`: (H, W) or (H, W, 1), float in
  [0, 1] or uint8 (divided by 255)."""
  feature: str = "edges"

  def __call__(self, example: Example) -> np.ndarray:
    if self.feature not in example:
      raise KeyError(f"edge source 'stored': the example has no field {self.feature!r} "
                     f"(fields: {sorted(example)}); set option `feature`")
    edges = np.asarray(example[self.feature])
    if edges.ndim == 3 and edges.shape[-1] == 1:
      edges = edges[..., 0]
    height, width = np.shape(example["image"])[:2]
    if edges.shape != (height, width):
      raise ValueError(f"field {self.feature!r}: expected an (H, W) = {(height, width)} edge map "
                       f"like the image; got shape {edges.shape}")
    if edges.dtype == np.uint8:
      return edges.astype(np.float32) / 255.0
    edges = edges.astype(np.float32)
    if edges.size and not (np.all(np.isfinite(edges)) and 0 <= edges.min() and edges.max() <= 1):
      raise ValueError(f"field {self.feature!r}: expected edge strengths in [0, 1]; got range "
                       f"[{np.nanmin(edges)}, {np.nanmax(edges)}]")
    return edges

  def fields_read(self) -> tuple[str, ...]:
    return ("image", self.feature)  # the image's shape is checked against the edge map

  def cache_identity(self) -> dict[str, Any]:
    return {"feature": self.feature}


# name -> class; options are the class's fields.
EDGE_SOURCES: dict[str, type] = {
    "builtin": ColourGradientEdges,
    "opencv_sed": OpenCVStructuredEdges,
    "stored": StoredEdges,
}


def make_edge_source(name: str, **options):
  """The edge source `name` of `EDGE_SOURCES` built with `options`."""
  if name not in EDGE_SOURCES:
    raise ValueError(f"unknown edge source {name!r}; valid names: {sorted(EDGE_SOURCES)}")
  cls = EDGE_SOURCES[name]
  fields = {f.name for f in dataclasses.fields(cls)}
  unknown = set(options) - fields
  if unknown:
    raise ValueError(f"edge source {name!r}: unknown option(s) {sorted(unknown)}; valid options: "
                     f"{sorted(fields)}")
  return cls(**options)


# --- Hierarchy and cut. ---


def edge_map_ucm(edge_map: np.ndarray, *,
                 min_region_area: float = 0) -> tuple[np.ndarray, np.ndarray]:
  """UCM (h, v) float64 of an (H, W) edge map: steps 2-3 of the module docstring."""
  edges = np.asarray(edge_map, np.float64)
  if edges.ndim != 2:
    raise ValueError(f"edge_map_ucm: argument `edge_map` must be (H, W); got shape {edges.shape}")
  h = 0.5 * (edges[:, 1:] + edges[:, :-1])
  v = 0.5 * (edges[1:, :] + edges[:-1, :])
  return hierarchy.ucm_from_dissimilarity(h, v, min_region_area=min_region_area)


def raised_threshold_cut(h, v, *, max_regions: int, start_threshold: float,
                         threshold_step: float) -> tuple[np.ndarray, float]:
  """First cut of t_k = start + k * step (k = 0, 1, ...) with at most `max_regions` regions.

  Step 4 of the module docstring. Thresholds are compared in float64.

  Returns:
    (labels (H, W) int32 0..n-1 in raster order of first pixels, the threshold t_k used).
  """
  if not threshold_step > 0:
    raise ValueError(f"raised_threshold_cut: `threshold_step` must be > 0; got {threshold_step}")
  h, v = np.asarray(h, np.float64), np.asarray(v, np.float64)
  top = max(float(h.max(initial=0.0)), float(v.max(initial=0.0)))
  # Enough steps to pass the top altitude, where the cut is a single region.
  num_steps = max(int(np.ceil((top - start_threshold) / threshold_step)) + 2, 1)
  thresholds = start_threshold + threshold_step * np.arange(num_steps, dtype=np.float64)
  labels, k = edge_hierarchy.first_cut_with_at_most(h, v, thresholds=thresholds,
                                                    max_regions=max_regions)
  return labels, float(thresholds[k])


def coherent_regions(edge_map: np.ndarray, *, max_regions: int = 48, start_threshold: float = 0.25,
                     threshold_step: float = 0.01, min_region_area: float = 0) -> np.ndarray:
  """G_e of one image: (H, W) int32 labels 0..n-1, n <= max_regions (module docstring)."""
  h, v = edge_map_ucm(edge_map, min_region_area=min_region_area)
  labels, _ = raised_threshold_cut(h, v, max_regions=max_regions, start_threshold=start_threshold,
                                   threshold_step=threshold_step)
  return labels


# --- Cache: G_e once per image. ---

# Hashed into every cache key: bump it when the computation of G_e changes, so that
# files cached by older code stop matching.
CACHE_VERSION = 1


def encode_regions(labels: np.ndarray, *, key: str) -> bytes:
  """Bytes of a compressed .npz with `regions` (smallest unsigned dtype) and its `key`."""
  return encode_arrays(_stored_regions(labels), key=key)


def _stored_regions(labels: np.ndarray) -> dict[str, np.ndarray]:
  top = int(labels.max(initial=0))
  dtype = np.uint8 if top <= 0xFF else np.uint16 if top <= 0xFFFF else np.uint32
  return {"regions": labels.astype(dtype)}


def _checked_regions(labels: np.ndarray, *, shape: tuple[int, int],
                     max_regions: int) -> np.ndarray:
  if labels.shape != tuple(shape) or labels.dtype.kind != "u":
    raise CacheEntryError(f"expected unsigned labels of shape {tuple(shape)}; got "
                          f"{labels.dtype} {labels.shape}")
  if labels.size and labels.max() >= max_regions:
    raise CacheEntryError(f"label {labels.max()} >= max_regions {max_regions}")
  return labels.astype(np.int32)


def decode_regions(data: bytes, *, key: str, shape: tuple[int, int],
                   max_regions: int) -> np.ndarray:
  """Labels (H, W) int32 (a fresh array) of an `encode_regions` entry; checks that it
  is `key`'s, of `shape`, with labels < max_regions; CacheEntryError otherwise."""
  labels = decode_arrays(data, key=key, names=("regions",))["regions"]
  return _checked_regions(labels, shape=shape, max_regions=max_regions)


class CoherentRegions:
  """Data transform adding `output_field` (default `regions`): G_e of `example['image']`.

  Deterministic (not a random transform): apply it before the multiview augmentation
  so that every view carries the same regions.

  Once per image: the paper computes G_e offline, once per training image. Here it is
  computed the first time the transform sees an image and cached, so that later
  epochs only decode it (about a millisecond instead of a fraction of a second; see
  bench/hsg_data.py):
    * `cache_dir=""` (default): in this process's memory (`MemoryStore`), at most
      `cache_entries` images, least recently used evicted first (0 = no cache).
      Entries are kept compressed (a few KB for 48 regions at VOC size), so the
      default 4096 entries take tens of MB. Each grain worker process has its own.
    * `cache_dir=PATH`: one compressed .npz file per image under PATH (`DiskStore`),
      written atomically, shared by threads, processes and later runs;
      `cache_entries` is then unused and PATH is never pruned (delete it to reclaim
      the space).
  The key hashes the bytes, shape and dtype of every example field the edge source
  reads (`image`, plus the edge map for 'stored'), the edge source's name and
  settings (for 'opencv_sed' the model file's bytes), max_regions, start_threshold,
  threshold_step, min_region_area and `CACHE_VERSION`: a changed setting never reads
  stale regions. An entry that cannot be read back (truncated, corrupted, another
  key's, wrong shape or labels) is recomputed and overwritten, with a RuntimeWarning
  naming it: the cache holds derived data only, so recomputing is always correct and
  one damaged file need not stop a training run.
  Thread-safe: grain calls transforms from several threads. Two threads meeting the
  same new image at once may both compute it (same result) instead of waiting.
  """

  def __init__(self, *, edge_source: str = "builtin", edge_options: Mapping[str, Any] | None = None,
               max_regions: int = 48, start_threshold: float = 0.25, threshold_step: float = 0.01,
               min_region_area: float = 0, output_field: str = "regions",
               cache_dir: str | os.PathLike | None = "", cache_entries: int = 4096):
    self.edges = make_edge_source(edge_source, **dict(edge_options or {}))
    self.max_regions = int(max_regions)
    self.start_threshold = float(start_threshold)
    self.threshold_step = float(threshold_step)
    self.min_region_area = min_region_area
    self.output_field = output_field
    if self.max_regions < 1 or not self.threshold_step > 0:
      raise ValueError(f"CoherentRegions: need max_regions >= 1 and threshold_step > 0; got "
                       f"{max_regions}, {threshold_step}")
    self.cache_dir = str(cache_dir or "")
    self.cache_entries = int(cache_entries)
    store = make_store(self.cache_dir, self.cache_entries, owner="CoherentRegions")
    # Settings read once here, so that the key does not depend on later changes to
    # `self.edges` (the model file's hash is read only when there is a cache).
    settings = {} if store is None else {
        "version": CACHE_VERSION, "edge_source": edge_source,
        "edge_settings": self.edges.cache_identity(), "max_regions": self.max_regions,
        "start_threshold": self.start_threshold, "threshold_step": self.threshold_step,
        "min_region_area": float(self.min_region_area)}
    self.cache = ExampleCache(settings=settings, fields=self.edges.fields_read(),
                              names=("regions",), cache_dir=self.cache_dir,
                              cache_entries=self.cache_entries, owner="CoherentRegions")

  @property
  def store(self):
    return self.cache.store

  @classmethod
  def from_config(cls, config: Mapping[str, Any] | None, *,
                  where: str = "config.data.augment.coherent_regions") -> "CoherentRegions":
    """From a mapping (e.g. `config.data.augment.coherent_regions`); unknown keys are an error."""
    config = checked_options(
        config, ("edge_source", "edge_options", "max_regions", "start_threshold",
                 "threshold_step", "min_region_area", "output_field", "cache_dir",
                 "cache_entries"), where=where)
    if "edge_options" in config and config["edge_options"] is not None:
      config["edge_options"] = dict(config["edge_options"])
    return cls(**config)

  def cache_key(self, example: Example) -> str:
    """Hex key of `example`'s G_e under this transform's settings (class docstring)."""
    return self.cache.key(example)

  def _compute(self, example: Example) -> np.ndarray:
    return coherent_regions(self.edges(example), max_regions=self.max_regions,
                            start_threshold=self.start_threshold,
                            threshold_step=self.threshold_step,
                            min_region_area=self.min_region_area)

  def regions(self, example: Example) -> np.ndarray:
    """G_e of `example`: from the cache if there, else computed (and stored)."""
    shape = np.shape(example["image"])[:2]
    result = self.cache.get_or_compute(
        example, lambda e: {"regions": self._compute(e)},
        encode=lambda r: _stored_regions(r["regions"]),
        decode=lambda r: {"regions": _checked_regions(r["regions"], shape=shape,
                                                      max_regions=self.max_regions)})
    return result["regions"]

  def __call__(self, example: Example) -> Example:
    if "image" not in example:
      raise KeyError(f"CoherentRegions: the example has no field 'image' "
                     f"(fields: {sorted(example)})")
    out = dict(example)
    out[self.output_field] = self.regions(example)
    return out
