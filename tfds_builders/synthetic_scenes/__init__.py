"""`synthetic_scenes`: offline scenes with a true object/part hierarchy.

Importing this package registers the TFDS builder.
"""
from tfds_builders.synthetic_scenes.synthetic_scenes_dataset_builder import Builder

__all__ = ["Builder"]
