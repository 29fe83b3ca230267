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
