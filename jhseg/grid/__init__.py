"""4-adjacency edge maps and ultrametric contour maps in pure JAX.

Every function is jit-able and batched over leading dimensions. Edge weights of
an H x W image are (h (..., H, W-1), v (..., H-1, W)); see `jhseg.grid.edges`.
"""
from jhseg.grid.edges import edges_to_flat
from jhseg.grid.edges import flat_edge_permutation
from jhseg.grid.edges import flat_edge_positions
from jhseg.grid.edges import flat_to_edges
from jhseg.grid.edges import grid_shape_from_edges
from jhseg.grid.edges import num_edges
from jhseg.grid.labels import boundary_edges
from jhseg.grid.labels import is_nested
from jhseg.grid.labels import nested_labels_to_ultrametric
from jhseg.grid.pixel_edges import REDUCTIONS
from jhseg.grid.pixel_edges import pixel_edges
from jhseg.grid.ucm import UCM2_BORDERS
from jhseg.grid.ucm import edges_to_interpixel
from jhseg.grid.ucm import interpixel_to_edges
from jhseg.grid.ucm import interpixel_to_ucm2
from jhseg.grid.ucm import ucm2_to_interpixel

__all__ = [
    "REDUCTIONS",
    "UCM2_BORDERS",
    "boundary_edges",
    "edges_to_flat",
    "edges_to_interpixel",
    "flat_edge_permutation",
    "flat_edge_positions",
    "flat_to_edges",
    "grid_shape_from_edges",
    "interpixel_to_edges",
    "interpixel_to_ucm2",
    "is_nested",
    "nested_labels_to_ultrametric",
    "num_edges",
    "pixel_edges",
    "ucm2_to_interpixel",
]
