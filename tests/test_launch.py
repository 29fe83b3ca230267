"""Launcher detection from the environment, fail-fast disagreement between processes, workdir URLs."""

from __future__ import annotations

import json
import os

import pytest

import cli_runs
from configs import default
from se_flax import checkpointing
from se_flax import launch
from se_flax import paths
from se_flax import resilience

SRUN_2_TASKS = {  # what srun -N1 -n2 sets (task 1), as read from a real SLURM 22.05 step
    'SLURM_JOB_ID': '4100', 'SLURM_STEP_ID': '0', 'SLURM_STEP_NODELIST': 'localhost', 'SLURM_PROCID': '1',
    'SLURM_LOCALID': '1', 'SLURM_NODEID': '0', 'SLURM_NTASKS': '2', 'SLURM_STEP_NUM_TASKS': '2',
    'SLURM_STEP_NUM_NODES': '1', 'SLURM_STEP_TASKS_PER_NODE': '2', 'SLURM_TASKS_PER_NODE': '2'}
SBATCH_SHELL = {'SLURM_JOB_ID': '4100', 'SLURM_PROCID': '0', 'SLURM_LOCALID': '0', 'SLURM_NTASKS': '2',
                'SLURM_NODEID': '0', 'SLURM_TASKS_PER_NODE': '2'}  # the batch script itself: no step


def dist(**fields):
  d = default.get_config().distributed
  d.update(fields)
  return d


def detect(env, tpu_host=False, **fields) -> launch.Launch:
  return launch.detect(dist(**fields), env=env, tpu_host=tpu_host)


def test_no_launcher_is_one_process_without_jax_distributed():
  got = detect({})
  assert (got.launcher, got.num_processes, got.process_id, got.initialize) == ('none', 1, 0, False)
  assert detect(SBATCH_SHELL).launcher == 'none'  # python run directly in a batch script


def test_srun_gives_coordinator_count_id_and_one_device_per_task_sharing_a_node():
  got = detect(SRUN_2_TASKS)
  assert (got.launcher, got.num_processes, got.process_id, got.initialize) == ('slurm', 2, 1, True)
  assert got.coordinator_address == f'localhost:{4100 % 4096 + 61440}'  # the port JAX derives itself
  assert got.local_device_ids == (1,)
  assert got.initialize_kwargs() == {'coordinator_address': 'localhost:61444', 'num_processes': 2,
                                     'process_id': 1, 'local_device_ids': [1],
                                     'cluster_detection_method': 'deactivate'}


@pytest.mark.parametrize('extra, want', [
    ({'SLURM_STEP_TASKS_PER_NODE': '1(x4)', 'SLURM_NODEID': '3'}, None),  # one task per host: all GPUs
    ({'SLURM_GPUS_PER_TASK': '4'}, None),  # GPUs bound to each task: all it sees
    ({'SLURM_STEP_TASKS_PER_NODE': '8,4', 'SLURM_NODEID': '1', 'SLURM_LOCALID': '3'}, (3,)),
    ({'JAX_LOCAL_DEVICE_IDS': '0,1'}, None),  # JAX reads it itself
    ({'SLURM_TRES_PER_TASK': 'gres/gpu:1'}, None),  # newer SLURM's spelling of --gpus-per-task
    ({'CUDA_VISIBLE_DEVICES': '3'}, None),  # --gpu-bind: one GPU per task, index SLURM_LOCALID absent
    ({'CUDA_VISIBLE_DEVICES': '0,1'}, (1,)),  # both tasks see both GPUs: one each
    ({'CUDA_VISIBLE_DEVICES': ''}, (1,)),
])
def test_srun_local_devices(extra, want):
  assert detect({**SRUN_2_TASKS, **extra}).local_device_ids == want


