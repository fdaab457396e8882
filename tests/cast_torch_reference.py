"""A PyTorch CAST written for the tests: the architecture of the authors' classification
model (twke18/CAST `cast_models/`, timm 0.4.12 `VisionTransformer`), with their parameter
names, so that its `state_dict()` has the key layout of their checkpoints.

Written from the paper and the authors' description, independently of jhseg's JAX code;
it follows the authors' semantics where jhseg deviates (empty superpixels stay as zero
tokens, FPS in float64 by a NumPy loop like DGL's CPU kernel), so parity tests use
inputs where every superpixel covers a stem cell.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F


def fps_float64(points: np.ndarray, num_samples: int, start: int = 0) -> np.ndarray:
  """DGL's farthest_point_sampler in float64: (B, N, C) -> (B, M) indices."""
  points = np.asarray(points, np.float64)
  out = np.zeros((points.shape[0], num_samples), np.int64)
  for b, cloud in enumerate(points):
    nearest = np.full(len(cloud), np.inf)
    current = start
    out[b, 0] = current
    for i in range(1, num_samples):
      diff = cloud - cloud[current]
      nearest = np.minimum(nearest, np.einsum("nc,nc->n", diff, diff))
      current = int(np.argmax(nearest))
      out[b, i] = current
  return out


class Attention(nn.Module):

  def __init__(self, dim, num_heads):
    super().__init__()
    self.num_heads = num_heads
    self.qkv = nn.Linear(dim, 3 * dim)
    self.proj = nn.Linear(dim, dim)

  def forward(self, x):
    b, n, d = x.shape
    qkv = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    weights = torch.softmax(q @ k.transpose(-1, -2) / (d // self.num_heads) ** 0.5, dim=-1)
    return self.proj((weights @ v).transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):

  def __init__(self, dim, hidden):
    super().__init__()
    self.fc1 = nn.Linear(dim, hidden)
    self.act = nn.GELU()
    self.fc2 = nn.Linear(hidden, dim)

  def forward(self, x):
    return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):

  def __init__(self, dim, num_heads, mlp_ratio):
    super().__init__()
    self.norm1 = nn.LayerNorm(dim, eps=1e-6)
    self.attn = Attention(dim, num_heads)
    self.norm2 = nn.LayerNorm(dim, eps=1e-6)
    self.mlp = Mlp(dim, int(dim * mlp_ratio))

  def forward(self, x):
    x = x + self.attn(self.norm1(x))
    return x + self.mlp(self.norm2(x))


class CentroidBlock(nn.Module):

  def __init__(self, dim, num_heads):
    super().__init__()
    self.norm = nn.LayerNorm(dim, eps=1e-6)
    self.attn = Attention(dim, num_heads)
    self.bias = nn.Parameter(torch.randn(dim) * 0.01)

  def forward(self, x):
    x = x + self.attn(self.norm(x))
    return x - x.mean(dim=1, keepdim=True) + self.bias


class GraphPooling(nn.Module):

  def __init__(self, dim, num_clusters, num_heads):
    super().__init__()
    self.num_clusters = num_clusters
    self.centroid_fc = CentroidBlock(dim, num_heads)
    self.fc1 = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 4 * dim), nn.GELU(),
                             nn.Dropout(0.1))
    self.fc2 = nn.Sequential(nn.LayerNorm(4 * dim), nn.Linear(4 * dim, dim))

  def forward(self, cls_token, src, pad_mask):
    """pad_mask (B, N) True = padded, as the authors."""
    valid = (~pad_mask).to(src.dtype)[..., None]
    mean = (src * valid).sum(1, keepdim=True) / valid.sum(1, keepdim=True).clamp(min=1)
    filled = torch.where(pad_mask[..., None], mean.expand_as(src), src)
    points = torch.cat([mean, filled], dim=1).detach().numpy()
    inds = torch.from_numpy(fps_float64(points, self.num_clusters + 1)[:, 1:] - 1)
    assert (inds >= 0).all()
    gather = inds[..., None].expand(-1, -1, src.shape[-1])
    nodes = self.centroid_fc(src)
    centroids = torch.gather(nodes, 1, gather)
    logits = 5 * torch.einsum("bnd,bkd->bnk", F.normalize(nodes, dim=-1),
                              F.normalize(centroids, dim=-1))
    assignments = torch.softmax(logits, dim=-1)
    hidden = self.fc1(torch.cat([cls_token, src], dim=1))
    pooled = torch.einsum("bnk,bnd->bkd", assignments, hidden[:, 1:])
    pooled = pooled / assignments.sum(1)[..., None]
    out = self.fc2(torch.cat([hidden[:, :1], pooled], dim=1))
    return out[:, :1] + cls_token, out[:, 1:] + torch.gather(src, 1, gather), logits, inds


class Pooling(nn.Module):

  def __init__(self, pool_block):
    super().__init__()
    self.pool_block = pool_block


class ConvStem(nn.Module):

  def __init__(self, dim):
    super().__init__()
    layers, width_in, width = [], 3, dim // 8
    for i in range(4):
      layers += [nn.Conv2d(width_in, width, 3, stride=2 if i < 3 else 1, padding=1, bias=False),
                 nn.BatchNorm2d(width), nn.ReLU()]
      width_in, width = width, width * 2
    layers.append(nn.Conv2d(width_in, dim, 1))
    self.proj = nn.Sequential(*layers)

  def forward(self, x):
    return self.proj(x).permute(0, 2, 3, 1)


