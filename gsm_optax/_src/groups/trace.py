"""Reading a function's jaxpr: which axes index the same channels.

`analyze` walks the jaxpr of ``fn(params, *args)`` once, giving every axis
of every value a layout (`layouts`) and linking the axes that each
operation couples: the operands of an elementwise op axis by axis, a
matmul's or convolution's contracted axes, a residual add's branches, a
concatenation's parts, a flatten's factors. An axis that an operation
cannot shrink (a convolution's spatial axes, an axis reduced over by a sum
or a norm's statistics, a slice, a gather, an input or output of the
function, any primitive without a rule here) is blocked, with the reason.
`evaluate` runs the same jaxpr with every channel space shrunk to the
channels kept, rewriting the shapes that equations carry
(``broadcast_in_dim``, ``reshape``, ...): the slim model.

Long because it is one table of rules, one per primitive, with the walk
that applies them both ways (analysis and evaluation).
"""

import dataclasses
from typing import Any, Optional

import jax
import jax.extend.core as jex

from gsm_optax._src.groups import layouts as lay

_ELEMENTWISE = frozenset((
    'abs', 'acos', 'acosh', 'add', 'and', 'asin', 'asinh', 'atan', 'atan2',
    'atanh', 'cbrt', 'ceil', 'clamp', 'convert_element_type', 'copy',
    'copy_p', 'cos', 'cosh', 'div', 'eq', 'erf', 'erf_inv', 'erfc', 'exp',
    'exp2', 'expm1', 'floor', 'ge', 'gt', 'imag', 'integer_pow',
    'is_finite', 'le', 'lgamma', 'digamma', 'log', 'log1p', 'logistic', 'lt',
    'max', 'min', 'mul', 'ne', 'neg', 'nextafter', 'not', 'or', 'pow', 'real',
    'reduce_precision', 'rem', 'round', 'rsqrt', 'select_n', 'sign', 'sin',
    'sinh', 'sqrt', 'square', 'stop_gradient', 'sub', 'tan', 'tanh',
    'xor'))
_PASS_THROUGH = frozenset(('sharding_constraint', 'mesh_cast', 'reshard',
                           'optimization_barrier', 'name', 'pvary'))
_REDUCTIONS = frozenset(('reduce_sum', 'reduce_max', 'reduce_min',
                         'reduce_prod', 'reduce_and', 'reduce_or',
                         'reduce_xor', 'argmax', 'argmin'))
_CUMULATIVE = frozenset(('cumsum', 'cumprod', 'cummax', 'cummin',
                         'cumlogsumexp'))
_WINDOWS = frozenset(('reduce_window_sum', 'reduce_window_max',
                      'reduce_window_min', 'reduce_window'))
_SUB_JAXPR_KEYS = ('jaxpr', 'call_jaxpr', 'fun_jaxpr')
# Calls whose sub-jaxpr runs once on the call's own operands: walked inline.
_CALLS = frozenset(('pjit', 'jit', 'closed_call', 'core_call', 'remat',
                    'checkpoint', 'custom_jvp_call', 'custom_vjp_call',
                    'custom_vjp_call_jaxpr'))


@dataclasses.dataclass
class Analysis:
  """What `analyze` found: the atoms, every parameter axis's layout, the
  layouts of every equation's outputs in the order visited, the matmuls'
  and convolutions' cost terms, and the primitives with no rule."""
  atoms: lay.Atoms
  param_layouts: list  # per param leaf: one layout per axis
  eqn_layouts: list  # per visited equation: per output, one layout per axis
  # (out layouts, contracted layouts, factor, param leaf, (the equation,
  # its operands' layouts)): what the FLOPs count and the latency times.
  products: list
  unsupported: dict  # primitive name -> where it was met
  used: set  # the root atoms that some equation reads


def _shape(v):
  return tuple(getattr(v.aval, 'shape', ()))


def _where(eqn) -> str:
  try:
    from jax._src import source_info_util  # pylint: disable=import-outside-toplevel
    return source_info_util.summarize(eqn.source_info)
  except Exception:  # pylint: disable=broad-except
    return ''


