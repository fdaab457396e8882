"""Segment retrieval (HSG sec. 4 / supplement 5.8, the authors' inference) by hand."""
import numpy as np
import pytest

from jhseg.metrics import retrieval


def test_segment_majority_counts_void_as_a_label():
  # Segment 0: classes (2, 2, 255) -> 2. Segment 1: (1, 255, 255) -> void wins -> -1.
  # Segment 2: (3, 255) tie -> the class (void is ordered last). Segment 3: no pixel.
  # The pixel with segment -1 (padding) is skipped; -1 labels vote for void.
  segments = np.array([0, 0, 0, 1, 1, 1, 2, 2, -1])
  classes = np.array([2, 2, 255, 1, 255, -1, 3, 255, 0])
  np.testing.assert_array_equal(
      retrieval.segment_majority_labels(segments, classes, 4, 4), [2, -1, 3, -1])
  with pytest.raises(ValueError, match="one entry per pixel"):
    retrieval.segment_majority_labels(segments, classes[:-1], 4, 4)


def test_memory_drops_void_majority_and_empty_segments():
  protos = np.eye(3)
  rows, labels = retrieval.memory_from_segments(protos, np.array([True, True, False]),
                                                np.array([4, -1, 2]))
  np.testing.assert_array_equal(rows, protos[:1])
  np.testing.assert_array_equal(labels, [4])


def test_knn_vote_defaults_to_twenty_unweighted_neighbours():
  """30 memory rows: 12 of class 0 closest to the query, then 18 of class 1.

  k = 20 takes the 12 class-0 rows and 8 class-1 rows: class 0 wins 12 to 8, although
  similarity weighting is not involved either way. k = 30: class 1 wins 18 to 12.
  """
  angles = np.deg2rad(np.arange(30) * 2.0)
  memory = np.stack([np.cos(angles), np.sin(angles)], 1)
  labels = np.array([0] * 12 + [1] * 18)
  query = np.array([[1.0, 0.0]])
  assert retrieval.NUM_NEIGHBOURS == 20
  np.testing.assert_array_equal(retrieval.knn_vote(query, memory, labels, num_classes=2), [0])
  np.testing.assert_array_equal(
      retrieval.knn_vote(query, memory, labels, num_classes=2, k=30), [1])
  # A tie (k = 2, one vote each) goes to the smaller class id.
  tie = retrieval.knn_vote(query, memory[[0, 12]], np.array([1, 0]), num_classes=2, k=2)
  np.testing.assert_array_equal(tie, [0])


def test_knn_vote_errors():
  memory = np.eye(2)
  with pytest.raises(ValueError, match="memory is empty"):
    retrieval.knn_vote(memory, memory[:0], np.zeros(0, int), num_classes=2)
  with pytest.raises(ValueError, match=r"\[0, 2\)"):
    retrieval.knn_vote(memory, memory, np.array([0, 5]), num_classes=2)
