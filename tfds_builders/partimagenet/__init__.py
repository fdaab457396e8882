"""TFDS builder `partimagenet`; importing this package registers it with TFDS.

The release's COCO-style files are read and rasterised in `release_files`.
"""
from tfds_builders.partimagenet.partimagenet_dataset_builder import Builder

__all__ = ["Builder"]
