"""SE-ResNet-20 (CIFAR-style) on scikit-learn's handwritten digits: the offline quickstart.

Command:   python train.py            (same as --config=configs/digits.py --workdir=workdirs/digits_seresnet20_cifar)
Hardware:  any CPU; 2 cores are enough.
Data:      1,437 train / 360 test real 8x8 digits shipped inside scikit-learn, prepared as a TFDS
           dataset on first use with no network (se_flax/data/digits.py).
Expected:  >= 97% test top-1 in one to three minutes on a 2-core CPU (README gives the measured figures).
Arg:       a model name, e.g. configs/digits.py:resnet20_cifar for the no-SE baseline.
"""

from configs import default
from se_flax.data import datasets


def get_config(arg: str | None = None):
  config = default.get_config()
  config.data = datasets.default_data_config('digits')
  config.data.image_size = 8
  config.data.augment = 'cifar'  # 1-pixel zero-pad + random 8x8 crop, no flip (see data config)
  config.data.train_split = 'train'
  config.data.eval_split = 'test'

  config.model.name = arg or 'seresnet20_cifar'
  # This recipe's own network settings, with which the README's digits results were measured: 1x1
  # projection shortcuts and zero-initialised last BatchNorm scales (the CIFAR nets' defaults
  # follow He et al. instead: option A shortcuts, scales starting at 1). Only the CIFAR ResNets
  # (names '*_cifar') take them; other networks (VGG, MobileNet, ShuffleNet, Inception, ImageNet-style
  # ResNets) keep their own design. The Inception nets also need larger images than 8x8:
  # --config.data.image_size=32 for se_bninception_tiny, 75 for the other tiny Inception nets.
  if config.model.name.endswith('_cifar'):
    config.model.downsample = 'conv'
    config.model.zero_init_last_bn = True

  config.optim.name = 'nesterov'
  config.optim.lr = 0.1
  config.optim.lr_batch_base = 128
  config.optim.weight_decay = 5e-4

  config.schedule.name = 'cosine'
  config.schedule.warmup_epochs = 1.0

  config.train.global_batch_size = 128
  config.train.num_epochs = 40.0
  config.train.log_every_steps = 33
  config.train.checkpoint_every_steps = 110
  config.train.eval_every_epochs = 10.0
  config.eval.global_batch_size = 128
  return config
