"""TFDS builder `mapillary_vistas`; importing this package registers it with TFDS.

The label tree (124 classes -> 17 mid-level -> 7 top-level groups) is in `classes`.
"""
from tfds_builders.mapillary_vistas.mapillary_vistas_dataset_builder import Builder

__all__ = ["Builder"]
