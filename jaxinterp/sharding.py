"""Running sweeps and training across devices with JAX's own sharding (`docs/sharding.md`).

A sweep (`cd_sweep`, `patching.activation_sweep`) is a map over independent items (source sets, patches): given a
`Mesh`, its items are split across the mesh's devices with `jax.shard_map`, each device maps over its share in
chunks, and the model's weights are replicated. Training (`jaxinterp.train`, `features.train_sae`) given a mesh is
data-parallel: each batch is split along its first axis (`NamedSharding`), the parameters and optimiser state are
replicated, and XLA's partitioner inserts the gradient all-reduce. Nothing here assumes a CPU, a GPU or a TPU; on a
multi-host system call `initialize_distributed` first and build the mesh over `jax.devices()`, which then spans
every host.
"""

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "items"


def mesh(devices: Sequence[jax.Device] | int | None = None, axis: str = AXIS) -> Mesh:
    """A one-dimensional mesh for sweeps and data-parallel training.

    **Arguments:**

    - `devices`: the devices (default: all of `jax.devices()`, every host's on a multi-host system), or how many of
      the first ones to use.
    - `axis`: the mesh axis name.

    **Returns:** a `jax.sharding.Mesh` with one automatically partitioned axis.
    """
    available = jax.devices()
    if devices is None:
        chosen = available
    elif isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        if not 1 <= devices <= len(available):
            raise ValueError(f"asked for {devices} devices, but {len(available)} are available: {available}")
        chosen = available[:devices]
    else:
        chosen = list(devices)
        if not chosen:
            raise ValueError("mesh: the list of devices is empty")
    return Mesh(np.asarray(chosen), (axis,), axis_types=(AxisType.Auto,))


def check_mesh(mesh_: Mesh | None) -> Mesh | None:
    """`mesh_` itself when it is `None` or a one-dimensional `jax.sharding.Mesh`; otherwise a `TypeError` (not a
    mesh) or a `ValueError` (more than one axis). The entry points that take `mesh=` call it first."""
    if mesh_ is not None:
        _axis_of(mesh_)
    return mesh_


def _axis_of(mesh_: Mesh) -> str:
    if not isinstance(mesh_, Mesh):
        raise TypeError(
            f"mesh must be a jax.sharding.Mesh (e.g. jaxinterp.sharding.mesh()), got {type(mesh_).__name__}"
        )
    if len(mesh_.axis_names) != 1:
        raise ValueError(
            f"sweeps and data-parallel training use a one-dimensional mesh; this one has axes {mesh_.axis_names}"
        )
    return mesh_.axis_names[0]


def map_items(fn: Callable, items: Any, *, batch_size: int | None, mesh: Mesh | None = None) -> Any:
    """`jax.lax.map(fn, items, batch_size=batch_size)`, split across the devices of `mesh`.

    With a mesh, the leading axis of `items` (a pytree of arrays) is padded to a multiple of the device count by
    repeating its last item, split across the devices with `jax.shard_map`, mapped on each device in chunks of
    `batch_size`, and the padding is dropped. Values that `fn` closes over (the model's weights, the forward's
    values) are replicated. The result equals the unsharded map.

    **Arguments:**

    - `fn`: a function of one item.
    - `items`: a pytree of arrays with a common leading axis.
    - `batch_size`: items evaluated together on one device (`None`: all of a device's share at once).
    - `mesh`: a one-dimensional mesh (`jaxinterp.sharding.mesh()`), or `None` to map on the default device.

    **Returns:** the stacked outputs of `fn`, a leading axis over the items.
    """
    if mesh is None:
        return jax.lax.map(fn, items, batch_size=batch_size)
    axis = _axis_of(mesh)
    n_devices = mesh.devices.size
    n_items = jax.tree_util.tree_leaves(items)[0].shape[0]
    padded = -(-n_items // n_devices) * n_devices

    def pad(x):
        if padded == n_items:
            return x
        return jnp.concatenate([x, jnp.repeat(x[-1:], padded - n_items, axis=0)])

    items = jax.tree_util.tree_map(pad, items)
    items = jax.lax.with_sharding_constraint(items, NamedSharding(mesh, P(axis)))
    local_batch = None if batch_size is None else min(batch_size, padded // n_devices)

    def local(share):
        return jax.lax.map(fn, share, batch_size=local_batch)

    # check_vma=False: the decomposition's interpreter binds primitives directly, mixing values that vary across
    # the devices with replicated ones that the automatic `pvary` of ordinary tracing would have marked; every
    # output is per-item, which out_specs=P(axis) states.
    out = jax.shard_map(local, mesh=mesh, in_specs=P(axis), out_specs=P(axis), check_vma=False)(items)
    return jax.tree_util.tree_map(lambda x: x[:n_items], out)


def shard_along(x: Any, mesh: Mesh, dim: int = 0) -> jax.Array:
    """Place one array on `mesh` split along its axis `dim`; replicated when it has no such axis or the device
    count does not divide that axis's length.

    **Returns:** the sharded `jax.Array`.
    """
    axis = _axis_of(mesh)
    x = x if isinstance(x, (jax.Array, np.ndarray)) else np.asarray(x)
    spec = [None] * x.ndim
    if x.ndim > dim and x.shape[dim] % mesh.devices.size == 0:
        spec[dim] = axis
    return jax.device_put(x, NamedSharding(mesh, P(*spec)))


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """Place a batch on `mesh` split along its first axis (data parallelism, `shard_along` of every array);
    other leaves are kept.

    **Returns:** the batch as sharded `jax.Array`s.
    """
    _axis_of(mesh)
    return jax.tree_util.tree_map(
        lambda x: shard_along(x, mesh) if isinstance(x, (jax.Array, np.ndarray)) else x, batch
    )


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place every array of `tree` on all devices of `mesh` (weights, optimiser state); other leaves are kept."""
    sharding = NamedSharding(mesh, P())
    return jax.tree_util.tree_map(
        lambda x: jax.device_put(x, sharding) if isinstance(x, (jax.Array, np.ndarray)) else x, tree
    )


_TRAINING_MESH: list[Mesh | None] = [None]


@contextlib.contextmanager
def training_mesh(mesh_: Mesh | None) -> Iterator[Mesh | None]:
    """Within this context, `jaxinterp.train` (and so every experiment's training) is data-parallel over `mesh_`
    unless it is given a mesh of its own. `python -m experiments.<slug> --devices N` runs the experiment inside it.

    **Arguments:** `mesh_`, a one-dimensional mesh, or `None` for one device.
    """
    previous = _TRAINING_MESH[0]
    _TRAINING_MESH[0] = check_mesh(mesh_)
    try:
        yield mesh_
    finally:
        _TRAINING_MESH[0] = previous


def current_training_mesh() -> Mesh | None:
    """The mesh set by the innermost `training_mesh` context, or `None`."""
    return _TRAINING_MESH[0]


def initialize_distributed(**kwargs) -> None:
    """Join a multi-host run: `jax.distributed.initialize(**kwargs)`, once per process, before any other JAX call.

    On Cloud TPU slices, and under SLURM or Open MPI, JAX finds the coordinator and the process ids itself;
    elsewhere pass `coordinator_address`, `num_processes` and `process_id`. Afterwards `jax.devices()`, and so
    `mesh()`, span every host.
    """
    jax.distributed.initialize(**kwargs)
