"""A hand-written reference shared by the LRF/FDF tests: the 4-adjacency edge weights of
nested label maps, written independently of jhseg's hierarchy code."""
import numpy as np


def edge_ultrametric(label_maps, altitudes):
  """Edge weights of nested label maps (fine to coarse): max altitude where labels differ."""
  h = np.zeros((label_maps[0].shape[0], label_maps[0].shape[1] - 1))
  v = np.zeros((label_maps[0].shape[0] - 1, label_maps[0].shape[1]))
  for labels, altitude in zip(label_maps, altitudes):
    h = np.maximum(h, altitude * (labels[:, 1:] != labels[:, :-1]))
    v = np.maximum(v, altitude * (labels[1:, :] != labels[:-1, :]))
  return h, v
