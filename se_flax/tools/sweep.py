"""Run an ablation sweep: each member trains and evaluates in its own sub-workdir, via train.py.

  python -m se_flax.tools.sweep --config=configs/digits.py --sweep=configs/sweeps/reduction.py \
      --workdir=DIR [--parallel=K] [--task_index=I] [--dry_run] [--config.any.field=value ...]

Run it from the repository root: config and sweep files import `configs.*`.
Members are the override dicts of the sweep file (`configs/sweeps/`, see `se_flax.hyper`); member
I trains in DIR/<its name> with `train.py --config=... <base overrides> <its overrides>`, so a
member is exactly a train.py run. Before it starts, the member's overrides are recorded in
DIR/<name>/sweep_member.json. A finished member (final_eval.json present, and the record naming
the same overrides) is skipped and a half-finished one resumes from its checkpoint, so killing and
rerunning a sweep loses nothing. A member directory recorded with other overrides (the sweep file
changed, but the name did not) is an error rather than skipped or resumed: move it away or use
another DIR. DIR is a local or network-filesystem directory (not a gs:// URL: members log to
DIR/<name>/train.log).
`--task_index=I` runs member I alone (one member per SLURM array task); `--parallel=K` runs K
members at once as separate processes, and a failed member is reported at the end without
stopping the others. DIR/sweep.json records the members for `python -m se_flax.tools.report DIR`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import signal
import subprocess
import sys
import time

from absl import app
from absl import flags
from absl import logging

from se_flax import cli
from se_flax import paths
from se_flax import timing
from se_flax import trees

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN_SCRIPT = os.path.join(REPO, 'train.py')
DEFAULT_CONFIG = os.path.join(REPO, 'configs', 'digits.py')

FLAGS = flags.FLAGS
MEMBER_RECORD = 'sweep_member.json'


def define_flags() -> None:
  """Command-line flags, defined only when run as a program (tests import this module)."""
  cli.define_config_flag(DEFAULT_CONFIG, 'Base configuration file (path[:arg]).')
  flags.DEFINE_string('sweep', None, 'Sweep file (path[:arg]) defining get_sweep(config[, arg]).')
  flags.DEFINE_string('workdir', None, 'Sweep directory; member I trains in workdir/<member name>.')
  flags.DEFINE_integer('parallel', 1, 'Members trained at once, each in its own process.')
  flags.DEFINE_integer('task_index', None, 'Run member I alone (e.g. $SLURM_ARRAY_TASK_ID).')
  flags.DEFINE_bool('dry_run', False, 'Print one train.py command per member and exit.')
  flags.DEFINE_string('train_script', TRAIN_SCRIPT, 'The training entry point.')
  flags.DEFINE_float('summary_every', 60.0, 'Seconds between progress lines while members run.')


@dataclasses.dataclass
class Member:
  index: int
  name: str
  overrides: dict
  workdir: str

  @property
  def done(self) -> bool:
    return os.path.exists(os.path.join(self.workdir, 'final_eval.json'))

  @property
  def record_path(self) -> str:
    return os.path.join(self.workdir, MEMBER_RECORD)

  def recorded_overrides(self):
    """The overrides recorded when this member's directory was last started (None: no record)."""
    try:
      with open(self.record_path) as f:
        return json.load(f)['overrides']
    except FileNotFoundError:
      return None
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise ValueError(f'cannot read {self.record_path}: {e}') from None

  def check_record(self) -> None:
    """Raise ValueError unless this directory is empty, or was started with this member's overrides."""
    recorded, wanted = self.recorded_overrides(), trees.jsonable(self.overrides)
    if recorded is None and self.done:
      raise ValueError(f'{self.workdir} holds a finished run (final_eval.json) but no {MEMBER_RECORD} saying '
                       f'which overrides it ran with, so it cannot stand for member {self.name} '
                       f'({wanted}); move it away or use another --workdir')
    if recorded is not None and recorded != wanted:
      raise ValueError(f'{self.workdir} holds a run with the overrides {recorded}, but sweep member '
                       f'{self.name} now has {wanted} (did the sweep file change?); move that directory '
                       'away or use another --workdir')

  def write_record(self, base: list[str]) -> None:
    tmp = f'{self.record_path}.{os.getpid()}.tmp'
    with open(tmp, 'w') as f:
      json.dump({'name': self.name, 'overrides': trees.jsonable(self.overrides), 'base_args': base}, f, indent=1)
    os.replace(tmp, self.record_path)


