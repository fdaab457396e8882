"""TFDS builder `bsds500`; importing this package registers it with TFDS."""
from tfds_builders.bsds500.bsds500_dataset_builder import Builder

__all__ = ["Builder"]