class _Walker:
  """Walks a jaxpr; with ``values``, also evaluates it slim."""

  def __init__(self, atoms: lay.Atoms, recorded: Optional[list] = None,
               kept: Optional[dict] = None, observe=None):
    self.atoms = atoms
    self.recorded = recorded  # evaluation: the analysis's eqn_layouts
    self.kept = kept or {}
    # evaluation: called as observe(eqn, in_values, position, leaf) before
    # every matmul or convolution that multiplies by a parameter leaf.
    self.observe = observe
    self.eqn_layouts = []
    self.products = []
    self.unsupported = {}
    self.param_of = {}  # var -> the parameter leaf it is (through casts)
    self.read = []  # layouts that equations read (analysis)

  @property
  def evaluating(self):
    return self.recorded is not None

  def new_shape(self, layouts):
    return tuple(self.atoms.kept_size(l, self.kept) for l in layouts)

  def walk(self, jaxpr, in_layouts, in_values=None, consts=(),
           in_params=None):
    """Layouts (and values) of ``jaxpr``'s outputs; ``in_params``: the
    parameter leaf each input is, or None."""
    env = {}

    def read(v):
      if isinstance(v, jex.Literal):
        return (), v.val
      return env[v]

    for v, value in zip(jaxpr.constvars, consts):
      layouts = tuple(self.atoms.new(d) for d in _shape(v))
      for l in layouts:
        self.atoms.block(l, 'a constant of the function')
      env[v] = (layouts, value)
    for i, v in enumerate(jaxpr.invars):
      env[v] = (in_layouts[i], None if in_values is None else in_values[i])
      if in_params is not None and in_params[i] is not None:
        self.param_of[v] = in_params[i]
    for eqn in jaxpr.eqns:
      ins = [read(v) for v in eqn.invars]
      outs = self.equation(eqn, [l for l, _ in ins], [x for _, x in ins])
      for v, out in zip(eqn.outvars, outs):
        env[v] = out
    return [read(v) for v in jaxpr.outvars]

  def equation(self, eqn, in_layouts, in_values):
    sub = next((eqn.params[k] for k in _SUB_JAXPR_KEYS if k in eqn.params),
               None)
    if sub is not None and eqn.primitive.name in _CALLS:
      closed = sub if hasattr(sub, 'jaxpr') else None
      jaxpr = closed.jaxpr if closed is not None else sub
      consts = closed.consts if closed is not None else ()
      outs = self.walk(jaxpr, in_layouts,
                       in_values if self.evaluating else None, consts,
                       [self.param_of.get(v) if not isinstance(
                           v, jex.Literal) else None for v in eqn.invars])
      if eqn.primitive.name.startswith('custom_vjp') or len(outs) != len(
          eqn.outvars):
        outs = outs[:len(eqn.outvars)]
      return outs
    if self.evaluating:
      out_layouts = self.recorded.pop(0)
    else:
      self.read.extend(l for layouts in in_layouts for l in layouts)
      rule = _rule_for(eqn.primitive.name)
      out_layouts = rule(self, eqn, in_layouts)
      self.eqn_layouts.append(out_layouts)
    if eqn.primitive.name in ('convert_element_type', 'copy', 'copy_p'):
      source = self.param_of.get(eqn.invars[0])
      if source is not None:
        self.param_of[eqn.outvars[0]] = source
    values = [None] * len(eqn.outvars)
    if self.evaluating:
      if self.observe is not None and eqn.primitive.name in (
          'dot_general', 'conv_general_dilated'):
        found = _param_position(self, eqn)
        if found is not None:
          self.observe(eqn, in_values, *found)
      values = self.bind(eqn, in_values, out_layouts)
    return list(zip(out_layouts, values))

  def bind(self, eqn, in_values, out_layouts):
    params = eqn.primitive.get_bind_params(eqn.params)
    subfuns = ()
    if isinstance(params, tuple):  # older JAX: (subfuns, params)
      subfuns, params = params
    params = dict(params)
    name = eqn.primitive.name
    new_out = self.new_shape(out_layouts[0]) if out_layouts else ()
    if name == 'broadcast_in_dim':
      params['shape'] = new_out
      params['sharding'] = None
    elif name == 'reshape':
      params['new_sizes'] = new_out
      params['sharding'] = None
    elif name == 'slice':
      strides = params['strides'] or (1,) * len(new_out)
      params['limit_indices'] = tuple(
          s + n * st for s, n, st in zip(params['start_indices'], new_out,
                                         strides))
    elif name == 'dynamic_slice':
      params['slice_sizes'] = new_out
    elif name == 'split':
      params['sizes'] = tuple(self.new_shape(o)[params['axis']]
                              for o in out_layouts)
    elif name == 'conv_general_dilated' and params['feature_group_count'] > 1:
      lhs_feature = params['dimension_numbers'].lhs_spec[1]
      params['feature_group_count'] = in_values[0].shape[lhs_feature]
    out = eqn.primitive.bind(*subfuns, *in_values, **params)
    return list(out) if eqn.primitive.multiple_results else [out]

  # -- helpers for the rules

  def fresh(self, shape):
    return tuple(self.atoms.new(d) for d in shape)

  def block_all(self, layouts_list, reason):
    for layouts in layouts_list:
      for l in layouts:
        self.atoms.block(l, reason)


