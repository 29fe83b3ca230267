"""Start-up under a launcher: one process, SLURM (`srun`), a TPU pod, or explicit coordinates.

Every multi-process run is JAX's multi-controller runtime: `jax.distributed.initialize()` is called
once, before any computation, and every process runs the same program on its own devices.

- `none`: no launcher below; one process, `jax.distributed` is not started.
- `slurm`: a job step started by `srun` (`SLURM_JOB_ID`, `SLURM_STEP_NODELIST`, `SLURM_PROCID`). The
  coordinator is `JAX_COORDINATOR_ADDRESS` if set (as JAX itself reads it), else the step's first
  node at the port JAX derives from the job id (or `JAX_COORDINATOR_PORT`); process count and id
  come from SLURM; local devices as below.
- `tpu`: a Cloud TPU VM (`TPU_WORKER_HOSTNAMES`, `TPU_PROCESS_ADDRESSES`, `MEGASCALE_*`, or TPU chips
  on the PCI bus): `jax.distributed.initialize()` without arguments, JAX reads the pod's metadata.
- `explicit`: `config.distributed.{coordinator_address,num_processes,process_id}` (or the flags of
  the same names of train.py and eval.py), passed as they are; they also override a launcher's.
- `auto`: `config.distributed.initialize=True` and nothing above: JAX's other detectors (Open MPI,
  Kubernetes, ...).

Local devices under SLURM (`slurm_local_devices`): one task per node (process per host), or GPUs
bound to each task (`--gpus-per-task`, `--gpu-bind=single:1`), use every device the process sees;
several tasks per node that all see the node's GPUs each drive the one at index `SLURM_LOCALID`
(JAX's convention). Bindings that would make a GPU local to two processes (`--gpu-bind=closest`
with more tasks than NUMA domains) are refused with a one-line error. `JAX_LOCAL_DEVICE_IDS`
overrides all of this. A batch script's own shell is not a job step: `python train.py` there runs
one process; start the processes with `srun`.

`config.distributed.initialize`: None (default) initializes whenever the launcher implies more than
one process (or cannot tell, on a TPU VM), True always, False never.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
from typing import Any, Callable, Mapping

from absl import logging
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from se_flax import errors
from se_flax import trees

LAUNCHERS = ('none', 'slurm', 'tpu', 'explicit', 'auto')
EXPLICIT_FIELDS = ('coordinator_address', 'num_processes', 'process_id')
_TPU_ENV = ('TPU_WORKER_HOSTNAMES', 'TPU_PROCESS_ADDRESSES', 'MEGASCALE_COORDINATOR_ADDRESS')
_NOT_COMPARED = ('distributed',)  # fields that legitimately differ between processes (process_id)


@dataclasses.dataclass(frozen=True)
class Launch:
  """Where this process runs; None means 'decided by jax.distributed.initialize' (TPU pods)."""

  launcher: str
  num_processes: int | None = 1
  process_id: int | None = 0
  coordinator_address: str | None = None
  local_device_ids: tuple[int, ...] | None = None
  detail: str = ''
  initialize: bool = False  # whether jax.distributed.initialize() is (to be) called
  passed: tuple[str, ...] = EXPLICIT_FIELDS  # fields given to JAX; the others it detects itself

  def initialize_kwargs(self) -> dict[str, Any]:
    """Arguments for jax.distributed.initialize: explicit where known, JAX's detection otherwise."""
    kwargs = {k: getattr(self, k) for k in self.passed if getattr(self, k) is not None}
    if self.local_device_ids is not None:
      kwargs['local_device_ids'] = list(self.local_device_ids)
    if len([k for k in EXPLICIT_FIELDS if k in kwargs]) == 3:
      # All known: JAX's SLURM detection would otherwise restrict each process to one GPU.
      kwargs['cluster_detection_method'] = 'deactivate'
    return kwargs


# ---------------------------------------------------------------------------------------------
# Detection (pure functions of the config and the environment)


def first_host(nodelist: str) -> str:
  """The first host of a SLURM node list: 'node[001-004,9],gpu7' -> 'node001', 'node[7]' -> 'node7',
  'rack[2-3]-n[05-06]' -> 'rack2-n05' (each bracket's first number, the text around it kept)."""
  host, rest = '', nodelist.strip()
  while rest and rest[0] != ',':
    if rest[0] == '[':
      inner, sep, rest = rest[1:].partition(']')
      if not sep:
        raise errors.ConfigError(f'cannot read SLURM node list {nodelist!r} (unclosed bracket)')
      host += re.split(r'[,-]', inner, maxsplit=1)[0]
    else:
      host, rest = host + rest[0], rest[1:]
  if not host:
    raise errors.ConfigError(f'cannot read SLURM node list {nodelist!r}')
  return host


