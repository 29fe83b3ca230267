"""Train an SE network from a config: `python train.py` trains the offline digits quickstart.

  python train.py --config=configs/<file>.py[:arg] --workdir=DIR [--config.any.field=value ...]

Resumes automatically from DIR's latest checkpoint. The work is done by `se_flax.run.train`
(`se_flax.train_lib.train_and_evaluate`), which a notebook or test can call directly.
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
  config = cli.program_config(argv)
  from se_flax import errors, run
  # Refused input (on every process alike, workdir untouched), a busy workdir, a diverged run: one
  # line, exit 1. Any other error is a bug and keeps its traceback.
  with cli.clean_errors(errors.UserError):
    result = run.train(config, flags.FLAGS.workdir)
  logging.info('final eval: %s', result)
  print(json.dumps(result))


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