def _elementwise(w, eqn, ins):
  out_shape = _shape(eqn.outvars[0])
  out = w.fresh(out_shape)
  for v, layouts in zip(eqn.invars, ins):
    shape = _shape(v)
    if len(shape) != len(out_shape):
      continue  # a scalar operand
    for i, (d, o) in enumerate(zip(shape, out_shape)):
      if d == o:
        w.atoms.link(layouts[i], out[i], eqn.primitive.name)
  return [out]


def _pass_through(w, eqn, ins):
  return [tuple(l) for l in ins[:len(eqn.outvars)]]


def _blocked(w, eqn, ins):
  """No rule: nothing it touches is pruned."""
  name = eqn.primitive.name
  w.unsupported.setdefault(name, _where(eqn))
  outs = [w.fresh(_shape(v)) for v in eqn.outvars]
  w.block_all(ins + outs, f'{name} (no rule to follow it)')
  return outs


def _unshrinkable(reason):
  def rule(w, eqn, ins):
    outs = [w.fresh(_shape(v)) for v in eqn.outvars]
    w.block_all(ins + outs, f'{eqn.primitive.name} ({reason})')
    return outs
  return rule


def _broadcast_in_dim(w, eqn, ins):
  shape = eqn.params['shape']
  out = list(w.fresh(shape))
  operand = _shape(eqn.invars[0])
  for i, d in enumerate(eqn.params['broadcast_dimensions']):
    if operand[i] == shape[d]:
      out[d] = ins[0][i]
  return [tuple(out)]


def _reshape(w, eqn, ins):
  if eqn.params.get('dimensions') is not None:
    return _unshrinkable('a reshape with a transpose')(w, eqn, ins)
  src, dst = _shape(eqn.invars[0]), tuple(eqn.params['new_sizes'])
  out = [None] * len(dst)
  i = j = 0
  while i < len(src) or j < len(dst):
    if j < len(dst) and dst[j] == 1:
      out[j] = w.atoms.new(1)
      j += 1
      continue
    if i < len(src) and src[i] == 1:
      i += 1
      continue
    take_i, take_j = [i], [j]
    a, b = src[i], dst[j]
    i, j = i + 1, j + 1
    while a != b:
      if a < b:
        a *= src[i]
        take_i.append(i)
        i += 1
      else:
        b *= dst[j]
        take_j.append(j)
        j += 1
    merged = lay.prod([ins[0][k] for k in take_i])
    if len(take_j) == 1:
      out[take_j[0]] = merged
    else:
      parts = [w.atoms.new(dst[k]) for k in take_j]
      w.atoms.link(merged, lay.prod(parts), 'a reshape')
      for k, part in zip(take_j, parts):
        out[k] = part
  return [tuple(out)]


def _transpose(w, eqn, ins):
  return [tuple(ins[0][p] for p in eqn.params['permutation'])]


def _squeeze(w, eqn, ins):
  dims = set(d % len(ins[0]) for d in eqn.params['dimensions'])
  return [tuple(l for k, l in enumerate(ins[0]) if k not in dims)]


def _dot_general(w, eqn, ins):
  (lc, rc), (lb, rb) = eqn.params['dimension_numbers']
  lhs, rhs = ins
  for a, b in zip(lc, rc):
    w.atoms.link(lhs[a], rhs[b], 'a matmul contraction')
  for a, b in zip(lb, rb):
    w.atoms.link(lhs[a], rhs[b], 'a matmul batch axis')
  out = ([lhs[a] for a in lb] +
         [l for k, l in enumerate(lhs) if k not in lc and k not in lb] +
         [l for k, l in enumerate(rhs) if k not in rc and k not in rb])
  w.products.append((tuple(out), tuple(lhs[a] for a in lc), 2,
                     _param_operand(w, eqn), (eqn, tuple(ins))))
  return [tuple(out)]


