"""HSG Table 6 on CPU: cost of deriving 25 / 16 / 9 / 4 segments from pixel embeddings,
as ratios to the embedding network's cost in the same run.

    python bench/hsg.py [--size 640] [--repeats 3] [--output-stride 8] [--depth 50]

Embedding network: `jhseg.models.embedding.FCNEmbedding` -- FCN-ResNet (DeepLabv3 dilations,
multi-grid (1, 2, 4)) plus HSG's head 1x1 conv - BatchNorm - ReLU - 1x1 conv to 128-d unit
embeddings, in inference mode, on one `size` x `size` image (80 x 80 embeddings for
640 at output stride 8). Grouping pipelines on top of the embeddings, each jitted
and timed on its own (median of `repeats` after a compile/warm-up call):

  no hierarchy    one spherical k-means into 25 segments (5 x 5 grid, 30 iterations)
  k-means         spherical k-means into 25, 16, 9 and 4 segments (grids 5x5 ... 2x2,
                  30 iterations each, run independently on the pixels)
  transformers    the 25-segment k-means, then clustering transformers 25 -> 16 -> 9 -> 4
                  (m = 128, 4 heads, 2 + 2 layers) with the segments' learned positions
                  (table on the stride-16 training grid, resized), and the labels of
                  every level propagated to the pixels

The ratio column divides each pipeline's time by the embedding network's. Numbers on
this shared 2-core CPU are indicative only; the ranking is what carries over. With
`--png PATH` the ratios are also drawn as a bar chart.

Measured 2026-11-22 on the shared 2-core CPU (640 x 640, ResNet-50, output stride 8):
embedding 5502 ms = 1; no hierarchy 0.010; k-means 25/16/9/4 0.022; k-means 25 +
transformers 16/9/4 0.012. With the segment positions added to the transformers (load
3.9, so noisier): embedding 4649 ms = 1; no hierarchy 0.016; k-means 0.027;
transformers 0.014 -- the positions cost nothing measurable.
"""
from __future__ import annotations

import argparse
import os

import step_timing  # bench/step_timing.py, beside this script

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from flax import nnx  # noqa: E402
import jax  # noqa: E402

from jhseg.models import clustering_transformer as ct  # noqa: E402
from jhseg.models import embedding  # noqa: E402
from jhseg.models import position_embedding  # noqa: E402
from jhseg.models import spherical_kmeans as skm  # noqa: E402

EMBED_DIM = 128
KMEANS_ITERATIONS = 30
LEVEL_GRIDS = ((5, 5), (4, 4), (3, 3), (2, 2))   # 25, 16, 9, 4 segments
TRAIN_STRIDE = 16                                # HSG trains at output stride 16


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", type=int, default=640)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--output-stride", type=int, default=8)
  parser.add_argument("--depth", type=int, default=50)
  parser.add_argument("--png", default=None, help="optional path of a bar chart")
  args = parser.parse_args()

  rngs = nnx.Rngs(0)
  # Multi-grid needs the 3 blocks of layer4 of ResNet-50/101.
  embedder = embedding.FCNEmbedding(
      depth=args.depth, output_stride=args.output_stride,
      multi_grid=(1, 2, 4) if args.depth >= 50 else None, embedding_dim=EMBED_DIM,
      rngs=rngs)
  hierarchy = ct.HierarchicalClustering(
      EMBED_DIM, num_clusters=tuple(r * c for r, c in LEVEL_GRIDS[1:]), rngs=rngs)
  position = position_embedding.LearnedPositionEmbedding(EMBED_DIM, rngs=rngs)
  embedder.eval()
  hierarchy.eval()
  images = jax.random.uniform(jax.random.key(1), (1, args.size, args.size, 3))

  # Models enter jax.jit as (graphdef, state): nnx.jit re-walks the module graph on
  # every call (about 0.1 s here), which would swamp the small transformers.
  embed_def, embed_state = nnx.split(embedder)
  hier_def, hier_state = nnx.split((hierarchy, position))

  @jax.jit
  def embed(state, x):
    return nnx.merge(embed_def, state)(x)

  @jax.jit
  def no_hierarchy(emb):
    return skm.spherical_kmeans(emb, grid=LEVEL_GRIDS[0],
                                num_iterations=KMEANS_ITERATIONS).labels

  @jax.jit
  def kmeans_levels(emb):
    return [skm.spherical_kmeans(emb, grid=g, num_iterations=KMEANS_ITERATIONS).labels
            for g in LEVEL_GRIDS]

  @jax.jit
  def transformers(state, emb):
    base = skm.spherical_kmeans(emb, grid=LEVEL_GRIDS[0],
                                num_iterations=KMEANS_ITERATIONS)
    clustering, table = nnx.merge(hier_def, state)
    _, h, w, _ = emb.shape
    train_grid = position_embedding.grid_for(args.size, args.size, TRAIN_STRIDE)
    pos = position_embedding.segment_positions(table.resized(train_grid, h, w), base.labels,
                                               base.prototypes.shape[1])
    out = clustering(base.prototypes, base.counts > 0, pos)
    return [base.labels] + [ct.pixel_labels(base.labels, g) for g in out.labels]

  emb = embed(embed_state, images)
  rows = [("embedding network",
           step_timing.jitted_ms(embed, (embed_state, images), args.repeats)[0])]
  rows.append(("no hierarchy: k-means 25",
               step_timing.jitted_ms(no_hierarchy, (emb,), args.repeats)[0]))
  rows.append(("k-means 25/16/9/4 (30 it. each)",
               step_timing.jitted_ms(kmeans_levels, (emb,), args.repeats)[0]))
  rows.append(("k-means 25 + transformers 16/9/4",
               step_timing.jitted_ms(transformers, (hier_state, emb), args.repeats)[0]))

  base_ms = rows[0][1]
  print(f"HSG Table 6 on {jax.devices()[0].platform}: {args.size}x{args.size} image, "
        f"ResNet-{args.depth} output stride {args.output_stride} -> "
        f"{emb.shape[1]}x{emb.shape[2]}x{emb.shape[3]} embeddings, "
        f"median of {args.repeats}")
  print(f"{'pipeline':36s} {'ms':>10s} {'ratio to embedding':>20s}")
  for name, ms in rows:
    print(f"{name:36s} {ms:10.1f} {ms / base_ms:20.3f}")
  if args.png:
    write_chart(args.png, rows[1:], base_ms, args.size)


def write_chart(path: str, rows, base_ms: float, size: int):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6, 2.5))
  ax.barh([name for name, _ in rows], [ms / base_ms for _, ms in rows])
  ax.invert_yaxis()
  ax.set_xlabel("time / embedding network time")
  ax.set_title(f"HSG grouping cost, {size}x{size} image")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
