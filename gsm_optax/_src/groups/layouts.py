"""Channel spaces ("atoms") and how an axis is laid out in them.

Every axis of every value in a traced function is described by a *layout*: a
tree of atoms. ``('atom', a)`` is one space of ``size(a)`` channels;
``('prod', children)`` is a row-major product (a flatten of ``(h, w, c)`` is
``prod(h, w, c)``: position ``(i * w + j) * c + k``); ``('cat', children)``
lays its children end to end (a concatenation). Operations that use two
axes index for index (an add, the contraction of a matmul) *link* their
layouts; linking unifies atoms (union-find), defines a fresh atom as the
layout it meets (a kernel's input axis meeting a flatten), or splits atoms
so that two products align (a reshape). What cannot be aligned, and every
atom an operation cannot shrink, is *blocked*, with the reason.
"""

import math
from typing import Any

import numpy as np

Layout = tuple  # ('atom', id) | ('prod', (layouts...)) | ('cat', (layouts...))
UNIT = ('prod', ())


def atom(a: int) -> Layout:
  return ('atom', a)


def prod(children) -> Layout:
  return ('prod', tuple(children))


def cat(children) -> Layout:
  return ('cat', tuple(children))


def _concrete(n) -> bool:
  return isinstance(n, (int, np.integer))


