"""Orbax checkpoints of the whole train state plus a JSON record (step, config, data position).

The data position is the step itself: batches are a deterministic function of (seed, step), so
restoring the state is all a resumed run needs to see exactly the batches it would have seen.
"""

from __future__ import annotations

import os
from typing import Any

import flax
import jax
import ml_collections
import orbax.checkpoint as ocp


def create_manager(workdir: str, config: ml_collections.ConfigDict,
                   read_only: bool = False) -> ocp.CheckpointManager:
  """Async manager in `<workdir>/checkpoints`, keeping the last `train.keep_checkpoints`."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=config.train.keep_checkpoints,
      enable_async_checkpointing=not read_only,
      create=not read_only,
      read_only=read_only,
  )
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), 'checkpoints'), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any, config: ml_collections.ConfigDict,
         force: bool = False) -> bool:
  meta = {'step': int(step), 'data_position': int(step), 'config': config.to_dict()}
  tree = flax.serialization.to_state_dict(state)
  return manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                                    meta=ocp.args.JsonSave(_jsonable(meta))),
                      force=force)


def restore(manager: ocp.CheckpointManager, abstract_state: Any, step: int | None = None) -> tuple[Any, dict]:
  """Restore `step` (default: latest) into the shapes and shardings of `abstract_state`."""
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f'no checkpoint in {manager.directory}')
  if step not in manager.all_steps():
    raise FileNotFoundError(f'no checkpoint for step {step} in {manager.directory}; '
                            f'available: {sorted(manager.all_steps())}')
  target = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct,
                                  flax.serialization.to_state_dict(abstract_state))
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                           meta=ocp.args.JsonRestore()))
  return flax.serialization.from_state_dict(abstract_state, restored.state), restored.meta


def _jsonable(x: Any) -> Any:
  if isinstance(x, dict):
    return {k: _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, (str, int, float, bool)) or x is None:
    return x
  return str(x)