def srun_on_8_gpus(tasks: int, local_id: int, visible: str | None, **extra) -> dict[str, str]:
  """Task `local_id` of `tasks` on a node whose step has 8 GPUs, with the CUDA_VISIBLE_DEVICES that
  srun gave it (None: unset): the variables SLURM 22.05 set on a node with 8 GPUs in two NUMA domains
  (GPUs 0-3 and 4-7), read in steps of srun -n8 --gpus-per-node=8 [--gpu-bind=closest|single:1],
  srun -n8 --gpus-per-task=1, srun -n2 --gpus-per-task=4 [--gpu-bind=none]."""
  env = {**SRUN_2_TASKS, 'SLURM_STEP_NODELIST': 'gpu[1-2]', 'SLURMD_NODENAME': 'gpu1', 'SLURM_NTASKS': str(2 * tasks),
         'SLURM_STEP_NUM_TASKS': str(2 * tasks), 'SLURM_STEP_TASKS_PER_NODE': f'{tasks}(x2)', 'SLURM_NODEID': '0',
         'SLURM_PROCID': str(local_id), 'SLURM_LOCALID': str(local_id), 'SLURM_GPUS_ON_NODE': '8', **extra}
  if visible is not None:
    env['CUDA_VISIBLE_DEVICES'] = env['SLURM_STEP_GPUS'] = visible
  return env


@pytest.mark.parametrize('env, want', [
    (srun_on_8_gpus(8, 5, '0,1,2,3,4,5,6,7'), (5,)),  # no binding: task i drives GPU i
    (srun_on_8_gpus(8, 5, '5'), None),  # --gpus-per-task=1 or --gpu-bind=single:1: its one GPU
    (srun_on_8_gpus(2, 1, '4,5,6,7'), None),  # --gpus-per-task=4, or closest with one task per domain
    (srun_on_8_gpus(2, 1, None, SLURM_GPUS_PER_TASK='4'), (1,)),  # --gpu-bind=none: all see all 8
])
def test_srun_gpu_bindings(env, want):
  assert detect(env).local_device_ids == want


@pytest.mark.parametrize('env, error', [
    (srun_on_8_gpus(8, 5, '0,1,2,3'),  # --gpu-bind=closest, 8 tasks: each GPU would be local to 4 processes
     '8 tasks on node gpu1 each see 4 of its 8 GPUs (CUDA_VISIBLE_DEVICES=0,1,2,3): their GPUs overlap '
     '(e.g. --gpu-bind=closest), and each GPU must belong to one process; bind disjoint GPUs per task '
     '(--gpus-per-task=N, or --gpu-bind=single:1 with one task per GPU), or let every task see all GPUs '
     '(--gpu-bind=none) so that task i drives GPU i'),
    (srun_on_8_gpus(16, 9, '0,1,2,3,4,5,6,7'),
     '16 tasks on node gpu1 each see 8 of its 8 GPUs (CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7): more tasks than '
     'GPUs, and each GPU must belong to one process; start at most one task per GPU (--ntasks-per-node=8), '
     'or bind GPUs per task (--gpus-per-task=N)'),
    (srun_on_8_gpus(16, 9, None),
     '16 tasks on node gpu1 each see 8 of its 8 GPUs (no CUDA_VISIBLE_DEVICES): more tasks than GPUs, and '
     'each GPU must belong to one process; start at most one task per GPU (--ntasks-per-node=8), or bind '
     'GPUs per task (--gpus-per-task=N)'),
])
def test_srun_gpu_bindings_that_share_a_gpu_are_refused(env, error):
  """A GPU local to several processes would be counted once per process (a 2-node job of 8 tasks
  per node, each seeing 4 GPUs, would report 64 devices instead of 16)."""
  with pytest.raises(ValueError) as e:
    detect(env)
  assert str(e.value) == error
  assert detect({**env, 'JAX_LOCAL_DEVICE_IDS': '0'}).local_device_ids is None  # the user's choice wins


def test_srun_honours_jax_coordinator_address():
  got = detect({**SRUN_2_TASKS, 'JAX_COORDINATOR_ADDRESS': 'head.cluster:1234', 'SLURMD_NODENAME': 'node01'})
  assert got.coordinator_address == 'head.cluster:1234'
  assert got.initialize_kwargs()['coordinator_address'] == 'head.cluster:1234'
  assert got.detail == 'job 4100 step 0, 1 node(s), 2 task(s) on node01 (JAX_COORDINATOR_ADDRESS)'
  flags = detect({**SRUN_2_TASKS, 'JAX_COORDINATOR_ADDRESS': 'head:1'}, coordinator_address='other:2')
  assert flags.coordinator_address == 'other:2'  # --coordinator_address wins, as in jax.distributed
  with pytest.raises(ValueError) as e:
    detect({**SRUN_2_TASKS, 'JAX_COORDINATOR_ADDRESS': 'head'})
  assert str(e.value) == ("JAX_COORDINATOR_ADDRESS='head' must be host:port (or unset it: under srun the "
                          'coordinator is the first node of the step)')


