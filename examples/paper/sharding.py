"""Data-parallel and fully-sharded (FSDP-style) placement with jax.sharding.

``config.sharding`` picks the mode:

* ``'none'``: everything on the default device.
* ``'data'``: parameters and optimizer state replicated; each batch split
  along the mesh's ``data`` axis; XLA inserts the gradient all-reduce.
* ``'fsdp'``: every array of the parameters and optimizer state split along
  its largest dimension divisible by the number of devices (replicated if
  none is), and batches split as in ``'data'``; XLA gathers weights where a
  layer needs them and reduce-scatters gradients.

GSM's selection needs no gather in either mode: each counting pass of its
search counts locally and all-reduces one scalar.
"""

import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

MODES = ('none', 'data', 'fsdp')


def make_mesh(config) -> Mesh | None:
  """A mesh over all devices shaped ``config.mesh_shape`` (-1: the rest)."""
  if config.sharding not in MODES:
    raise ValueError(f'config.sharding must be one of {MODES}; got '
                     f'{config.sharding!r}.')
  if config.sharding == 'none':
    return None
  shape = tuple(config.mesh_shape)
  devices = np.array(jax.devices())
  try:
    devices = devices.reshape(shape)
  except ValueError as e:
    raise ValueError(f'config.mesh_shape={shape} does not fit the '
                     f'{devices.size} devices.') from e
  return Mesh(devices, tuple(config.mesh_axes))


def _fsdp_spec(shape, num_shards, axis_name):
  axes = [i for i, d in enumerate(shape) if d % num_shards == 0 and d > 0]
  if not axes:
    return P()
  axis = max(axes, key=lambda i: shape[i])
  spec = [None] * len(shape)
  spec[axis] = axis_name
  return P(*spec)


def state_shardings(state, mesh: Mesh, mode: str):
  """A NamedSharding for every array of ``state`` (params, optimizer)."""
  axis = mesh.axis_names[0]
  def spec(x):
    if mode == 'fsdp' and np.ndim(x) > 0:
      return NamedSharding(mesh, _fsdp_spec(np.shape(x), mesh.shape[axis],
                                            axis))
    return NamedSharding(mesh, P())
  return jax.tree.map(spec, state)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Split the leading (batch) dimension along the first mesh axis."""
  return NamedSharding(mesh, P(mesh.axis_names[0]))


def place(state, mesh, mode):
  """Puts ``state`` on the mesh; returns it and its shardings.

  ``state`` holds the same values in every process (a fresh model, or one
  restored from a checkpoint). With several processes each builds the
  shards of its own devices from them: `jax.device_put` cannot place
  values on another process's devices.
  """
  if mesh is None:
    # Committed to its device, as the train step's outputs are: from an
    # uncommitted state the step would compile again at its second call.
    arrays = [x for x in jax.tree.leaves(state) if isinstance(x, jax.Array)]
    device = next(iter(arrays[0].devices())) if arrays else jax.devices()[0]
    return jax.device_put(state, device), None
  shardings = state_shardings(state, mesh, mode)
  if jax.process_count() == 1:
    return jax.device_put(state, shardings), shardings

  def put(x, sharding):
    host = np.asarray(jax.device_get(x)) if (
        not isinstance(x, jax.Array) or x.is_fully_addressable) else None
    if host is None:  # already global: reshard in place
      return jax.device_put(x, sharding)
    return jax.make_array_from_callback(host.shape, sharding,
                                        lambda index: host[index])

  return jax.tree.map(put, state, shardings), shardings
