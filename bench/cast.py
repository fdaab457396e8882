"""CAST-S vs ViT-S forward throughput, and the FPS share of graph pooling (paper Table 8).

    python bench/cast.py [--batch 8] [--size 224] [--repeats 3] [--model cast_small]

In one run, on random weights in inference mode (jitted; median of `repeats` after a
compile/warm-up call):

  CAST-S    `jhseg.models.cast.CAST` on `size`^2 images with 196 SEEDS superpixels
            (computed once on the host from a BSDS-like random image; SEEDS time is
            reported separately, per image).
  ViT-S     the same size on square patches: MoCo-v3's `vit_conv_small` (the conv stem
            with four stride-2 convs -> 14 x 14 = 196 patch tokens at 224, 11 blocks of
            dim 384, 12 heads, MLP ratio 4, class token), built from CAST's own blocks.
  pooling   each graph pooling alone (196 -> 64, 64 -> 32, 32 -> 16, 16 -> 8 tokens on
            batch `batch`) and its FPS alone, for the FPS share per level.

Images/s = batch / forward time (median; "best" = fastest repeat). FLOPs come from XLA's
cost analysis of the compiled forward; the 2048^2 float32 matmul measured in the same
run is what XLA:CPU reaches on these cores at that moment, so "% of the matmul's" is
the forward's efficiency whatever the load. The numbers are distorted by the shared
load of the machine (other jobs on the 2 cores): compare rows of one run only.

Measured 2026-11-30 on the shared 2-core AMD EPYC (Zen 3, AVX2/FMA, 2.45 GHz), load
average 5.4 from other jobs (`python bench/cast.py`, batch 8, 224^2, 3 repeats):
  SEEDS 105 ms/image (host, one core)
  matmul 2048^2: 42 GFLOP/s
  CAST-S  2724 ms/batch = 2.9 images/s (best 4.0); 6.33 GFLOP/image, 60% of the matmul's
  ViT-S   3118 ms/batch = 2.6 images/s (best 2.9); 9.44 GFLOP/image, 66% of the matmul's
  CAST / ViT 1.14x (median), 1.35x (best)
  graph pooling 196->64: 277 ms, FPS 26.3 ms (9.5%);  64->32: 62 ms, FPS 3.4 ms (5.5%);
                32->16: 42 ms, FPS 1.0 ms (2.4%);  16->8 (assignments): 24 ms, FPS 0.8 ms (3.2%)
The FPS share stays under 10% at every level (Table 8 reports 25-60% for the authors'
DGL call on their GPU system, appendix A.4), inside the issue's 15% target.

39 images/s is out of reach on this CPU, whatever the code: CAST-S costs 6.33 GFLOP per
224^2 image, so 39 images/s needs 247 GFLOP/s, while two Zen 3 cores peak at 2 x 2.45
GHz x 32 float32 FLOP/cycle (two 8-wide FMA pipes) = 157 GFLOP/s, i.e. 24.8 images/s
if every FLOP ran at peak. XLA:CPU's best 1024^2 matmul seen this session was 67
GFLOP/s (10.6 CAST-S images/s at that rate); under the load of the measurement above
it was 42 GFLOP/s (6.6 images/s). CAST-S runs at 60-70% of the matmul's rate (the
attention products on 32-wide heads, softmax, LayerNorm and GELU are the rest), so the
measured ceiling under this load is ~4-7 images/s. The session before measured 9.4
images/s at low load with the older code (~60 GFLOP/s achieved; under heavy load 1.8 vs
0.8 for ViT), so ~11 images/s can be expected on an idle machine (never idle this
session). 39 images/s needs a GPU (the paper's setting) or lower precision.

Where the time went (per-op profile: `jax.profiler.trace(..., create_perfetto_trace=True)`
with XLA_FLAGS=--xla_cpu_enable_xprof_traceme=true, ops mapped to the compiled HLO),
and what changed (outputs equal up to float summation order; parity tests pass):
  * attention (`cast_pooling.Attention`): the softmax and the value product on
    (B, N, H, hd) views were fused into one YNNPACK call running at ~1 GFLOP/s, 16% of
    the forward; heads-first (B, H, N, hd) operands make the attention core ~2x faster
    (the whole Attention 1.2x).
  * superpixel means: the one-hot matmul (0.95 GFLOP per batch) became a per-image
    scatter-add (`jhseg.segments.segment_mean`, `jax.ops.segment_sum` under vmap: 26 -> 3
    ms, gradient 60 -> 17 ms),
    and the position embedding is pooled with the features (mean(X) + mean(E) =
    mean(X + E)) instead of in a second pooling of a broadcast copy.
  * graph pooling's fc1 on [class; tokens] then sliced: the exact GELU (erfc) had two
    consumers and XLA materialised its intermediates (~5x slower than a block's GELU);
    fc1 now runs on the class token and on the tokens apart.
  * the stem's 1x1 projection ran as a YNNPACK convolution; `layers.pointwise_conv`
    makes it a dot (115 -> 75 ms per batch in the profile). The 3x3 stem convolutions already run
    at matmul speed (conv 192->384 at 28^2: 55 GFLOP/s when the matmul did ~45-67);
    an im2col dot was 1.5-4x slower.
  * the sin-cos table is a compile-time constant.
  In-process A/B against the previous code (both trees imported in one process, calls
  alternated; /tmp script, not kept): 10 rounds at load 6.4: 1552 vs 1827 ms (best), 1767
  vs 2129 ms (median); 8 rounds at load 8.4: 1352 vs 1776, 1805 vs 2117: 1.17-1.31x.
  Left: the dense layers (qkv, proj, MLP, pooling fc1/fc2, ~70% of the FLOPs) and the
  stem convolutions, all at the matmul's rate.

XLA flags tried (whole forward, separate processes alternated twice, load 5.5-8.4; none
is a default):
  --xla_cpu_experimental_ynn_fusion_type=-individual_dot  (dots not via YNNPACK):
    1699 / 1790 ms vs 1554 / 1306 ms without: slower.
  --xla_cpu_experimental_ynn_fusion_type=-individual_convolution  (Eigen convolutions):
    1444 / 1676 ms vs 1554 / 1306: no consistent change.
  --xla_cpu_experimental_ynn_fusion_type=-dot,-eltwise,-reduce: 1784 / 3104 ms: slower.
  (The valid names are dot, eltwise, reduce, individual_dot, individual_convolution.)
"""
from __future__ import annotations