def authors_pos_embed(grid: int, dim: int) -> torch.Tensor:
  """(1, grid*grid, dim) as the authors' build_2d_sincos_position_embedding."""
  coords = torch.arange(grid, dtype=torch.float32)
  first, second = torch.meshgrid(coords, coords, indexing="ij")
  omega = 1.0 / 10000.0 ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
  out_w = first.flatten()[:, None] * omega
  out_h = second.flatten()[:, None] * omega
  return torch.cat([out_w.sin(), out_w.cos(), out_h.sin(), out_h.cos()], dim=1)[None]


def segment_mean(x, labels, num_segments):
  """x (B, h, w, D), labels (B, h, w) -> (B, S, D) means, zeros when empty; (B, S) counts."""
  b, _, _, d = x.shape
  one_hot = F.one_hot(labels.reshape(b, -1), num_segments).to(x.dtype)
  counts = one_hot.sum(1)
  return torch.einsum("bns,bnd->bsd", one_hot, x.reshape(b, -1, d)) / counts.clamp(
      min=1)[..., None], counts


class TorchCAST(nn.Module):

  def __init__(self, dim, depths, num_heads, num_clusters, grid, num_classes=None,
               mlp_ratio=4.0, learned_pos_embed=False):
    """learned_pos_embed: the DeiT variant's (1, 1 + grid^2, dim) table, row 0 added to
    the class token, its grid resized bicubically to the stem grid (`cast_seg_deit.py`);
    otherwise the MoCo variant's fixed sin-cos buffers `pos_embed` / `pe_token`."""
    super().__init__()
    self.grid = grid
    self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 1e-6)
    self.learned_pos_embed = learned_pos_embed
    if learned_pos_embed:
      self.pos_embed = nn.Parameter(torch.randn(1, 1 + grid * grid, dim) * 0.02)
    else:
      self.pos_embed = nn.Parameter(authors_pos_embed(grid, dim), requires_grad=False)
      self.pe_token = nn.Parameter(torch.zeros(1, 1, dim), requires_grad=False)
    self.patch_embed = ConvStem(dim)
    self.blocks = nn.Sequential(*[Block(dim, num_heads, mlp_ratio) for _ in range(sum(depths))])
    start = 0
    for level, depth in enumerate(depths, start=1):  # the same modules under two names
      setattr(self, f"blocks{level}", self.blocks[start:start + depth])
      setattr(self, f"pool{level}", Pooling(GraphPooling(dim, num_clusters[level - 1],
                                                         num_heads)))
      start += depth
    self.num_levels = len(depths)
    self.norm = nn.LayerNorm(dim, eps=1e-6)
    self.head = nn.Linear(dim, num_classes) if num_classes else nn.Identity()

  def forward(self, images, labels, num_segments):
    """images (B, 3, H, W), labels (B, H, W) -> (embedding, head output, level results)."""
    x = self.patch_embed(images)
    b, h, w, d = x.shape
    small = F.interpolate(labels[:, None].float(), (h, w), mode="nearest")[:, 0].long()
    tokens, counts = segment_mean(x, small, num_segments)
    pad_mask = counts == 0
    if self.learned_pos_embed:
      table = self.pos_embed[:, 1:].view(1, self.grid, self.grid, d).permute(0, 3, 1, 2)
      table = F.interpolate(table, size=(h, w), mode="bicubic", align_corners=False)
      grid_pos, cls_pos = table.permute(0, 2, 3, 1), self.pos_embed[:, :1]
    else:
      grid_pos, cls_pos = self.pos_embed.view(1, h, w, d), self.pe_token
    pos, _ = segment_mean(grid_pos.expand(b, -1, -1, -1), small, num_segments)
    tokens = tokens + pos
    cls = self.cls_token.expand(b, -1, -1) + cls_pos
    levels = []
    for level in range(1, self.num_levels + 1):
      x = getattr(self, f"blocks{level}")(torch.cat([cls, tokens], dim=1))
      cls_out, tokens = x[:, :1], x[:, 1:]
      new_cls, centroids, logits, inds = getattr(self, f"pool{level}").pool_block(
          cls_out, tokens, pad_mask)
      levels.append(dict(tokens=tokens, logits=logits, sampled_indices=inds,
                         class_token=cls_out[:, 0]))
      cls, tokens = new_cls, centroids
      pad_mask = torch.zeros(tokens.shape[:2], dtype=torch.bool)
    embedding = self.norm(levels[-1]["class_token"])
    return embedding, self.head(embedding), levels


def randomize_(model: nn.Module, seed: int = 0) -> None:
  """Non-trivial values for every normalisation parameter and BatchNorm statistic."""
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
        module.weight.copy_(1 + 0.2 * torch.randn(module.weight.shape, generator=generator))
        module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=generator))
      if isinstance(module, nn.BatchNorm2d):
        module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape,
                                                    generator=generator))
        module.running_var.copy_(0.5 + torch.rand(module.running_var.shape,
                                                  generator=generator))
      if isinstance(module, nn.Linear) and module.bias is not None:
        module.bias.copy_(0.05 * torch.randn(module.bias.shape, generator=generator))
