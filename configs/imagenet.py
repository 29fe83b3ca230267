"""ImageNet-1k with the paper's recipe for the Table 2 models (Hu et al.; docs/reference.md s.4).

Command:   python train.py --config=configs/imagenet.py:seresnet50 --workdir=gs://.../seresnet50
           (arg: any ImageNet model name, e.g. legacy_seresnet50, seresnext50_32x4d, resnet50)
Hardware:  8 GPUs or a TPU v3-32 / v4-16 class pod slice (global batch 1024).
Data:      TFDS imagenet2012, prepared from the manual-download tars (see README).
Recipe:    synchronous SGD, momentum 0.9, lr 0.6 per 1024 images (scaled linearly with the batch),
           divided by 10 every 30 epochs, 100 epochs, weight decay 1e-4 (not on BN and biases),
           random-resized crop 224 (8%-100% area, 3/4-4/3 aspect) + flip; eval: resize 256, centre crop 224.
Expected:  paper's single-crop top-1 error (not yet measured here): ResNet-50 24.80 -> SE-ResNet-50 23.29;
           ResNeXt-50 22.11 -> 21.10; ResNet-101 23.17 -> 22.38.
"""

from configs import default
from se_flax.data import datasets


def get_config(arg: str | None = None):
  config = default.get_config()
  config.data = datasets.default_data_config('imagenet2012')
  config.data.image_size = 224
  config.data.augment = 'inception'
  config.data.eval_resize = 256
  config.data.train_split = 'train'
  config.data.eval_split = 'validation'
  config.model.name = arg or 'seresnet50'

  config.optim.name = 'sgd'
  config.optim.lr = 0.6
  config.optim.lr_batch_base = 1024
  config.optim.momentum = 0.9
  config.optim.weight_decay = 1e-4

  config.schedule.name = 'step'
  config.schedule.decay_epochs = (30, 60, 90)
  config.schedule.decay_factor = 0.1

  config.train.global_batch_size = 1024
  config.train.num_epochs = 100.0
  config.train.log_every_steps = 100
  config.train.checkpoint_every_steps = 2500
  config.train.eval_every_epochs = 5.0
  config.eval.global_batch_size = 1000
  return config
