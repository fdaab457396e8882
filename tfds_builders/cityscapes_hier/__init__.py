"""TFDS builder `cityscapes_hier`; importing this package registers it with TFDS.

The label tree (19 classes -> 7 categories) and the label-id mapping are in `classes`.
"""
from tfds_builders.cityscapes_hier.cityscapes_hier_dataset_builder import Builder

__all__ = ["Builder"]