def base_args(argv: list[str], default_config: str) -> list[str]:
  """The --config flag (made absolute) and its overrides, as given, to repeat for every member."""
  joined, i = [], 0
  while i < len(argv):  # '--config PATH' and '--config.x VALUE' as '--config=PATH', '--config.x=VALUE'
    arg = argv[i]
    if (arg == '--config' or arg.startswith('--config.') and '=' not in arg) and i + 1 < len(argv) \
        and not argv[i + 1].startswith('--'):
      arg, i = f'{arg}={argv[i + 1]}', i + 1
    joined.append(arg)
    i += 1
  out = [] if any(a.startswith('--config=') for a in joined) else [f'--config={default_config}']
  for arg in joined:
    if arg.startswith('--config='):
      path, sep, rest = arg[len('--config='):].partition(':')
      out.append(f'--config={os.path.abspath(path)}{sep}{rest}')
    elif arg.startswith('--config.'):
      out.append(arg)
  return out


def plan(config, sweep_spec: str, workdir: str) -> tuple[list[Member], list]:
  """The members of `sweep_spec` for `config`, validated, and the paper's figures for them."""
  from se_flax import hyper, train_lib
  module, members = hyper.load_sweep(sweep_spec, config)
  for overrides in members:
    train_lib.validate_config(hyper.apply_overrides(config, overrides))
  names = hyper.member_names(members)
  paper = module.get_paper(config) if hasattr(module, 'get_paper') else []
  return [Member(i, n, m, os.path.join(workdir, n)) for i, (n, m) in enumerate(zip(names, members))], paper


def command(member: Member, base: list[str], train_script: str) -> list[str]:
  from se_flax import hyper
  return [sys.executable, train_script, *base, *hyper.override_flags(member.overrides),
          f'--workdir={member.workdir}']


def write_manifest(workdir: str, members: list[Member], paper: list, base: list[str],
                   sweep_spec: str) -> None:
  """DIR/sweep.json: what the report reads (members, their settings, the paper's figures)."""
  from se_flax import hyper
  os.makedirs(workdir, exist_ok=True)
  varying = hyper.varying_keys([m.overrides for m in members])
  manifest = {
      'command': shlex.join(['python', '-m', 'se_flax.tools.sweep', *sys.argv[1:]]),
      'sweep': sweep_spec, 'base_args': base, 'varying': varying,
      'members': [{'name': m.name, 'setting': hyper.setting_name(m.overrides, varying),
                   'overrides': trees.jsonable(m.overrides), 'workdir': m.name} for m in members],
      'paper': [{'match': trees.jsonable(match), **figures} for match, figures in paper],
  }
  path = os.path.join(workdir, 'sweep.json')
  tmp = f'{path}.{os.getpid()}.tmp'  # array tasks write it at the same time: each whole, last one wins
  with open(tmp, 'w') as f:
    json.dump(manifest, f, indent=1)
  os.replace(tmp, path)


def _last_error_line(log_path: str) -> str:
  """The one-line `error: ...` train.py printed, else the log's last line."""
  try:
    with open(log_path, errors='replace') as f:
      lines = [l.strip() for l in f.readlines()[-200:] if l.strip()]
  except OSError:
    return ''
  errors = [l for l in lines if l.startswith('error:') or 'Error' in l.split(':')[0]]
  return (errors or lines or [''])[-1][:300]


