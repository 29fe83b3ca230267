"""How long a preempted run needs to save: the checkpoint train.py writes on SIGTERM, timed.

  python scripts/slurm/time_checkpoint_save.py [--config=configs/imagenet.py:seresnet50]
      [--workdir=DIR (default: a temporary directory)] [--repeats=3]

Builds the config's full train state (parameters, BatchNorm statistics, optimizer state) with no
data, and saves it the way train.py does when SIGTERM arrives: `checkpointing.save(..., force=True)`
then `wait_until_finished()` (orbax, asynchronous, committed by a rename). Prints the state's size
and, per save, the seconds until `save` returns and until the checkpoint is committed. The first
save includes orbax's set-up; a preempted run's save is its first since it started or resumed,
unless a periodic save came before. A site's GraceTime or KillWait (SLURM) must exceed this plus
one training step.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import jax

from se_flax import checkpointing
from se_flax import cli
from se_flax import models
from se_flax import optim
from se_flax import steps
from se_flax.data import input_pipeline

_HERE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
cli.define_config_flag(os.path.join(_HERE, 'configs', 'imagenet.py') + ':seresnet50', 'Config (path[:arg]).')
flags.DEFINE_string('workdir', None, 'Where to save (default: a new temporary directory, removed after).')
flags.DEFINE_integer('repeats', 3, 'Number of saves (at steps 1, 2, ...).')


def main(argv):
  del argv
  cli.quiet_library_logs()
  config = cli.load_config(flags.FLAGS)
  spec = input_pipeline.get_spec(config.data.name)
  image_shape = (config.data.image_size, config.data.image_size, spec.image_shape[-1])
  steps_per_epoch = 1000  # shapes the learning-rate schedule only, not the state
  mesh = steps.create_mesh(config)
  model = models.from_config(config.model, spec.num_classes, axis_name=steps.AXIS)
  lr_fn = optim.create_learning_rate_fn(config, steps_per_epoch, 100 * steps_per_epoch)
  state = steps.create_train_state(config, model, image_shape, optim.create_optimizer(config, lr_fn), mesh)
  jax.block_until_ready(state)
  leaves = jax.tree_util.tree_leaves(state)
  size = sum(x.size * x.dtype.itemsize for x in leaves if hasattr(x, 'dtype'))
  print(f'{config.model.name}: train state {size / 2**20:.1f} MiB in {len(leaves)} arrays '
        f'({jax.device_count()} {jax.devices()[0].platform} device(s), jax {jax.__version__})')
  with tempfile.TemporaryDirectory() as tmp:
    workdir = flags.FLAGS.workdir or tmp
    manager = checkpointing.create_manager(workdir, config)
    try:
      for step in range(1, flags.FLAGS.repeats + 1):
        t0 = time.perf_counter()
        checkpointing.save(manager, step, state, config, force=True)
        returned = time.perf_counter() - t0
        manager.wait_until_finished()
        done = time.perf_counter() - t0
        print(f'save {step}: save() returned after {returned:.2f} s, committed after {done:.2f} s')
    finally:
      manager.close()


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
