"""Evaluate a checkpoint (or timm weights) on a whole split; the last stdout line is JSON.

  python eval.py --config=configs/<file>.py[:arg] --workdir=DIR [--step=N] [--split=...]
  python eval.py --config=configs/imagenet.py --timm_model=seresnet50 --timm_weights=FILE.safetensors
  python eval.py --config=configs/imagenet.py --pretrained=seresnet50.ra2_in1k   # or hf-hub:timm/<tag>

--pretrained evaluates with exactly the tag's preprocessing: timm's eval transform, done with PIL as
timm does (`se_flax.weights.pretrained.preprocess` of each image), and prints timm's reference top-1
beside the measured one.

The JSON object holds top1, top5, loss, num_examples, step (and the checkpoint or weights used).
"""

import json
import os

from absl import app
from absl import flags

from se_flax import cli

_HERE = os.path.dirname(os.path.abspath(__file__))
cli.define_config_flag(os.path.join(_HERE, 'configs', 'digits.py'),
                       'Configuration file the checkpoint was trained with (path[:arg]).')
flags.DEFINE_string('workdir', None, 'Training workdir (default: workdirs/<dataset>_<model>).')
flags.DEFINE_integer('step', None, 'Checkpoint step to evaluate (default: the latest).')
flags.DEFINE_string('split', None, 'TFDS split to evaluate (default: config.data.eval_split).')
flags.DEFINE_string('timm_model', None, 'timm model name whose weights --timm_weights holds.')
flags.DEFINE_string('timm_weights', None, 'A timm state dict as .safetensors (instead of a checkpoint).')
flags.DEFINE_string('pretrained', None, 'A pretrained tag or hf-hub:<repo id> (`python -m se_flax.weights.pretrained` '
                    'lists the tags), evaluated with the tag\'s preprocessing.')
cli.define_distributed_flags()


def main(argv):
  config = cli.program_config(argv)
  from se_flax import run
  FLAGS = flags.FLAGS
  with cli.clean_errors():
    result = run.evaluate(config, workdir=FLAGS.workdir, step=FLAGS.step, split=FLAGS.split,
                          pretrained=FLAGS.pretrained, timm_model=FLAGS.timm_model,
                          timm_weights=FLAGS.timm_weights)
  print(f'{result["source"]}: {result["split"]} of {config.data.name}, {result["num_examples"]} examples, '
        f'step {result["step"]}')
  print(f'  top-1 {100 * result["top1"]:.2f}%   top-5 {100 * result["top5"]:.2f}%   loss {result["loss"]:.4f}')
  if 'reference' in result:
    print(f'  measured top-1 {100 * result["top1"]:.2f}% vs {result["reference"]}')
  print(json.dumps(result))


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