class Atoms:
  """Union-find over channel spaces, with definitions and block reasons."""

  def __init__(self):
    self._parent: list[int] = []
    self._size: list[Any] = []
    self._definition: dict[int, Layout] = {}
    self.reasons: dict[int, set] = {}
    self.frozen = False  # once analysed: links and blocks do nothing

  def new(self, size) -> Layout:
    a = len(self._parent)
    self._parent.append(a)
    self._size.append(size)
    return atom(a)

  def find(self, a: int) -> int:
    while self._parent[a] != a:
      self._parent[a] = self._parent[self._parent[a]]
      a = self._parent[a]
    return a

  def size(self, layout: Layout):
    kind, body = layout
    if kind == 'atom':
      return self._size[self.find(body)]
    sizes = [self.size(c) for c in body]
    if kind == 'prod':
      return math.prod(sizes) if sizes else 1
    return sum(sizes)

  def normalize(self, layout: Layout) -> Layout:
    """Definitions expanded, nested products and concatenations flattened,
    size-1 factors dropped."""
    kind, body = layout
    if kind == 'atom':
      root = self.find(body)
      if root in self._definition:
        return self.normalize(self._definition[root])
      if _concrete(self._size[root]) and self._size[root] == 1:
        return UNIT
      return atom(root)
    children = []
    for c in (self.normalize(c) for c in body):
      if c[0] == kind:
        children.extend(c[1])
      elif not (kind == 'prod' and c == UNIT):
        children.append(c)
    if len(children) == 1:
      return children[0]
    return (kind, tuple(children))

  def leaves(self, layout: Layout) -> list[int]:
    """The (root) atoms of a normalized layout."""
    layout = self.normalize(layout)
    if layout[0] == 'atom':
      return [layout[1]]
    return [a for c in layout[1] for a in self.leaves(c)]

  def block(self, layout: Layout, reason: str) -> None:
    if self.frozen:
      return
    for a in self.leaves(layout):
      self.reasons.setdefault(a, set()).add(reason)

  def blocked(self, a: int) -> bool:
    return bool(self.reasons.get(self.find(a)))

  def link(self, x: Layout, y: Layout, why: str) -> None:
    """Makes two layouts of one axis size index the same channels."""
    if self.frozen:
      return
    x, y = self.normalize(x), self.normalize(y)
    if x == y:
      return
    if self.size(x) != self.size(y):
      self.block(x, why)
      self.block(y, why)
      return
    if x[0] == 'atom' and not self._contains(y, x[1]):
      self._define(x[1], y)
    elif y[0] == 'atom' and not self._contains(x, y[1]):
      self._define(y[1], x)
    elif x[0] == y[0] == 'cat' and [self.size(c) for c in x[1]] == [
        self.size(c) for c in y[1]]:
      for a, b in zip(x[1], y[1]):
        self.link(a, b, why)
    elif x[0] == y[0] == 'prod' and self._align(list(x[1]), list(y[1]), why):
      pass
    else:
      self.block(x, f'{why}: channels mixed')
      self.block(y, f'{why}: channels mixed')

  def _contains(self, layout, a):
    return a in self.leaves(layout)

  def _define(self, a: int, layout: Layout) -> None:
    """Atom ``a`` (a root without a definition) becomes ``layout``; its
    block reasons go to every atom of the layout."""
    reasons = self.reasons.pop(a, set())
    if layout[0] == 'atom':
      b = layout[1]
      self._parent[a] = b
      if reasons:
        self.reasons.setdefault(b, set()).update(reasons)
      return
    self._definition[a] = layout
    for reason in reasons:
      self.block(layout, reason)

  def _align(self, xs, ys, why) -> bool:
    """Links two products factor by factor, splitting a fresh atom where
    one factor spans several of the other's. False if they do not align."""
    plan = []  # (x layout, y layout) pairs to link
    while xs and ys:
      a, b = xs[0], ys[0]
      sa, sb = self.size(a), self.size(b)
      if not (_concrete(sa) and _concrete(sb)) or sa == sb:
        if sa != sb:
          return False
        plan.append((a, b))
        xs, ys = xs[1:], ys[1:]
        continue
      big, small = (xs, ys) if sa > sb else (ys, xs)
      head, size, k = [], self.size(big[0]), 0
      covered = 1
      while k < len(small) and covered < size:
        covered *= self.size(small[k])
        head.append(small[k])
        k += 1
      if covered != size or big[0][0] != 'atom':
        return False
      plan.append((big[0], prod(head)) if sa > sb else (prod(head), big[0]))
      del big[0]
      del small[:k]
    if xs or ys:
      return False
    for a, b in plan:
      self.link(a, b, why)
    return True

  def index_maps(self, layout: Layout) -> dict[int, np.ndarray]:
    """For each atom of the (concrete) layout, its channel at every position
    of the axis, -1 where the position lies in another concatenated part."""
    layout = self.normalize(layout)
    kind, body = layout
    if kind == 'atom':
      return {body: np.arange(self._size[body])}
    maps, n = {}, int(self.size(layout))
    if kind == 'cat':
      offset = 0
      for c in body:
        size = int(self.size(c))
        for a, idx in self.index_maps(c).items():
          full = maps.setdefault(a, np.full(n, -1))
          full[offset:offset + size] = idx
        offset += size
      return maps
    stride = n
    positions = np.arange(n)
    for c in body:
      size = int(self.size(c))
      stride //= size
      for a, idx in self.index_maps(c).items():
        maps[a] = idx[(positions // stride) % size]
    return maps

  def kept_size(self, layout: Layout, kept: dict[int, int]):
    """The size of the axis when family atom ``a`` keeps ``kept[a]``
    channels (every other atom keeps all)."""
    layout = self.normalize(layout)
    kind, body = layout
    if kind == 'atom':
      return kept.get(body, self._size[body])
    sizes = [self.kept_size(c, kept) for c in body]
    if kind == 'prod':
      return math.prod(sizes) if sizes else 1
    return sum(sizes)

  def polynomial(self, layout: Layout, families: dict[int, int]):
    """The axis's size as a polynomial in the families' channel counts:
    ``{(family index, ...): coefficient}`` (a sorted tuple of indices per
    monomial, with repeats)."""
    layout = self.normalize(layout)
    kind, body = layout
    if kind == 'atom':
      if body in families:
        return {(families[body],): 1}
      return {(): self._size[body]}
    parts = [self.polynomial(c, families) for c in body]
    if kind == 'cat':
      return poly_sum(parts)
    return poly_product(parts)


def poly_sum(parts):
  out = {}
  for p in parts:
    for k, v in p.items():
      out[k] = out.get(k, 0) + v
  return out


def poly_product(parts):
  out = {(): 1}
  for p in parts:
    new = {}
    for ka, va in out.items():
      for kb, vb in p.items():
        k = tuple(sorted(ka + kb))
        new[k] = new.get(k, 0) + va * vb
    out = new
  return out
