"""Hierarchies of segmentations with Higra: the only jhseg package that imports higra.

NumPy functions on one image (edge weights h (H, W-1), v (H-1, W) as in `jhseg.grid`)
and, in `jhseg.hierarchy.callbacks`, batched host-callback wrappers usable in `jax.jit`.
Submodules not re-exported here (e.g. `jhseg.hierarchy.matching`) are imported directly.
"""
from jhseg.hierarchy.batched import apply_per_image
from jhseg.hierarchy.callbacks import cut_with_num_regions_jax
from jhseg.hierarchy.callbacks import ucm_from_dissimilarity_jax
from jhseg.hierarchy.callbacks import watershed_superpixels_jax
from jhseg.hierarchy.cuts import cut_at_threshold
from jhseg.hierarchy.cuts import cut_with_num_regions
from jhseg.hierarchy.superpixel_graph import ucm_from_superpixel_graph
from jhseg.hierarchy.trees import filter_small_regions
from jhseg.hierarchy.trees import is_ultrametric
from jhseg.hierarchy.trees import tree_from_ultrametric
from jhseg.hierarchy.trees import ultrametric_from_nested_segmentations
from jhseg.hierarchy.trees import ultrametric_from_tree
from jhseg.hierarchy.ucm import LINKAGES
from jhseg.hierarchy.ucm import ucm_from_dissimilarity
from jhseg.hierarchy.watershed import watershed_superpixels

__all__ = [
    "LINKAGES",
    "apply_per_image",
    "cut_at_threshold",
    "cut_with_num_regions",
    "cut_with_num_regions_jax",
    "filter_small_regions",
    "is_ultrametric",
    "tree_from_ultrametric",
    "ucm_from_superpixel_graph",
    "ucm_from_dissimilarity",
    "ucm_from_dissimilarity_jax",
    "ultrametric_from_nested_segmentations",
    "ultrametric_from_tree",
    "watershed_superpixels",
    "watershed_superpixels_jax",
]