class Runner:
  """Runs members as child processes, at most `parallel` at once, and reports progress."""

  def __init__(self, members: list[Member], base: list[str], train_script: str, parallel: int,
               summary_every: float = 60.0, stream: bool = False, out=sys.stdout):
    self.members, self.base, self.train_script = members, base, train_script
    self.parallel, self.summary_every, self.stream, self.out = parallel, summary_every, stream, out
    self.skipped = [m for m in members if m.done]
    self.pending = [m for m in members if not m.done]
    self.running: dict[str, tuple[Member, subprocess.Popen, float]] = {}
    self.done, self.failed, self.interrupted, self.durations = [], [], [], []
    self.start = time.time()
    self.stopping, self.not_started = False, []

  def log(self, text: str) -> None:
    print(text, file=self.out, flush=True)

  def summary(self) -> str:
    total, n_done = len(self.members), len(self.skipped) + len(self.done)
    eta = '?'
    if self.durations:
      mean = sum(self.durations) / len(self.durations)
      now = time.time()
      left = len(self.pending) * mean + sum(max(mean - (now - t), 0) for _, _, t in self.running.values())
      eta = timing.hms(left / max(1, min(self.parallel, len(self.pending) + len(self.running))))
    elif not self.pending and not self.running:
      eta = timing.hms(0)
    line = (f'sweep: {n_done}/{total} done ({len(self.skipped)} already finished), '
            f'{len(self.running)} running, {len(self.failed)} failed, {len(self.pending)} pending; '
            f'elapsed {timing.hms(time.time() - self.start)}, ETA {eta}')
    if self.running:
      line += '  [running: ' + ' '.join(self.running) + ']'
    return line

  def _launch(self, member: Member) -> None:
    os.makedirs(member.workdir, exist_ok=True)
    member.write_record(self.base)
    cmd = command(member, self.base, self.train_script)
    if self.stream:
      proc = subprocess.Popen(cmd)
    else:
      with open(os.path.join(member.workdir, 'train.log'), 'a') as log:
        log.write(f'\n$ {shlex.join(cmd)}\n')
        log.flush()
        # Own session: a Ctrl-C reaches only the sweep, which passes it on as SIGTERM (checkpoint, exit).
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    self.running[member.name] = (member, proc, time.time())
    self.log(f'sweep: start {member.name} (member {member.index})')

  def _reap(self) -> bool:
    changed = False
    for name, (member, proc, started) in list(self.running.items()):
      rc = proc.poll()
      if rc is None:
        continue
      del self.running[name]
      changed = True
      if rc == 0 and member.done:
        self.done.append(member)
        self.durations.append(time.time() - started)
        self.log(f'sweep: done {name} in {timing.hms(time.time() - started)}: {self._result_line(member)}')
      elif rc == 0 or rc == -signal.SIGTERM or self.stopping:  # preempted: a rerun resumes it
        self.interrupted.append(member)
        self.log(f'sweep: interrupted {name} (exit {rc}); rerun the sweep to resume it')
      else:
        self.failed.append((member, rc))
        self.log(f'sweep: FAILED {name} (exit {rc}): {self._error(member)}')
    return changed

  def _result_line(self, member: Member) -> str:
    with open(os.path.join(member.workdir, 'final_eval.json')) as f:
      r = json.load(f)
    return f'top1 {r["top1"]:.4f}  top5 {r["top5"]:.4f}  loss {r["loss"]:.4f}'

  def _error(self, member: Member) -> str:
    if self.stream:
      return 'see the output above'
    log = os.path.join(member.workdir, 'train.log')
    return f'{_last_error_line(log)}  (log: {log})'

  def terminate(self, signum=signal.SIGTERM, frame=None) -> None:
    """On SIGTERM or Ctrl-C: SIGTERM to each running member (it checkpoints and exits); start no more."""
    del signum, frame
    self.stopping = True
    self.not_started, self.pending = self.not_started + self.pending, []
    for _, proc, _ in self.running.values():
      if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)

  def run(self) -> int:
    self.log(f'sweep: {len(self.members)} members, {len(self.skipped)} already finished, '
             f'{len(self.pending)} to run, {self.parallel} at a time')
    last_summary = time.time()
    while self.pending or self.running:
      while self.pending and len(self.running) < self.parallel and not self.stopping:
        self._launch(self.pending.pop(0))
      changed = self._reap()
      if changed or time.time() - last_summary >= self.summary_every:
        self.log(self.summary())
        last_summary = time.time()
      time.sleep(0.2)
    return self.finish()

  def finish(self) -> int:
    if self.failed:
      self.log(f'sweep: {len(self.failed)} member(s) failed:')
      for member, rc in self.failed:
        self.log(f'  {member.name} (member {member.index}, exit {rc}): {self._error(member)}')
    if self.interrupted or self.not_started:
      self.log(f'sweep: stopped with {len(self.interrupted)} member(s) interrupted and '
               f'{len(self.not_started)} not started; rerun the same command to continue: '
               + ' '.join(m.name for m in self.interrupted + self.not_started))
    return 1 if self.failed else (143 if self.interrupted or self.not_started else 0)


