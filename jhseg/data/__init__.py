"""Input pipelines: TFDS data sources read through grain, sharded per process."""
from jhseg.data.pipeline import eval_batches, train_dataset
from jhseg.data.repeated_augmentation import repeats_of
from jhseg.data.sources import load_source
from jhseg.data.transforms import random_transform

__all__ = ["eval_batches", "train_dataset", "load_source", "random_transform", "repeats_of"]