import argparse
import os
import time

import step_timing  # bench/step_timing.py, beside this script

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from flax import nnx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jhseg.models import cast  # noqa: E402
from jhseg.models import cast_pooling  # noqa: E402
from jhseg.models import layers  # noqa: E402
from jhseg.superpixels import seeds  # noqa: E402


class ConvStemViT(nnx.Module):
  """MoCo-v3 `vit_conv_small`: 4 x (conv3x3 s2-BN-ReLU) + 1x1 conv, 11 blocks, class token."""

  def __init__(self, dim: int, depth: int, num_heads: int, *, rngs: nnx.Rngs):
    widths = [3, dim // 8, dim // 4, dim // 2, dim]
    self.convs = nnx.List([nnx.Conv(widths[i], widths[i + 1], (3, 3), strides=2,
                                    padding=((1, 1), (1, 1)), use_bias=False, rngs=rngs)
                           for i in range(4)])
    self.norms = nnx.List([nnx.BatchNorm(widths[i + 1], rngs=rngs) for i in range(4)])
    self.proj = nnx.Conv(dim, dim, (1, 1), conv_general_dilated=layers.pointwise_conv,
                         rngs=rngs)  # as CAST's stem
    self.cls_token = nnx.Param(jnp.zeros((1, 1, dim)))
    self.blocks = nnx.List([cast.Block(dim, num_heads, 4.0, 0.0, rngs=rngs)
                            for _ in range(depth)])
    self.norm = cast_pooling.layer_norm(dim, 1e-6, rngs)

  def __call__(self, images):
    x = images
    for conv, norm in zip(self.convs, self.norms):
      x = jax.nn.relu(norm(conv(x)))
    x = self.proj(x)
    b, h, w, d = x.shape
    x = x.reshape(b, h * w, d) + cast.sincos_position_embedding(h, w, d).reshape(1, h * w, d)
    x = jnp.concatenate([jnp.broadcast_to(self.cls_token[...], (b, 1, d)), x], axis=1)
    for block in self.blocks:
      x = block(x)
    return self.norm(x[:, 0])


def superpixel_inputs(batch: int, size: int, num_superpixels: int):
  rng = np.random.default_rng(0)
  # Smooth random colour fields (blurred noise) so SEEDS finds realistic regions.
  coarse = rng.random((batch, size // 16, size // 16, 3))
  images = np.repeat(np.repeat(coarse, 16, axis=1), 16, axis=2)
  images = np.clip(images + 0.05 * rng.normal(size=images.shape), 0, 1).astype(np.float32)
  options = seeds.SeedsOptions(num_superpixels=num_superpixels)
  start = time.perf_counter()
  labels, masks = seeds.seeds_superpixels_batch(images, options)
  seeds_ms = 1e3 * (time.perf_counter() - start) / batch
  return images, labels, masks, seeds_ms


def compile_with_flops(fn, *args):
  """(compiled fn, GFLOP per call from XLA's cost analysis of the optimised program)."""
  compiled = jax.jit(fn).lower(*args).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return compiled, cost["flops"] / 1e9


def matmul_gflops(repeats: int, n: int = 2048) -> float:
  """Best GFLOP/s of an n x n float32 matmul: what XLA:CPU reaches on these cores now."""
  a = jax.random.normal(jax.random.key(1), (n, n))
  _, best = step_timing.jitted_ms(jax.jit(jnp.matmul), (a, a), max(repeats, 5))
  return 2 * n ** 3 / best / 1e6


def forward_row(name: str, ms: tuple[float, float], gflop: float, batch: int,
                matmul: float) -> str:
  median, best = ms
  rate = gflop / best * 1e3
  return (f"{name}: {median:.0f} ms/batch = {1e3 * batch / median:.1f} images/s (best "
          f"{1e3 * batch / best:.1f}); {gflop / batch:.2f} GFLOP/image, best {rate:.0f} "
          f"GFLOP/s = {100 * rate / matmul:.0f}% of the matmul's")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--size", type=int, default=224)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--model", default="cast_small", choices=sorted(cast.CAST_CONFIGS))
  parser.add_argument("--superpixels", type=int, default=196)
  args = parser.parse_args()
  config = cast.cast_config(args.model)

  images, labels, masks, seeds_ms = superpixel_inputs(args.batch, args.size, args.superpixels)
  print(f"SEEDS ({args.superpixels} superpixels, {args.size}^2): {seeds_ms:.1f} ms/image; "
        f"segments per image {masks.sum(1).tolist()}")
  model = cast.CAST(config, rngs=nnx.Rngs(0))
  model.eval()
  graph, state = nnx.split(model)
  cast_args = (state, jnp.asarray(images), jnp.asarray(labels), jnp.asarray(masks))
  cast_fn, cast_gflop = compile_with_flops(
      lambda s, x, y, k: nnx.merge(graph, s)(x, y, k).embedding, *cast_args)
  vit = ConvStemViT(config.dim, sum(config.depths), config.num_heads, rngs=nnx.Rngs(0))
  vit.eval()
  vit_graph, vit_state = nnx.split(vit)
  vit_args = (vit_state, jnp.asarray(images))
  vit_fn, vit_gflop = compile_with_flops(lambda s, x: nnx.merge(vit_graph, s)(x), *vit_args)
  # Interleaved so that both see the same load; the matmul before and after.
  matmul = matmul_gflops(args.repeats)
  cast_ms = step_timing.jitted_ms(cast_fn, cast_args, args.repeats)
  vit_ms = step_timing.jitted_ms(vit_fn, vit_args, args.repeats)
  matmul = max(matmul, matmul_gflops(args.repeats))
  print(f"matmul 2048^2 float32: {matmul:.0f} GFLOP/s (best of {max(args.repeats, 5)})")
  print(forward_row(args.model, cast_ms, cast_gflop, args.batch, matmul))
  print(forward_row(f"ViT (conv stem, {sum(config.depths)} blocks, {(args.size // 16) ** 2} "
                    f"tokens)", vit_ms, vit_gflop, args.batch, matmul))
  print(f"CAST / ViT images/s: {vit_ms[0] / cast_ms[0]:.2f}x (median), "
        f"{vit_ms[1] / cast_ms[1]:.2f}x (best)")
  print(f"{args.model} at the matmul's rate would run {matmul / cast_gflop * args.batch:.1f} "
        f"images/s; 39 images/s needs {39 * cast_gflop / args.batch:.0f} GFLOP/s")

  print("graph pooling per level: total ms, FPS ms, FPS share")
  num_tokens = args.superpixels
  key = jax.random.key(0)
  for level, pool in enumerate(model.pools, start=1):
    tokens = jax.random.normal(key, (args.batch, num_tokens, config.dim))
    cls = tokens[:, :1]
    mask = jnp.ones(tokens.shape[:2], bool)
    last = level == len(model.pools)
    pool_fn = nnx.jit(lambda p, c, t, k, a=last: p(c, t, k, assign_only=a))
    pool_ms = step_timing.jitted_ms(pool_fn, (pool, cls, tokens, mask), args.repeats)[0]
    fps = jax.jit(lambda t, k, n=pool.num_clusters: cast_pooling.sample_centroid_indices(
        t, k, n))
    fps_ms = step_timing.jitted_ms(fps, (tokens, mask), args.repeats)[0]
    print(f"  level {level}: {num_tokens:4d} -> {pool.num_clusters:3d} tokens: "
          f"{pool_ms:7.2f} ms, FPS {fps_ms:6.2f} ms ({100 * fps_ms / pool_ms:4.1f}%)"
          f"{' (assignments only)' if last else ''}")
    num_tokens = pool.num_clusters
  print(f"load average during the run: {os.getloadavg()[0]:.1f} (2 cores)")


if __name__ == "__main__":
  main()