def run_sweep(config, sweep_spec: str, workdir: str, base: list[str], *, parallel: int = 1,
              task_index: int | None = None, dry_run: bool = False, train_script: str = TRAIN_SCRIPT,
              summary_every: float = 60.0, out=sys.stdout, install_signals: bool = False) -> int:
  """Plan, then print (dry run) or run the members; returns the exit code (1: a member failed)."""
  if parallel < 1:
    raise ValueError(f'--parallel={parallel} must be at least 1')
  if not os.path.isfile(train_script):
    raise ValueError(f'--train_script={train_script!r} does not exist')
  workdir = paths.resolve_workdir(workdir)
  if paths.is_url(workdir):
    raise ValueError(f'--workdir={workdir!r}: a sweep directory must be a local or network-filesystem '
                     'path (members write their train.log there); train single runs on gs:// instead')
  paths.check_workdir_writable(workdir)
  workdir = os.path.abspath(workdir)
  members, paper = plan(config, sweep_spec, workdir)
  if task_index is not None and not 0 <= task_index < len(members):
    raise ValueError(f'--task_index={task_index} is out of range: the sweep has {len(members)} members '
                     f'(0 to {len(members) - 1})')
  selected = members if task_index is None else [members[task_index]]
  if not dry_run:
    for m in selected:
      m.check_record()
  if dry_run:
    for m in selected:
      print(shlex.join(command(m, base, train_script)), file=out)
    return 0
  write_manifest(workdir, members, paper, base, sweep_spec)
  runner = Runner(selected, base, train_script, parallel if task_index is None else 1,
                  summary_every=summary_every, stream=task_index is not None, out=out)
  if install_signals:
    signal.signal(signal.SIGTERM, runner.terminate)
    signal.signal(signal.SIGINT, runner.terminate)
  return runner.run()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  logging.set_verbosity(logging.WARNING)  # this process only plans and waits; members log in full
  config = cli.load_config(FLAGS)
  with cli.clean_errors():
    if not FLAGS.sweep:
      raise ValueError('--sweep=FILE is required (e.g. configs/sweeps/reduction.py)')
    if not FLAGS.workdir:
      raise ValueError('--workdir=DIR is required (each member trains in DIR/<member name>)')
    code = run_sweep(config, FLAGS.sweep, FLAGS.workdir, base_args(sys.argv[1:], DEFAULT_CONFIG),
                     parallel=FLAGS.parallel, task_index=FLAGS.task_index, dry_run=FLAGS.dry_run,
                     train_script=FLAGS.train_script, summary_every=FLAGS.summary_every, install_signals=True)
  sys.exit(code)


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=cli.parse_flags)