def tasks_on_node(tasks_per_node: str, node_id: int) -> int:
  """SLURM's '2(x3),1' (2 tasks on each of 3 nodes, then 1) -> the task count of node `node_id`."""
  counts = []
  for part in tasks_per_node.split(','):
    m = re.fullmatch(r'(\d+)(?:\(x(\d+)\))?', part.strip())
    if not m:
      raise errors.ConfigError(f'cannot read SLURM tasks per node {tasks_per_node!r}')
    counts += [int(m.group(1))] * int(m.group(2) or 1)
  return counts[min(node_id, len(counts) - 1)]


def _slurm(env: Mapping[str, str]) -> Launch | None:
  if not all(k in env for k in ('SLURM_JOB_ID', 'SLURM_STEP_NODELIST', 'SLURM_PROCID')):
    return None
  job, step = int(env['SLURM_JOB_ID']), env.get('SLURM_STEP_ID', '?')
  num_processes = int(env.get('SLURM_STEP_NUM_TASKS') or env['SLURM_NTASKS'])
  node = env.get('SLURMD_NODENAME', socket.gethostname())
  local_tasks = tasks_on_node(env.get('SLURM_STEP_TASKS_PER_NODE') or env.get('SLURM_TASKS_PER_NODE')
                              or '1', int(env.get('SLURM_NODEID', 0)))
  coordinator, origin = env.get('JAX_COORDINATOR_ADDRESS'), ' (JAX_COORDINATOR_ADDRESS)'
  if coordinator is None:  # JAX's own choice: the step's first node, a port derived from the job id
    port = env.get('JAX_COORDINATOR_PORT') or str(job % 2**12 + 65535 - 2**12 + 1)
    coordinator, origin = f'{first_host(env["SLURM_STEP_NODELIST"])}:{port}', ''
  elif not re.fullmatch(r'.+:\d+', coordinator):
    raise ValueError(f'JAX_COORDINATOR_ADDRESS={coordinator!r} must be host:port (or unset it: under srun '
                     'the coordinator is the first node of the step)')
  return Launch('slurm', num_processes, int(env['SLURM_PROCID']), coordinator,
                slurm_local_devices(env, local_tasks, node),
                f'job {job} step {step}, {env.get("SLURM_STEP_NUM_NODES", "?")} node(s), '
                f'{local_tasks} task(s) on {node}{origin}')


def _count(ids: str | None) -> int | None:
  """'0,1,5' -> 3 (GPU indices or UUIDs); None for unset or empty."""
  return len([i for i in (ids or '').split(',') if i.strip()]) or None


def slurm_local_devices(env: Mapping[str, str], local_tasks: int, node: str = '?') -> tuple[int, ...] | None:
  """The devices of a task that shares its node with `local_tasks - 1` others (None: all it sees).

  srun sets SLURM_GPUS_ON_NODE (the step's GPUs on this node) and, per task, CUDA_VISIBLE_DEVICES
  (ROCR_VISIBLE_DEVICES on AMD) to the GPUs the task may use, unset under --gpu-bind=none. Tasks
  that see all of the node's GPUs each drive the one at index SLURM_LOCALID (JAX's convention).
  Tasks that see fewer drive all they see, if together they see no more GPUs than the node has
  (--gpus-per-task, --gpu-bind=single:1 with a task per GPU). Otherwise a GPU would be local to
  several processes (--gpu-bind=closest: each task sees every GPU of its NUMA domain), which JAX
  does not allow: refused, as are more tasks than GPUs. A count that fits is necessary, not
  sufficient: two tasks given the same GPU by an explicit map_gpu list are not detected here.
  Without SLURM_GPUS_ON_NODE (or SLURM_JOB_GPUS), fewer visible GPUs than tasks is taken as a
  binding of disjoint GPUs.
  """
  if local_tasks <= 1 or 'JAX_LOCAL_DEVICE_IDS' in env:  # JAX reads JAX_LOCAL_DEVICE_IDS itself
    return None
  local_id = (int(env.get('SLURM_LOCALID', 0)),)
  on_node = (int(env['SLURM_GPUS_ON_NODE']) if env.get('SLURM_GPUS_ON_NODE', '').isdigit()
             else _count(env.get('SLURM_JOB_GPUS'))) or None
  name = next((k for k in ('CUDA_VISIBLE_DEVICES', 'ROCR_VISIBLE_DEVICES') if _count(env.get(k))), None)
  if on_node is None:  # CPU devices, or GPUs that SLURM does not count
    per_task = 'SLURM_GPUS_PER_TASK' in env or 'gpu' in env.get('SLURM_TRES_PER_TASK', '')
    bound = per_task or (name is not None and _count(env[name]) < local_tasks)
    return None if bound else local_id
  visible = _count(env[name]) if name else on_node  # nothing listed: no binding, all GPUs visible
  shown = f'{name}={env[name]}' if name else 'no CUDA_VISIBLE_DEVICES'
  seen = f'{local_tasks} tasks on node {node} each see {visible} of its {on_node} GPUs ({shown})'
  if visible >= on_node and local_tasks > on_node:
    raise ValueError(f'{seen}: more tasks than GPUs, and each GPU must belong to one process; start at most '
                     f'one task per GPU (--ntasks-per-node={on_node}), or bind GPUs per task (--gpus-per-task=N)')
  if visible < on_node and visible * local_tasks > on_node:
    raise ValueError(f'{seen}: their GPUs overlap (e.g. --gpu-bind=closest), and each GPU must belong to one '
                     'process; bind disjoint GPUs per task (--gpus-per-task=N, or --gpu-bind=single:1 with one '
                     'task per GPU), or let every task see all GPUs (--gpu-bind=none) so that task i drives GPU i')
  return local_id if visible >= on_node else None


