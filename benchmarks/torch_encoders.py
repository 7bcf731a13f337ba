"""PyTorch twins of our Trm++ and SASRec Stage 1 models, for the side-by-side in vs_torch.py.

The same architecture, shapes, initial-scale-irrelevant math and training step as
`benchmarks/step_setup.py` builds from the library: an item-id embedding (the 100,000 x 128
table, rows padded to a multiple of 128) -> Linear(128, d) -> the encoder -> Linear(d, 128)
NIP head tied to the table -> full-softmax cross-entropy over items 1..V-1 (item 0 excluded)
with the last step's weight 0 -> gradient clipping at 1.0 -> AdamW (lr 1e-4, betas (0.9, 0.999),
weight decay 0.01). Dropout 0.1 as ours.

Written the way a PyTorch user would write it for speed, which is not always the way ours is
written: attention is `F.scaled_dot_product_attention(is_causal=True)` (PyTorch's fused CPU
kernel; the batches are full length, and with right padding causality alone keeps every valid
query off padded keys), the loss materialises the [N, V] logits (1.6 GB at B·L = 4096; the
fastest PyTorch form, where ours streams the table in chunks), and AdamW is `fused=True`.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


def rope(x_BxLxHxE, theta=10000.0):
  """The same rotation as uqa_jax.encoders.trmpp.rope (halves, not interleaved pairs)."""
  e = x_BxLxHxE.shape[-1]
  inv_freq = 1.0 / (theta ** (torch.arange(0, e, 2, dtype=torch.float32) / e))
  angles = torch.arange(x_BxLxHxE.shape[1], dtype=torch.float32)[:, None] * inv_freq
  cos, sin = torch.cos(angles)[None, :, None], torch.sin(angles)[None, :, None]
  x1, x2 = x_BxLxHxE[..., : e // 2], x_BxLxHxE[..., e // 2:]
  return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


class TrmppBlock(nn.Module):
  def __init__(self, d, heads, dropout):
    super().__init__()
    f = (8 * d // 3 + 7) // 8 * 8  # as trmpp.Block's SwiGLU width
    self.h = heads
    self.attn_norm, self.mlp_norm = nn.RMSNorm(d, eps=1e-6), nn.RMSNorm(d, eps=1e-6)
    self.qkv, self.o = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
    self.gate, self.up, self.down = nn.Linear(d, f, bias=False), nn.Linear(d, f, bias=False), nn.Linear(f, d, bias=False)
    self.drop = nn.Dropout(dropout)

  def forward(self, x):
    b, length, d = x.shape
    q, k, v = self.qkv(self.attn_norm(x)).view(b, length, 3 * self.h, d // self.h).split(self.h, dim=2)
    out = F.scaled_dot_product_attention(rope(q).transpose(1, 2), rope(k).transpose(1, 2), v.transpose(1, 2),
                                         is_causal=True)
    x = x + self.drop(self.o(out.transpose(1, 2).reshape(b, length, d)))
    y = self.mlp_norm(x)
    return x + self.drop(self.down(F.silu(self.gate(y)) * self.up(y)))


class SASRecBlock(nn.Module):
  def __init__(self, d, heads, dropout):
    super().__init__()
    self.h = heads
    self.qkv, self.o = nn.Linear(d, 3 * d), nn.Linear(d, d)
    self.ff1, self.ff2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
    self.attn_norm, self.ff_norm = nn.LayerNorm(d, eps=1e-6), nn.LayerNorm(d, eps=1e-6)
    self.drop = nn.Dropout(dropout)

  def forward(self, x):
    b, length, d = x.shape
    q, k, v = self.qkv(x).view(b, length, 3 * self.h, d // self.h).split(self.h, dim=2)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
    x = self.attn_norm(x + self.drop(self.o(out.transpose(1, 2).reshape(b, length, d))))
    y = self.ff2(self.drop(F.relu(self.ff1(x))))
    return self.ff_norm(x + self.drop(y))


class UserModel(nn.Module):
  """item ids [B, L] -> NIP queries [B, L, E]; `table` is the item table the loss ties to."""

  def __init__(self, encoder, layers, d, heads, items, item_dim, length, dropout):
    super().__init__()
    rows = -(-items // 128) * 128
    self.encoder, self.d = encoder, d
    self.table = nn.Parameter(torch.randn(rows, item_dim) * 0.02)
    self.proj = nn.Linear(item_dim, d)
    block = {"trmpp": TrmppBlock, "sasrec": SASRecBlock}[encoder]
    self.blocks = nn.ModuleList([block(d, heads, dropout) for _ in range(layers)])
    if encoder == "sasrec":
      self.positions = nn.Parameter(torch.randn(length, d) * 0.02)
      self.drop = nn.Dropout(dropout)
    else:
      self.norm = nn.RMSNorm(d, eps=1e-6)
    self.head = nn.Linear(d, item_dim)

  def forward(self, ids_BxL, mask_BxL):
    x = self.proj(self.table[ids_BxL]) * mask_BxL[..., None]
    if self.encoder == "sasrec":
      x = self.drop(x * math.sqrt(self.d) + self.positions[: ids_BxL.shape[1]]) * mask_BxL[..., None]
    for block in self.blocks:
      x = block(x)
    if self.encoder == "trmpp":
      x = self.norm(x)
    return self.head(x)


def loss_fn(model, ids_BxL, lengths_B, num_items):
  """Full-softmax NIP cross-entropy: position t predicts item t+1; padding and the last step weigh 0."""
  length = ids_BxL.shape[1]
  mask_BxL = (torch.arange(length)[None, :] < lengths_B[:, None]).float()
  queries = model(ids_BxL, mask_BxL).reshape(-1, model.table.shape[1])
  logits_NxV = queries @ model.table[:num_items].T
  logits_NxV[:, 0] = -torch.inf
  targets = F.pad(ids_BxL[:, 1:], (0, 1)).reshape(-1)
  weights = (torch.arange(length)[None, :] < (lengths_B[:, None] - 1)).float().reshape(-1)
  losses = F.cross_entropy(logits_NxV, targets, reduction="none")
  return (losses * weights).sum() / weights.sum().clamp(min=1.0)


def make_step(model, num_items, compile_mode=None):
  """-> step(ids, lengths) -> loss: one AdamW step (clip 1.0), optionally the loss under torch.compile."""
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.999), weight_decay=0.01, fused=True)
  loss = lambda ids, lengths: loss_fn(model, ids, lengths, num_items)
  if compile_mode:
    loss = torch.compile(loss, mode=None if compile_mode == "default" else compile_mode)

  def step(ids, lengths):
    opt.zero_grad(set_to_none=True)
    value = loss(ids, lengths)
    value.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return value

  return step
