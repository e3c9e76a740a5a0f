"""A small decoder-only transformer (GPT-style) in Flax NNX.

Token and learned position embeddings, pre-LayerNorm blocks of causal
multi-head attention and a GELU MLP (4x), a final LayerNorm and an untied
output head. The attention's query, key and value are one ``nnx.Linear``
(``qkv``) and its output another, so every kernel is 2-D ``(in, out)``: the
layout that N:M patterns, `find_groups` and the one-shot pruners read
without being told an axis.
"""

import dataclasses

import flax.nnx as nnx
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class GPTConfig:
  vocab: int = 256  # bytes
  seq_len: int = 128
  width: int = 128
  heads: int = 4
  layers: int = 4


class Block(nnx.Module):
  """Pre-LN: x + attention(LN(x)), then x + MLP(LN(x))."""

  def __init__(self, width: int, heads: int, rngs: nnx.Rngs):
    self.heads = heads
    self.ln1 = nnx.LayerNorm(width, rngs=rngs)
    self.qkv = nnx.Linear(width, 3 * width, rngs=rngs)
    self.out = nnx.Linear(width, width, rngs=rngs)
    self.ln2 = nnx.LayerNorm(width, rngs=rngs)
    self.fc1 = nnx.Linear(width, 4 * width, rngs=rngs)
    self.fc2 = nnx.Linear(4 * width, width, rngs=rngs)

  def __call__(self, x):
    b, t, d = x.shape
    heads = lambda y: y.reshape(b, t, self.heads, d // self.heads)
    q, k, v = jnp.split(self.qkv(self.ln1(x)), 3, axis=-1)
    causal = jnp.tril(jnp.ones((t, t), bool))[None, None]
    y = nnx.dot_product_attention(heads(q), heads(k), heads(v), mask=causal)
    x = x + self.out(y.reshape(b, t, d))
    return x + self.fc2(nnx.gelu(self.fc1(self.ln2(x))))


class GPT(nnx.Module):
  """Tokens ``(batch, time)`` to next-token logits ``(batch, time, vocab)``."""

  def __init__(self, config: GPTConfig, rngs: nnx.Rngs):
    self.embed = nnx.Embed(config.vocab, config.width, rngs=rngs)
    self.pos = nnx.Param(0.02 * jax.random.normal(
        rngs.params(), (config.seq_len, config.width)))
    self.blocks = nnx.List([Block(config.width, config.heads, rngs)
                            for _ in range(config.layers)])
    self.ln = nnx.LayerNorm(config.width, rngs=rngs)
    self.head = nnx.Linear(config.width, config.vocab, rngs=rngs)

  def __call__(self, tokens):
    x = self.embed(tokens) + self.pos[:tokens.shape[1]]
    for block in self.blocks:
      x = block(x)
    return self.head(self.ln(x))


def kernels(params) -> dict:
  """The prunable leaves: every ``kernel`` of a block (the papers prune
  the blocks' linear layers; embeddings, the head and norms stay dense)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x: ('blocks' in jax.tree_util.keystr(path) and
                       jax.tree_util.keystr(path).endswith("['kernel']")),
      params)