def _conv(w, eqn, ins):
  p = eqn.params
  dn = p['dimension_numbers']
  lhs, rhs = ins
  out_shape = _shape(eqn.outvars[0])
  out = list(w.fresh(out_shape))
  spatial = 'the spatial axes of a convolution'
  groups = p['feature_group_count']
  lhs_shape, rhs_shape = _shape(eqn.invars[0]), _shape(eqn.invars[1])
  in_features = lhs_shape[dn.lhs_spec[1]]
  if p['batch_group_count'] != 1 or (groups != 1 and not (
      groups == in_features and rhs_shape[dn.rhs_spec[1]] == 1)):
    return _unshrinkable('a grouped convolution')(w, eqn, ins)
  out[dn.out_spec[0]] = lhs[dn.lhs_spec[0]]
  out[dn.out_spec[1]] = rhs[dn.rhs_spec[0]]
  if groups == 1:
    w.atoms.link(lhs[dn.lhs_spec[1]], rhs[dn.rhs_spec[1]],
                 'a convolution contraction')
    contracted = [lhs[dn.lhs_spec[1]]]
  else:  # depthwise: input channel j makes output channel j
    w.atoms.link(lhs[dn.lhs_spec[1]], rhs[dn.rhs_spec[0]],
                 'a depthwise convolution')
    contracted = []
  for k in dn.lhs_spec[2:]:
    w.atoms.block(lhs[k], spatial)
  for k in dn.rhs_spec[2:]:
    w.atoms.block(rhs[k], spatial)
  for k in dn.out_spec[2:]:
    w.atoms.block(out[k], spatial)
  window = 1
  for k in dn.rhs_spec[2:]:
    window *= rhs_shape[k]
  w.products.append((tuple(out), tuple(contracted), 2 * window,
                     _param_operand(w, eqn), (eqn, tuple(ins))))
  return [tuple(out)]


def _param_operand(w, eqn):
  """The parameter leaf a matmul or convolution multiplies by (its right
  operand, else its left), or None."""
  found = _param_position(w, eqn)
  return None if found is None else found[1]


def _param_position(w, eqn):
  """``(operand position, parameter leaf)`` of `_param_operand`, or None."""
  for pos in (1, 0):
    v = eqn.invars[pos]
    if not isinstance(v, jex.Literal) and v in w.param_of:
      return pos, w.param_of[v]
  return None


def _reduction(w, eqn, ins):
  axes = set(eqn.params['axes'])
  for k in axes:
    w.atoms.block(ins[0][k], f'reduced over by {eqn.primitive.name}')
  return [tuple(l for k, l in enumerate(ins[0]) if k not in axes)]


def _cumulative(w, eqn, ins):
  axis = eqn.params['axis'] % len(ins[0])
  w.atoms.block(ins[0][axis], f'accumulated along by {eqn.primitive.name}')
  return [tuple(ins[0])]


def _window(w, eqn, ins):
  p = eqn.params
  n = len(ins[0])
  padding = p.get('padding') or ((0, 0),) * n
  base = p.get('base_dilation') or (1,) * n
  dilation = p.get('window_dilation') or (1,) * n
  layouts_in = ins[0]
  outs = []
  for v in eqn.outvars:
    out = list(w.fresh(_shape(v)))
    for k in range(n):
      if (p['window_dimensions'][k] == 1 and p['window_strides'][k] == 1 and
          tuple(padding[k]) == (0, 0) and base[k] == 1 and dilation[k] == 1):
        out[k] = layouts_in[k]
      else:
        w.atoms.block(layouts_in[k], 'the window of a pooling')
        w.atoms.block(out[k], 'the window of a pooling')
    outs.append(tuple(out))
  for extra in ins[1:]:  # generic reduce_window: init values
    w.block_all([extra], 'a pooling operand')
  return outs


def _concatenate(w, eqn, ins):
  dim = eqn.params['dimension']
  out = list(ins[0])
  for layouts in ins[1:]:
    for k, l in enumerate(layouts):
      if k != dim:
        w.atoms.link(out[k], l, 'a concatenation')
  out[dim] = lay.cat([layouts[dim] for layouts in ins])
  return [tuple(out)]


def _where_unchanged(unchanged, what):
  """A rule for an op that keeps some axes as they are (linked through)
  and changes the others (blocked, in and out): pad, slice."""
  def rule(w, eqn, ins):
    shape = _shape(eqn.invars[0])
    out = list(w.fresh(_shape(eqn.outvars[0])))
    for k in range(len(shape)):
      if unchanged(eqn.params, shape, k):
        out[k] = ins[0][k]
      else:
        w.atoms.block(ins[0][k], what)
        w.atoms.block(out[k], what)
    return [tuple(out)]
  return rule


_pad = _where_unchanged(
    lambda p, shape, k: tuple(p['padding_config'][k]) == (0, 0, 0), 'a pad')
_slice = _where_unchanged(
    lambda p, shape, k: (p['start_indices'][k], p['limit_indices'][k],
                         (p['strides'] or (1,) * len(shape))[k]) == (
                             0, shape[k], 1), 'a slice')
_dynamic_slice = _where_unchanged(
    lambda p, shape, k: p['slice_sizes'][k] == shape[k], 'a dynamic slice')


