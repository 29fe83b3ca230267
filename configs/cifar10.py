"""CIFAR-10 with the paper's CIFAR recipe (Hu et al., Tables 4-5; docs/reference.md s.4).

Command:   python train.py --config=configs/cifar10.py:seresnet110_cifar --workdir=workdirs/c10_seresnet110
           (arg: any CIFAR model, e.g. resnet110_cifar, seresnet164_cifar, sewrn16_8_cifar)
Hardware:  one GPU (about 1-3 h) or a TPU host; data: `tfds build cifar10` once on a networked machine.
Recipe:    ResNets (He et al. 2016): SGD momentum 0.9, wd 1e-4, batch 128, lr 0.1 divided by 10 at
           32k and 48k iterations, 64k iterations (164 epochs); ResNet-110/164 warm up at lr 0.01 for
           the first 400 iterations (He et al.: "until the training error is below 80% (about 400
           iterations)"; Identity Mappings: 400 iterations). Given in steps, as the papers do:
           updates 0..399 use 0.01, updates 32,000 and 48,000 are the first at 0.01 and 0.001.
           WRN-16-8 (Zagoruyko & Komodakis): Nesterov, wd 5e-4, lr 0.1 x0.2 at epochs 60/120/160,
           200 epochs (epochs of 50,000 // 128 = 390 steps, the loop's). Augment: 4-pixel zero
           padding + random crop + flip, per-channel normalisation.
Expected:  paper's error (not yet measured here): ResNet-110 6.37 -> SE 5.21; ResNet-164 5.46 -> 4.39;
           WRN-16-8 4.27 -> 3.88 (top-1 error, %).
"""

from configs import default
from se_flax.data import datasets


def cifar_config(dataset: str, model: str):
  config = default.get_config()
  config.data = datasets.default_data_config(dataset)
  config.data.image_size = 32
  config.data.augment = 'cifar'
  config.data.crop_padding = 4
  config.data.eval_split = 'test'
  config.model.name = model

  config.train.global_batch_size = 128
  config.eval.global_batch_size = 500
  config.optim.lr = 0.1
  config.optim.lr_batch_base = 128
  config.optim.momentum = 0.9
  config.schedule.name = 'step'
  config.train.log_every_steps = 100
  config.train.checkpoint_every_steps = 2000
  config.train.eval_every_epochs = 5.0

  if 'wrn' in model:
    config.optim.name = 'nesterov'
    config.optim.weight_decay = 5e-4
    config.schedule.decay_epochs = (60, 120, 160)
    config.schedule.decay_factor = 0.2
    config.train.num_epochs = 200.0
  else:
    config.optim.name = 'sgd'
    config.optim.weight_decay = 1e-4
    config.schedule.decay_steps = (32_000, 48_000)
    config.schedule.decay_factor = 0.1
    config.train.num_steps = 64_000
    if any(d in model for d in ('110', '164')):
      config.schedule.warmup_steps = 400
      config.schedule.warmup_mode = 'constant'
      config.schedule.warmup_lr_factor = 0.1
  return config


def get_config(arg: str | None = None):
  return cifar_config('cifar10', arg or 'seresnet110_cifar')
