"""jhseg: hierarchical image segmentation in JAX/Flax.

Subpackages, one concern each:

- `jhseg.grid`: 4-adjacency edge maps and ultrametric contour maps in pure JAX.
- `jhseg.hierarchy`: the only module that calls Higra (watershed, linkage, UCMs),
  as NumPy functions and as host callbacks usable under `jax.jit`.
- `jhseg.metrics`: BSDS boundary/region benchmarks, LRF/FDF, covering, semantic scores.
- `jhseg.data`: grain input pipelines over TFDS data sources.
- `jhseg.train`: the single training engine, `train_and_evaluate(config, workdir)`.
- `jhseg.tasks`: the per-method pieces plugged into the engine.
- `jhseg.models`, `jhseg.losses`, `jhseg.viz`: networks, loss functions, pictures.
"""

__version__ = "0.1.0"
