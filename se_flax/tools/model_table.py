"""Print the model table (name, parameters, multiply-adds, reference accuracy) as Markdown.

  python -m se_flax.tools.model_table [--pattern='*seresnet*'] [--num_classes=1000]
"""

from absl import app
from absl import flags
import jax
import jax.numpy as jnp

from se_flax import models

flags.DEFINE_string('pattern', None, 'fnmatch pattern over model names (default: all).')
flags.DEFINE_integer('num_classes', None, 'Classes of the head (default: 1000 ImageNet, 10 CIFAR).')


def model_row(name: str, num_classes: int | None = None) -> tuple[str, int, float, int, str]:
  spec = models.spec(name)
  classes = num_classes or (1000 if spec.input_size >= 224 else 10)
  model = models.create(name, num_classes=classes)
  shape = (1, spec.input_size, spec.input_size, 3)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))
  return (name, models.count_params(variables['params']), models.count_macs(model, spec.input_size) / 1e9,
          spec.input_size, spec.reference)


def main(argv):
  del argv
  print('| name | params | GMACs | input | reference |')
  print('|---|---:|---:|---:|---|')
  for name in models.names(flags.FLAGS.pattern):
    name, params, gmacs, size, ref = model_row(name, flags.FLAGS.num_classes)
    print(f'| `{name}` | {params:,} | {gmacs:.3f} | {size} | {ref or "-"} |')


if __name__ == '__main__':
  app.run(main)