def test_tpu_probe_is_jaxs_own_and_fails_loudly(monkeypatch):
  from jax._src import hardware_utils  # pylint: disable=g-import-not-at-top
  assert launch.has_tpu_chips() is (hardware_utils.num_available_tpu_chips_and_device_id()[0] > 0)
  monkeypatch.delattr(hardware_utils, 'num_available_tpu_chips_and_device_id')
  with pytest.raises(RuntimeError, match=r'^cannot tell whether this machine has TPU chips: jax \S+ has no '
                                         r'jax\._src\.hardware_utils\.num_available_tpu_chips_and_device_id'):
    launch.detect(dist(), env={})  # nothing else decides: the probe must answer
  # Where the answer changes nothing, nothing is probed.
  assert launch.detect(dist(initialize=False)).launcher == 'none'
  assert launch.detect(dist(initialize=True), env={}).launcher == 'auto'
  assert launch.detect(dist(coordinator_address='h:1', num_processes=2, process_id=0), env={}).launcher == 'explicit'
  assert launch.detect(dist(), env=SRUN_2_TASKS).launcher == 'slurm'
  assert launch.detect(dist(), env={'TPU_WORKER_HOSTNAMES': 'h0,h1'}).launcher == 'tpu'


def test_slurm_node_lists_and_ports():
  assert launch.first_host('gpu[007-015,020],cpu1') == 'gpu007'
  assert launch.first_host('a1,b2') == 'a1'
  assert launch.first_host('node[01-04,07]') == 'node01' and launch.first_host('node[7],x') == 'node7'
  assert launch.first_host('rack[2-3]-n[05-06]') == 'rack2-n05'  # text after a bracket is kept
  with pytest.raises(ValueError, match='cannot read SLURM node list'):
    launch.first_host('node[01-04')
  assert launch.tasks_on_node('2(x3),1', 2) == 2 and launch.tasks_on_node('2(x3),1', 3) == 1
  env = {**SRUN_2_TASKS, 'SLURM_STEP_NODELIST': 'n[12-13]', 'JAX_COORDINATOR_PORT': '1234'}
  assert detect(env).coordinator_address == 'n12:1234'
  srun_1 = {**SRUN_2_TASKS, 'SLURM_STEP_NUM_TASKS': '1', 'SLURM_PROCID': '0', 'SLURM_LOCALID': '0'}
  assert detect(srun_1).initialize is False  # srun -n1: one process, nothing to join


def test_tpu_pods_are_left_to_jax():
  got = detect({'TPU_WORKER_HOSTNAMES': 'h0,h1,h2,h3', 'TPU_WORKER_ID': '2'})
  assert (got.launcher, got.num_processes, got.initialize) == ('tpu', 4, True)
  assert got.initialize_kwargs() == {}  # JAX's own TPU detection
  vm = detect({}, tpu_host=True)  # a TPU VM from the gcloud CLI: the hosts are in its metadata
  assert (vm.launcher, vm.num_processes, vm.initialize) == ('tpu', None, True)
  assert detect({'MEGASCALE_COORDINATOR_ADDRESS': 'h0'}).launcher == 'tpu'


def test_explicit_fields_win_and_must_come_together():
  got = detect({}, coordinator_address='10.0.0.1:1234', num_processes=4, process_id=3)
  assert (got.launcher, got.num_processes, got.process_id, got.initialize) == ('explicit', 4, 3, True)
  inside = detect(SRUN_2_TASKS, coordinator_address='head:99', num_processes=2, process_id=0)
  assert (inside.launcher, inside.coordinator_address, inside.process_id) == ('explicit', 'head:99', 0)
  assert detect(SRUN_2_TASKS, coordinator_address='head:99').coordinator_address == 'head:99'
  with pytest.raises(ValueError, match=r"coordinator_address='h:1' needs distributed.num_processes, "
                                       r'distributed.process_id'):
    detect({}, coordinator_address='h:1')
  with pytest.raises(ValueError, match=r'process_id=2 must be in \[0, 2\)'):
    detect({}, coordinator_address='h:1', num_processes=2, process_id=2)
  with pytest.raises(ValueError, match='must be host:port'):
    detect({}, coordinator_address='h', num_processes=2, process_id=0)


