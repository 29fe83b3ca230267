"""Train an SE network from a config: `python train.py` trains the offline digits quickstart.

  python train.py --config=configs/<file>.py[:arg] --workdir=DIR [--config.any.field=value ...]

Resumes automatically from DIR's latest checkpoint. The work is done by
`se_flax.train_lib.train_and_evaluate`, which a notebook or test can call directly.
"""

import json
import os

from absl import app
from absl import flags
from absl import logging

from se_flax import cli

_HERE = os.path.dirname(os.path.abspath(__file__))
cli.define_config_flag(os.path.join(_HERE, 'configs', 'digits.py'),
                       'Training configuration file (path[:arg]).')
flags.DEFINE_string('workdir', None, 'Directory for checkpoints and TensorBoard logs, local or a URL '
                    'such as gs://bucket/dir (default: workdirs/<dataset>_<model>).')
cli.define_distributed_flags()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  cli.quiet_library_logs()
  from se_flax import checkpointing, launch, pretrained, resilience, train_lib
  from se_flax.data import input_pipeline

  config = cli.load_config(flags.FLAGS)
  workdir = cli.resolve_workdir(flags.FLAGS.workdir or cli.default_workdir(config))
  with cli.clean_errors():  # bad input: one line, exit 1 (on every process), workdir untouched
    cli.apply_distributed_flags(config, flags.FLAGS)
    launch.initialize(config)
    resuming = checkpointing.has_checkpoint(workdir)  # init_from is then not read
    launch.check_agreement(config, lambda c: [cli.check_workdir_writable(workdir),
                                              train_lib.validate_config(c, resuming=resuming)],
                           context=f'resuming={resuming}')
  with cli.clean_errors(resilience.WorkdirBusyError, resilience.NonFiniteError,
                        checkpointing.CheckpointMismatchError, input_pipeline.DataNotFoundError,
                        pretrained.PretrainedNotFoundError):  # init_from weights not downloadable here
    result = train_lib.train_and_evaluate(config, workdir)
  logging.info('final eval: %s', result)
  print(json.dumps(result))


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
