"""Orbax checkpoints of the whole train state plus a JSON record (step, config, data position).

The data position is the step itself: batches are a deterministic function of (seed, step), so
restoring the state is all a resumed run needs to see exactly the batches it would have seen.
Saves are atomic (orbax writes to a temporary directory and renames it on commit), so a run
killed mid-save leaves the previous checkpoints as they were. A damaged checkpoint found at
start-up is set aside (renamed, never deleted) and the newest good one is used instead.

Workdirs may be URLs (gs://...): paths go through `etils.epath`, as orbax's do.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from absl import logging
from etils import epath
import flax
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from se_flax import errors
from se_flax import paths
from se_flax import trees


class CheckpointMismatchError(errors.UserError, ValueError):
  """The checkpoint holds a different model (keys or shapes) than the config builds."""


def workdir_path(workdir: str | os.PathLike) -> epath.Path:
  """A workdir as a path: URLs (gs://...) as given, 'file://' stripped, local paths made absolute."""
  workdir = paths.resolve_workdir(os.fspath(workdir))
  return epath.Path(workdir if paths.is_url(workdir) else os.path.abspath(workdir))


def has_checkpoint(workdir: str | os.PathLike) -> bool:
  """Whether `workdir` holds a committed checkpoint (checkpoints/<step>): a rerun resumes from it."""
  ckpts = workdir_path(workdir) / 'checkpoints'
  return ckpts.is_dir() and any(p.name.isdigit() for p in ckpts.iterdir())


def write_json(path: str | os.PathLike, obj: Any) -> None:
  """Write `obj` whole or not at all, whenever the process dies: a local file through a rename; an
  object store (gs://) creates an object only when its upload completes, so it is written directly."""
  path = workdir_path(path)
  text = json.dumps(obj, indent=1)
  if paths.is_url(path):
    path.write_text(text)
    return
  tmp = path.with_name(path.name + '.tmp')
  tmp.write_text(text)
  os.replace(tmp, path)


def create_manager(workdir: str, config: ml_collections.ConfigDict,
                   read_only: bool = False) -> ocp.CheckpointManager:
  """Async manager in `<workdir>/checkpoints`, keeping the last `train.keep_checkpoints`."""
  # Replica-parallel saving compiles a slicing op per array shape at a process's first save
  # (docs/speed_notes.md, section 6). The state is replicated, so one replica writes each array whole.
  ocp.type_handlers.register_type_handler(
      jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True)
  options = ocp.CheckpointManagerOptions(
      max_to_keep=config.train.keep_checkpoints,
      enable_async_checkpointing=not read_only,
      create=not read_only,
      read_only=read_only,
      cleanup_tmp_directories=not read_only,  # leftovers of a save interrupted by a kill
  )
  manager = ocp.CheckpointManager(
      workdir_path(workdir) / 'checkpoints', options=options,
      item_handlers={'state': ocp.StandardCheckpointHandler(), 'meta': ocp.JsonCheckpointHandler()})
  # Orbax removes those leftovers in a background thread; let it finish before the run goes on, so
  # that start-up is one sequence (under tfds.testing.mock_data, whose file-system patch is
  # process-wide for moments while a mocked dataset loads, a concurrent listing read the mocked tree).
  await_cleanup = getattr(manager, '_maybe_await_cleanup_tmp_directory', None)
  if await_cleanup is not None:
    await_cleanup()
  return manager


def save(manager: ocp.CheckpointManager, step: int, state: Any, config: ml_collections.ConfigDict,
         force: bool = False) -> bool:
  meta = {'step': int(step), 'data_position': int(step), 'config': config.to_dict()}
  tree = flax.serialization.to_state_dict(state)
  return manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                                    meta=ocp.args.JsonSave(trees.jsonable(meta))),
                      force=force)


def _flat_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """'params/layer1_0/conv1/kernel' -> shape, for a state tree or orbax's metadata of one."""
  return {k: tuple(getattr(v, 'shape', ())) for k, v in trees.flatten(tree).items()}


def check_compatible(manager: ocp.CheckpointManager, step: int, state: Any) -> None:
  """Raise CheckpointMismatchError listing keys and shapes that differ from `state`'s."""
  stored = _flat_shapes(manager.item_metadata(step)['state'])
  wanted = _flat_shapes(flax.serialization.to_state_dict(state))
  missing = sorted(set(wanted) - set(stored))
  extra = sorted(set(stored) - set(wanted))
  shapes = sorted(f'{k} {stored[k]} vs {wanted[k]}' for k in set(stored) & set(wanted)
                  if stored[k] != wanted[k])
  if missing or extra or shapes:
    parts = [f'{len(missing)} missing: {", ".join(missing[:8])}' if missing else '',
             f'{len(extra)} unexpected: {", ".join(extra[:8])}' if extra else '',
             f'{len(shapes)} shape mismatches (checkpoint vs model): {", ".join(shapes[:8])}' if shapes else '']
    raise CheckpointMismatchError(
        f'checkpoint {manager.directory}/{step} does not fit the configured model: '
        + '; '.join(p for p in parts if p) + ' (a different model or num_classes?)')


def restore(manager: ocp.CheckpointManager, abstract_state: Any, step: int | None = None) -> tuple[Any, dict]:
  """Restore `step` (default: latest) into the shapes and shardings of `abstract_state`."""
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f'no checkpoint in {manager.directory}')
  if step not in manager.all_steps():
    raise FileNotFoundError(f'no checkpoint for step {step} in {manager.directory}; '
                            f'available: {sorted(manager.all_steps())}')
  check_compatible(manager, step, abstract_state)
  target = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct,
                                  flax.serialization.to_state_dict(abstract_state))
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                           meta=ocp.args.JsonRestore()))
  state = flax.serialization.from_state_dict(abstract_state, restored.state)
  if not all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(state.params)):
    raise ValueError(f'checkpoint {manager.directory}/{step} holds non-finite parameters')
  return state, restored.meta


def restore_newest_good(manager: ocp.CheckpointManager, state: Any) -> tuple[Any, int | None]:
  """Restore the newest checkpoint that reads back; set damaged ones aside with a warning.

  A checkpoint for a different model is not damage: CheckpointMismatchError propagates and
  nothing is moved. Returns (state, restored step or None when there is no good checkpoint).
  """
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      return restore(manager, state, step)[0], step
    except CheckpointMismatchError:
      raise
    except Exception as e:  # pylint: disable=broad-except  (any read failure means damage)
      moved = _set_aside(manager, step)
      logging.warning('checkpoint %s/%d is damaged (%s: %s); set aside as %s, falling back to an '
                      'older one', manager.directory, step, type(e).__name__, str(e).splitlines()[0][:200],
                      moved)
  return state, None


def _set_aside(manager: ocp.CheckpointManager, step: int) -> str:
  """Rename a damaged step directory so orbax no longer lists it; its bytes stay on disk."""
  src = epath.Path(manager.directory) / str(step)
  dst = src.with_name(f'{step}.damaged-{time.strftime("%Y%m%d-%H%M%S")}')
  if jax.process_index() == 0:
    src.rename(dst)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f'se_flax_set_aside_{step}')
  manager.reload()
  return str(dst)

