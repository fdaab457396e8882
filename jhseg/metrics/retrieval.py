"""Semantic labels by segment retrieval (HSG sec. 4 and supplement 5.8, after SegSort).

HSG scores unsupervised semantic segmentation by nearest-neighbour retrieval, the
inference of the authors' code (twke18/HSG `pyscripts/inference/prototype.py`,
`pyscripts/inference/inference.py`, `hsg/models/predictions/segsort.py`):

1. Memory: every image of the labelled set is cut into G0 segments (spherical k-means
   on its embeddings); each segment keeps its unit-length mean embedding and the
   majority label of its pixels, the void label (255 on VOC) being one of the
   candidates (`segment_majority_labels`). Segments whose majority is void are dropped
   (`memory_from_segments`).
2. Query: every G0 segment of a test image takes the majority label of its k = 20
   most cosine-similar memory segments, each neighbour one unweighted vote, ties to
   the smaller class id (`knn_vote`); its pixels get that label.
3. mIoU over the test pixels whose label is not void (`jhseg.metrics.semantic`).

CAST (Ke, Mo, Yu, ICLR 2024, appendix E.5) is scored by the same retrieval with its own
segments instead of k-means ones: `segment_prototypes` pools per-superpixel features
over a level's segments, weighting every superpixel by its pixels (the authors' mean of
unit pixel embeddings, each pixel carrying its superpixel's embedding), as
`jhseg.tasks.cast_evals` does.

Faithfulness: the same procedure and values (k = 20, unweighted majority, void-majority
memory segments dropped). The authors' majority ties go to the smaller label id as
here (torch.argmax); the memory is the whole labelled split in their runs, a
configurable number of images in jhseg's evaluation (`eval.num_memory_examples`).
"""
from __future__ import annotations

import numpy as np

# The authors' (and VOC's) void label.
VOID = 255
# Neighbours per query segment in the authors' `segsort.predictions`.
NUM_NEIGHBOURS = 20


def segment_majority_labels(segments: np.ndarray, classes: np.ndarray, num_segments: int,
                            num_classes: int) -> np.ndarray:
  """Majority label of every segment id in [0, num_segments); void counts as a label.

  Args:
    segments: (P,) int segment id of each pixel; negative ids (padding) are skipped.
    classes: (P,) int label of each pixel; values outside [0, num_classes) (255 void,
      or -1 padding) all vote for "void".
    num_segments: number of segment ids.
    num_classes: number of real classes.

  Returns:
    (num_segments,) int: the majority class, or -1 when void wins or the segment has
    no pixel. Ties go to the smaller class id, and a class beats void on a tie (void
    is ordered last, as 255 is in the authors' argmax).
  """
  segments = np.asarray(segments).ravel()
  classes = np.asarray(classes).ravel()
  if segments.shape != classes.shape:
    raise ValueError(f"segment_majority_labels: segments {segments.shape} and classes "
                     f"{classes.shape} must have one entry per pixel")
  keep = segments >= 0
  votes = np.where((classes >= 0) & (classes < num_classes), classes, num_classes)[keep]
  counts = np.bincount(segments[keep] * (num_classes + 1) + votes,
                       minlength=num_segments * (num_classes + 1))
  counts = counts.reshape(num_segments, num_classes + 1)
  majority = np.argmax(counts, axis=1)
  return np.where((counts.sum(1) > 0) & (majority < num_classes), majority, -1)


def memory_from_segments(prototypes: np.ndarray, valid: np.ndarray,
                         majority: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The memory rows of one image: its non-empty segments whose majority is a class.

  prototypes (S, D), valid (S,) bool, majority (S,) from `segment_majority_labels`.
  Returns (features (M, D), labels (M,)).
  """
  keep = np.asarray(valid, bool) & (np.asarray(majority) >= 0)
  return np.asarray(prototypes)[keep], np.asarray(majority)[keep]


def segment_prototypes(superpixel_features: np.ndarray, superpixels: np.ndarray,
                       segments: np.ndarray, num_segments: int
                       ) -> tuple[np.ndarray, np.ndarray]:
  """Unit-length pixel-weighted mean feature of every segment id.

    p_k = sum_{pixels x in segment k} u(f_{s(x)}) / |...|,   u(f) = f / |f|

  Args:
    superpixel_features: (S, D) feature of every superpixel id.
    superpixels: (H, W) superpixel id of each pixel (negative = padding, skipped).
    segments: (H, W) segment id in [0, num_segments) of each pixel (same pixels).
    num_segments: number of segment ids.

  Returns:
    prototypes (num_segments, D) (zero rows for empty segments) and (num_segments,)
    bool non-empty.
  """
  features = np.asarray(superpixel_features, np.float64)
  superpixels, segments = np.asarray(superpixels).ravel(), np.asarray(segments).ravel()
  if superpixels.shape != segments.shape:
    raise ValueError(f"segment_prototypes: superpixels {superpixels.shape} and segments "
                     f"{segments.shape} must have one entry per pixel")
  keep = superpixels >= 0
  unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
  sums = np.zeros((num_segments, features.shape[1]))
  np.add.at(sums, segments[keep], unit[superpixels[keep]])
  norms = np.linalg.norm(sums, axis=1, keepdims=True)
  valid = np.bincount(segments[keep], minlength=num_segments)[:num_segments] > 0
  return np.where(norms > 0, sums / np.maximum(norms, 1e-12), 0.0), valid


def knn_vote(queries: np.ndarray, memory: np.ndarray, memory_labels: np.ndarray, *,
             num_classes: int, k: int = NUM_NEIGHBOURS) -> np.ndarray:
  """Majority class of the k most cosine-similar memory rows, one vote each.

  queries (Q, D) and memory (M, D) unit vectors; memory_labels (M,) in [0, num_classes).
  Ties between classes go to the smaller class id. k is capped at M.
  """
  if len(memory) == 0:
    raise ValueError("hsg retrieval: the segment memory is empty (no labelled segment in the "
                     "memory images; check config.eval.label_field)")
  memory_labels = np.asarray(memory_labels)
  if memory_labels.min() < 0 or memory_labels.max() >= num_classes:
    raise ValueError(f"knn_vote: memory labels must lie in [0, {num_classes}), got "
                     f"[{memory_labels.min()}, {memory_labels.max()}]")
  k = min(k, len(memory))
  sims = np.asarray(queries) @ np.asarray(memory).T
  nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
  votes = np.zeros((len(sims), num_classes))
  np.add.at(votes, (np.repeat(np.arange(len(sims)), k), memory_labels[nearest].ravel()), 1)
  return np.argmax(votes, axis=1)
