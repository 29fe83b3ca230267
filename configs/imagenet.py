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

Per-network recipes (`RECIPES`, keyed by the model name without its 'se_' prefix, applied on top
of the one above):
  vgg16_bn, se_vgg16_bn: the recipe above, as the paper trains all its Table 2 networks (VGG-16 with
    BN: 27.02 -> 25.22 top-1 error); the model's own dropout 0.5 after fc6 and before the classifier
    (the VGG paper's, torchvision's).
  mobilenetv1_100, shufflenet_v1_g3 (and their SE versions): the paper's mobile setting (Section 5.1,
    Table 3): batch 256, SGD momentum 0.9, lr 0.1 divided by 10 when the validation loss plateaus,
    about 400 epochs, "slightly less aggressive" augmentation and regularisation, as ShuffleNet
    (Zhang et al.). The plateaus are fixed here at epochs 200, 300 and 350 (an assumption: the paper
    gives none); the crop keeps 8%-100% (the paper gives no figure). Weight decay 4e-5 (ShuffleNet
    paper) and none on depthwise kernels (MobileNet paper, Howard et al.: "very little or no weight
    decay on the depthwise filters"): optim.decay_exclude. Expected (paper): MobileNet 28.4 -> 25.3,
    ShuffleNet 32.6 -> 31.0 top-1 error.
  bninception, se_bninception: the paper's recipe as it stands (Table 2 trains BN-Inception with it,
           224 px). Expected: 25.38 -> 24.23 top-1 error.
  inception_resnet_v2, se_inception_resnet_v2: the paper's recipe on 299 px crops (Table 2); eval
           resizes to 341 = 299 / 0.875 (the 224 / 256 ratio; the paper gives the crop only).
           Expected: 20.37 -> 19.80 top-1 error.
  inception_v3, se_inception_v3: not in the SE paper; the recipe of its own paper (Szegedy et al.,
           Rethinking the Inception Architecture, Sections 7-8): RMSProp with decay 0.9 and eps 1.0
           (TensorFlow's, eps inside the square root), lr 0.045 decayed by 0.94 every two epochs,
           label smoothing 0.1, 100 epochs, 299 px, 50 replicas of batch 32: here one synchronous
           batch of 1600 (lr scaled linearly from it). RMSProp momentum 0.9 and weight decay 4e-5
           come from TensorFlow's Inception code (tensorflow/models: inception_train.py,
           slim's inception_v3_arg_scope); the paper gives neither. Not applied: the paper's
           gradient clipping at 2.0 and its auxiliary classifier (se_flax builds none). Expected
           (paper, single crop 299): 21.2 top-1 error, Inception-v3 without SE.
"""

from configs import default
from se_flax.data import datasets

DEPTHWISE_KERNELS = ('*/conv_dw/kernel',)  # MobileNet's and ShuffleNet's depthwise filters


def _mobile_recipe(config) -> None:
  config.train.global_batch_size = 256
  config.optim.lr = 0.1
  config.optim.lr_batch_base = 256
  config.optim.weight_decay = 4e-5
  config.optim.decay_exclude = DEPTHWISE_KERNELS
  config.schedule.decay_epochs = (200, 300, 350)
  config.train.num_epochs = 400.0
  config.train.eval_every_epochs = 10.0


def _inception_crop(config) -> None:
  """299 px crops; eval resize 299 / 0.875."""
  config.data.image_size = 299
  config.data.eval_resize = 341


def _inception_v3(config) -> None:
  _inception_crop(config)
  config.optim.name = 'rmsprop'
  config.optim.lr = 0.045
  config.optim.lr_batch_base = 1600
  config.optim.momentum = 0.9
  config.optim.rmsprop_decay = 0.9
  config.optim.rmsprop_eps = 1.0
  config.optim.weight_decay = 4e-5
  config.optim.label_smoothing = 0.1
  config.schedule.name = 'step'
  config.schedule.decay_epochs = tuple(range(2, 100, 2))
  config.schedule.decay_factor = 0.94
  config.train.global_batch_size = 1600


# Model-name family (the name without 'se_') -> changes to the paper's recipe (the docstring gives
# each one's source); other networks (ResNets, VGG-16, BN-Inception) train with that recipe as it is.
RECIPES = {
    'mobilenet': _mobile_recipe,
    'shufflenet': _mobile_recipe,
    'inception_resnet_v2': _inception_crop,
    'inception_v3': _inception_v3,
}


def recipe_for(name: str):
  """The recipe function of model `name`'s family, or None (the Table 2 recipe as it is)."""
  bare = name.removeprefix('se_')
  return next((fn for family, fn in RECIPES.items() if bare.startswith(family)), None)


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

  recipe = recipe_for(config.model.name)
  if recipe is not None:
    recipe(config)
  return config
