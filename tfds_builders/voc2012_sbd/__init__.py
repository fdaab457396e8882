"""TFDS builder `voc2012_sbd`; importing this package registers it with TFDS."""
from tfds_builders.voc2012_sbd.voc2012_sbd_dataset_builder import Builder

__all__ = ["Builder"]