def has_tpu_chips() -> bool:
  """TPU chips on this machine's PCI bus, by JAX's own check (the one that makes JAX treat the
  machine as a Cloud TPU VM). JAX has no public function for it: should this JAX have moved it,
  fail loudly rather than start a pod's hosts as unrelated single-process runs."""
  try:
    from jax._src import hardware_utils  # pylint: disable=g-import-not-at-top
    count = hardware_utils.num_available_tpu_chips_and_device_id
  except (ImportError, AttributeError) as e:
    raise RuntimeError(
        f'cannot tell whether this machine has TPU chips: jax {jax.__version__} has no '
        f'jax._src.hardware_utils.num_available_tpu_chips_and_device_id ({e}); set '
        '--config.distributed.initialize=True on a TPU pod (False for one process), or give '
        '--coordinator_address, --num_processes and --process_id') from e
  return count()[0] > 0


def _tpu(env: Mapping[str, str], tpu_host: Callable[[], bool]) -> Launch | None:
  hosts = env.get('TPU_PROCESS_ADDRESSES') or env.get('TPU_WORKER_HOSTNAMES')
  if hosts:
    n = len(hosts.split(',')) * int(env.get('MEGASCALE_NUM_SLICES') or 1)
    return Launch('tpu', n, None, detail=f'{n} host(s) from the environment')
  if any(k in env for k in _TPU_ENV) or tpu_host():
    return Launch('tpu', None, None, detail='Cloud TPU VM; hosts from its metadata')
  return None


def detect(dist: ml_collections.ConfigDict | Mapping[str, Any], env: Mapping[str, str] | None = None,
           tpu_host: bool | None = None) -> Launch:
  """The launcher and the jax.distributed arguments implied by `config.distributed` and `env`."""
  env = os.environ if env is None else env
  wanted = dist.get('initialize')
  if wanted is False:
    return Launch('none', detail='config.distributed.initialize=False')
  explicit = {k: dist.get(k) for k in EXPLICIT_FIELDS if dist.get(k) is not None}

  def on_tpu_vm() -> bool:  # probed only where the answer changes the launch
    if tpu_host is not None:
      return tpu_host
    return not (len(explicit) == 3 or wanted and not explicit) and has_tpu_chips()

  found = _slurm(env) or _tpu(env, on_tpu_vm)
  if len(explicit) == 3:
    launch = Launch('explicit', **explicit, local_device_ids=found and found.local_device_ids,
                    detail=f'inside {found.launcher}' if found else '')
  elif found:
    launch = dataclasses.replace(found, **explicit)
    if found.launcher == 'tpu':
      launch = dataclasses.replace(launch, passed=tuple(explicit))
  elif explicit:
    missing = ', '.join(f'distributed.{k}' for k in EXPLICIT_FIELDS if k not in explicit)
    given = ', '.join(f'distributed.{k}={v!r}' for k, v in explicit.items())
    raise errors.ConfigError(f'{given} needs {missing} too (or a launcher that provides them: srun, a TPU pod)')
  elif wanted:
    launch = Launch('auto', None, None, detail="JAX's own cluster detection", passed=())
  else:
    return Launch('none')
  n, i = launch.num_processes, launch.process_id
  if n is not None and n < 1:
    raise errors.ConfigError(f'distributed.num_processes={n} must be at least 1')
  if n is not None and i is not None and not 0 <= i < n:
    raise errors.ConfigError(f'distributed.process_id={i} must be in [0, {n}) for num_processes={n}')
  if launch.coordinator_address is not None and not re.fullmatch(r'.+:\d+', launch.coordinator_address):
    raise errors.ConfigError(f'distributed.coordinator_address={launch.coordinator_address!r} must be host:port')
  return dataclasses.replace(launch, initialize=bool(wanted) or n != 1)