def test_initialize_flag_forces_or_disables():
  assert detect(SRUN_2_TASKS, initialize=False).launcher == 'none'
  forced = detect({}, initialize=True)  # JAX's other detectors (Open MPI, Kubernetes, ...)
  assert (forced.launcher, forced.initialize, forced.initialize_kwargs()) == ('auto', True, {})


def test_config_comparison_ignores_per_process_fields():
  a, b = default.get_config(), default.get_config()
  b.distributed.process_id = 1
  assert launch.comparable_config(a) == launch.comparable_config(b)
  b.train.num_steps = 7
  assert launch.comparable_config(a)['train.num_steps'] is None
  assert launch.comparable_config(b)['train.num_steps'] == 7


def test_workdir_urls_and_file_paths(tmp_path):
  assert str(checkpointing.workdir_path('gs://bucket/run')) == 'gs://bucket/run'
  assert str(checkpointing.workdir_path('gs://bucket/run') / 'checkpoints') == 'gs://bucket/run/checkpoints'
  assert str(checkpointing.workdir_path(f'file://{tmp_path}/a')) == f'{tmp_path}/a'
  assert paths.resolve_workdir(f'file://{tmp_path}') == str(tmp_path)
  paths.check_workdir_writable(f'file://{tmp_path}/new/run')  # a local path, checked
  paths.check_workdir_writable('gs://bucket/run')  # a URL: not probed, nothing written
  (tmp_path / 'file').write_text('')
  with pytest.raises(ValueError, match='is not writable'):
    paths.check_workdir_writable(f'file://{tmp_path}/file/run')
  checkpointing.write_json(f'file://{tmp_path}/final_eval.json', {'top1': 0.5})
  assert json.loads((tmp_path / 'final_eval.json').read_text()) == {'top1': 0.5}
  assert sorted(os.listdir(tmp_path)) == ['file', 'final_eval.json']  # no .tmp left behind
  with resilience.WorkdirLock('gs://bucket/run'):  # no flock on object stores: a warning, no lock
    pass


def two_processes(tmp_path, digits_dir, name: str, *extra: list[str]) -> list[cli_runs.Run]:
  port = cli_runs.free_port()
  return [cli_runs.Run(cli_runs.train_args(str(tmp_path / f'{name}{i}'), digits_dir, train__num_steps=4,
                                           train__global_batch_size=32) + extra[i]
                       + [f'--coordinator_address=localhost:{port}', '--num_processes=2', f'--process_id={i}'],
                       num_devices=2, name=f'{name} process {i}') for i in range(2)]


@pytest.mark.slow
def test_two_processes_fail_alike_before_any_step(tmp_path, digits_dir):
  """Processes that disagree on the config, or a batch that the 4 devices do not divide: every
  process exits 1 with the same one line, before any step, and writes nothing."""
  runs = (two_processes(tmp_path, digits_dir, 'differ', [], ['--config.optim.lr=0.2'])
          + two_processes(tmp_path, digits_dir, 'batch', *[['--config.train.global_batch_size=30']] * 2))
  try:
    for run in runs:
      run.finish(300)
  finally:
    cli_runs.kill_all(runs)
  want = ["error: processes disagree on the config: optim.lr=0.1 on process 0 but 0.2 on process 1; "
          "give every process the same --config and overrides"] * 2 + [
          'error: train.global_batch_size=30 must be a positive multiple of the device count 4'] * 2
  assert [r.stderr[-1] for r in runs] == want, [r.tail() for r in runs]
  assert [r.proc.returncode for r in runs] == [1] * 4
  assert not any(r.step_lines() for r in runs)
  assert os.listdir(tmp_path) == []  # no workdir was created