def _rev(w, eqn, ins):
  for k in eqn.params['dimensions']:
    w.atoms.block(ins[0][k], 'a reversal')
  return [tuple(ins[0])]


def _split(w, eqn, ins):
  """The inverse of a concatenation: the split axis is its parts end to
  end (a fused query-key-value projection split in three)."""
  axis = eqn.params['axis'] % len(ins[0])
  outs = []
  for v in eqn.outvars:
    out = list(ins[0])
    out[axis] = w.atoms.new(_shape(v)[axis])
    outs.append(tuple(out))
  w.atoms.link(ins[0][axis], lay.cat([o[axis] for o in outs]), 'a split')
  return outs


_RULES = {
    'broadcast_in_dim': _broadcast_in_dim, 'reshape': _reshape,
    'transpose': _transpose, 'squeeze': _squeeze,
    'dot_general': _dot_general, 'conv_general_dilated': _conv,
    'concatenate': _concatenate, 'pad': _pad, 'slice': _slice,
    'dynamic_slice': _dynamic_slice, 'rev': _rev, 'split': _split,
    'iota': _unshrinkable('a fixed range'),
    'gather': _unshrinkable('a gather'),
    'scatter': _unshrinkable('a scatter'),
    'scatter-add': _unshrinkable('a scatter'),
    'scatter_add': _unshrinkable('a scatter'),
    'sort': _unshrinkable('a sort'), 'top_k': _unshrinkable('a top-k'),
    'dynamic_update_slice': _unshrinkable('an update of a slice'),
}


def _rule_for(name):
  if name in _RULES:
    return _RULES[name]
  if name in _ELEMENTWISE:
    return _elementwise
  if name in _PASS_THROUGH:
    return _pass_through
  if name in _REDUCTIONS:
    return _reduction
  if name in _CUMULATIVE:
    return _cumulative
  if name in _WINDOWS:
    return _window
  return _blocked


def analyze(closed_jaxpr, num_params: int) -> Analysis:
  """Links and blocks the axes of a closed jaxpr whose first
  ``num_params`` inputs are the parameter leaves."""
  atoms = lay.Atoms()
  walker = _Walker(atoms)
  jaxpr = closed_jaxpr.jaxpr
  in_layouts = [walker.fresh(_shape(v)) for v in jaxpr.invars]
  for layouts in in_layouts[num_params:]:
    for l in layouts:
      atoms.block(l, 'an input of the function')
  outs = walker.walk(jaxpr, in_layouts, consts=closed_jaxpr.consts,
                     in_params=list(range(num_params)) + [None] * (
                         len(jaxpr.invars) - num_params))
  for layouts, _ in outs:
    for l in layouts:
      atoms.block(l, 'an output of the function')
  atoms.frozen = True
  used = {a for l in walker.read for a in atoms.leaves(l)}
  return Analysis(atoms, in_layouts[:num_params], walker.eqn_layouts,
                  walker.products, walker.unsupported, used)


def evaluate(analysis: Analysis, closed_jaxpr, kept: dict,
             values: list, observe=None) -> list:
  """Runs the jaxpr on ``values`` (slim params first) with every family
  atom ``a`` shrunk to ``kept[a]`` channels; ``observe(eqn, in_values,
  leaf)`` sees the operands of every matmul and convolution by a parameter
  leaf, with the operand's position (the calibration inputs of one-shot
  pruning)."""
  walker = _Walker(analysis.atoms, list(analysis.eqn_layouts), kept, observe)
  jaxpr = closed_jaxpr.jaxpr
  num_params = len(analysis.param_layouts)
  in_layouts = list(analysis.param_layouts) + [
      tuple(analysis.atoms.new(d) for d in _shape(v))
      for v in jaxpr.invars[num_params:]]
  outs = walker.walk(jaxpr, in_layouts, values, closed_jaxpr.consts,
                     list(range(num_params)) + [None] * (
                         len(jaxpr.invars) - num_params))
  return [value for _, value in outs]


def trace(fn, params, args, kwargs=None) -> tuple[Any, Any]:
  """The closed jaxpr of ``fn(params, *args, **kwargs)`` with the param
  leaves as its first inputs, and the output's tree structure."""
  leaves, treedef = jax.tree.flatten(params)

  def flat(leaves, args, kwargs):
    return fn(jax.tree.unflatten(treedef, leaves), *args, **kwargs)

  closed, out_shape = jax.make_jaxpr(flat, return_shape=True)(
      leaves, args, kwargs or {})
  return closed, jax.tree.structure(out_shape)