# ---------------------------------------------------------------------------------------------
# Start-up

_current: Launch | None = None
_agreed: set[str] = set()


def initialize(config: ml_collections.ConfigDict) -> Launch:
  """Detect the launcher and call jax.distributed.initialize() if it implies several processes.

  Idempotent: later calls return the first call's Launch. Call before any JAX computation.
  """
  global _current
  if _current is None:
    launch = detect(config.distributed)
    if launch.initialize and not jax.distributed.is_initialized():
      jax.distributed.initialize(**launch.initialize_kwargs())
    _current = launch
  return _current


def current() -> Launch:
  return _current or Launch('none')


def comparable_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as flat 'a.b' -> JSON-able value, without the fields that differ per process."""
  return trees.flat_config(config, skip=_NOT_COMPARED)


def _allgather_text(text: str) -> list[str]:
  """Every process's `text`, in process order (two small all-gathers: lengths, then bytes)."""
  data = np.frombuffer(text.encode(), np.uint8)
  sizes = np.asarray(multihost_utils.process_allgather(np.array([data.size], np.int32))).reshape(-1)
  padded = np.zeros(-(-int(sizes.max()) // 1024) * 1024, np.uint8)
  padded[:data.size] = data
  rows = np.asarray(multihost_utils.process_allgather(padded)).reshape(len(sizes), -1)
  return [bytes(row[:n]).decode() for row, n in zip(rows, sizes)]


def check_agreement(config: ml_collections.ConfigDict, validate: Callable[[Any], None],
                    context: str = '') -> None:
  """Validate locally, then make every process fail alike on any disagreement or local error.

  One all-gather of (config, validation error) per distinct config: processes that were given
  different configs, or a config that one process rejects (data missing on one host), raise the
  same errors.ConfigError on every process before any step, instead of one process exiting while
  the others wait in a collective. A single process raises what `validate` raised if it is an
  errors.UserError, else a ConfigError with its message. A config passed for the same `context`
  (what else `validate` depends on, such as whether the run resumes) is checked once.
  """
  mine = comparable_config(config)
  key = context + json.dumps(mine, sort_keys=True)
  if key in _agreed:
    return
  try:
    validate(config)
    error = None
  except errors.INPUT_ERRORS as e:
    if jax.process_count() == 1:
      if isinstance(e, errors.UserError):
        raise
      raise errors.ConfigError(str(e)) from e
    error = ' '.join(str(e).split())
  if jax.process_count() == 1:
    _agreed.add(key)
    return
  everyone = [json.loads(t) for t in _allgather_text(json.dumps({'config': mine, 'error': error}))]
  first = everyone[0]['config']
  diffs = []
  for p, other in enumerate(everyone[1:], 1):
    for k in sorted(set(first) | set(other['config'])):
      if json.dumps(first.get(k)) != json.dumps(other['config'].get(k)):  # NaN equals NaN here
        diffs.append(f'{k}={first.get(k)!r} on process 0 but {other["config"].get(k)!r} on process {p}')
  if diffs:
    more = f' (and {len(diffs) - 4} more)' if len(diffs) > 4 else ''
    raise errors.ConfigError('processes disagree on the config: ' + '; '.join(diffs[:4]) + more
                             + '; give every process the same --config and overrides')
  refused = [(p, e['error']) for p, e in enumerate(everyone) if e['error']]
  if refused:
    p, message = refused[0]
    where = '' if len(refused) == len(everyone) else f'on process {p}: '
    raise errors.ConfigError(where + message)
  _agreed.add(key)


def log_startup(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> None:
  """Process 0: launcher, processes, devices, mesh and batch sizes; every process: where it runs."""
  launch, n = current(), jax.process_count()
  logging.info('process %d of %d: pid %d on %s, %d local devices %s', jax.process_index(), n, os.getpid(),
               socket.gethostname(), jax.local_device_count(), [d.id for d in jax.local_devices()])
  if jax.process_index() != 0:
    return
  detail = ', '.join(x for x in (launch.detail, launch.coordinator_address and
                                 f'coordinator {launch.coordinator_address}') if x)
  logging.info('launcher: %s%s', launch.launcher, f' ({detail})' if detail else '')
  logging.info('processes: %d; devices: %d local, %d global (%s)', n, jax.local_device_count(),
               jax.device_count(), jax.devices()[0].platform)
  train, evals = config.train.global_batch_size, config.eval.global_batch_size
  devices = mesh.devices.size
  logging.info('mesh: %s; global batch %d (%d per process, %d per device), eval batch %d (%d per process)',
               dict(mesh.shape), train, train // n, train // devices, evals, evals // n)
