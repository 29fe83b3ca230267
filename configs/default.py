"""Fields shared by every se_flax config; the dataset configs start from `get_config()` here.

Durations are given in epochs (`train.num_epochs`, `schedule.warmup_epochs`, `schedule.decay_epochs`)
or steps (`train.num_steps`, `schedule.warmup_steps`, `schedule.decay_steps`, which win when set);
an epoch is `input_pipeline.steps_per_epoch` = train examples // global batch steps, the one
definition the loop, the schedule and the logs use. Learning rates scale linearly with the
global batch: lr = optim.lr * train.global_batch_size / optim.lr_batch_base.
"""

import ml_collections
from ml_collections import config_dict

from se_flax.data import datasets


def se_config() -> ml_collections.ConfigDict:
  """Attention-slot overrides: None keeps the registered model's own setting.

  `kind` picks the module in the slot (docs/reference.md, "Channel attention kinds"); a kind other
  than the registered one starts from its own defaults (se_flax.models.se.KIND_DEFAULTS) and keeps
  the registered placement and stages. A setting the chosen kind does not use is an error.
  """
  se = ml_collections.ConfigDict()
  se.enabled = config_dict.placeholder(bool)  # False: the plain baseline; True: SE on a plain net
  se.kind = config_dict.placeholder(str)  # 'se' | 'ese' | 'eca' | 'ge' | 'gc' | 'cbam' | 'srm' | 'fca'
  se.reduction = config_dict.placeholder(int)
  se.rounding = config_dict.placeholder(str)  # 'floor' | 'divisible8'
  se.squeeze = config_dict.placeholder(str)  # 'avg' | 'max'
  se.gate = config_dict.placeholder(str)  # 'sigmoid' | 'hard_sigmoid' | 'tanh' | 'relu'
  se.use_bias = config_dict.placeholder(bool)
  se.placement = config_dict.placeholder(str)  # 'standard' | 'pre' | 'post' | 'identity' | 'after_3x3'
  se.stages = config_dict.placeholder(tuple)  # e.g. (False, False, True, False)
  # Settings of one kind each (defaults in se_flax.models.se.KIND_DEFAULTS):
  se.eca_gamma = config_dict.placeholder(float)  # eca: kernel size |log2(C)/gamma + beta/gamma|_odd
  se.eca_beta = config_dict.placeholder(float)
  se.ge_variant = config_dict.placeholder(str)  # ge: 'theta_minus' | 'theta' | 'theta_plus'
  se.ge_extent = config_dict.placeholder(int)  # ge: 0 (global) or a power of two
  se.gc_fuse = config_dict.placeholder(str)  # gc: 'scale' | 'add' | 'both'
  se.cbam_kernel_size = config_dict.placeholder(int)  # cbam: spatial attention kernel (odd)
  se.fca_freq = config_dict.placeholder(str)  # fca: DCT frequencies, e.g. 'top16', 'low4'
  return se


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.num_devices = config_dict.placeholder(int)  # None: all devices; N: the first N (one process)
  # Persistent XLA compilation cache: a rerun or resume skips recompiling ('' turns it off).
  config.compilation_cache_dir = '~/.cache/se_flax/jax_compilation_cache'

  config.data = datasets.default_data_config()

  config.model = ml_collections.ConfigDict()
  config.model.name = 'seresnet50'
  config.model.se = se_config()
  config.model.dtype = 'float32'  # compute dtype: 'float32' | 'bfloat16' (parameters stay float32)
  config.model.drop_rate = config_dict.placeholder(float)  # None: the model's default
  # Start each residual branch's last BatchNorm scale at 0 (None: the model's default, True for
  # post-activation blocks). Must be False with gate 'tanh'/'relu': gate(0) = 0 would hold both at 0.
  config.model.zero_init_last_bn = config_dict.placeholder(bool)
  # Projection shortcuts where the shape changes (None: the model's default): 'conv' (1x1 conv + BN),
  # 'avg' (ResNet-D), 'pad' (He et al.'s parameter-free option A: subsample, zero channels).
  config.model.downsample = config_dict.placeholder(str)
  config.model.sync_batch_norm = True  # BatchNorm statistics averaged over all devices
  config.model.freeze_bn_stats = False  # BatchNorm in inference mode, running statistics kept (fine-tuning)

  # Initial weights of a fresh run (a resumed run restores its own checkpoint instead):
  # '' (random init), a pretrained tag ('seresnet50.ra2_in1k', `python -m se_flax.weights.pretrained`
  # lists them), 'hf-hub:timm/<tag>', a timm .safetensors file (of config.model.name; an SE net that
  # timm lacks reads its baseline's, e.g. se_vgg16_bn <- vgg16_bn, se_inception_v3 <- inception_v3,
  # SE left fresh), or another
  # se_flax workdir (its newest checkpoint) / one of its checkpoints/<step> directories.
  config.init_from = ''
  # Globs over parameter paths ('fc/*', '*/se/*', 'layer4_*') kept at their fresh init.
  config.init_skip = ()

  config.finetune = ml_collections.ConfigDict()
  config.finetune.head = ('fc/*',)  # globs naming the head; everything else is the backbone
  config.finetune.backbone_lr_multiplier = 1.0  # backbone lr = lr * this (0 freezes it)
  config.finetune.freeze_backbone_steps = 0  # the backbone gets no update in the first N steps

  config.optim = ml_collections.ConfigDict()
  config.optim.name = 'sgd'  # 'sgd' | 'nesterov' | 'adamw' | 'rmsprop'
  config.optim.lr = 0.1
  config.optim.lr_batch_base = 256  # lr is given per this many images; 0 disables scaling
  config.optim.momentum = 0.9  # sgd, nesterov, rmsprop
  config.optim.weight_decay = 1e-4
  config.optim.decay_bn_and_bias = False  # False: no weight decay on BatchNorm and bias parameters
  config.optim.decay_exclude = ()  # globs over parameter paths kept out of weight decay, e.g. ('*/conv_dw/kernel',)
  config.optim.b1 = 0.9  # adamw
  config.optim.b2 = 0.999  # adamw
  config.optim.rmsprop_decay = 0.9  # rmsprop: squared-gradient average decay (Inception-v3 paper: 0.9)
  config.optim.rmsprop_eps = 1.0  # rmsprop: added inside the square root, as TensorFlow (Inception-v3: 1.0)
  config.optim.label_smoothing = 0.0

  config.schedule = ml_collections.ConfigDict()
  config.schedule.name = 'cosine'  # 'cosine' | 'step' | 'constant'
  config.schedule.warmup_epochs = 0.0
  config.schedule.warmup_lr_factor = 0.0  # warm-up starts at this fraction of the peak lr
  config.schedule.warmup_mode = 'linear'  # 'linear' ramp, or 'constant' at warmup_lr_factor * lr
  config.schedule.decay_epochs = (30, 60, 90)  # 'step': boundaries in epochs
  config.schedule.decay_factor = 0.1
  config.schedule.warmup_steps = config_dict.placeholder(int)  # set: the warm-up in steps (wins)
  config.schedule.decay_steps = config_dict.placeholder(tuple)  # set: 'step' boundaries in steps (win)

  config.train = ml_collections.ConfigDict()
  config.train.global_batch_size = 256
  config.train.num_epochs = 100.0
  config.train.num_steps = config_dict.placeholder(int)  # overrides num_epochs when set
  config.train.log_every_steps = 100
  config.train.checkpoint_every_steps = 1000
  config.train.keep_checkpoints = 3
  config.train.eval_every_epochs = 1.0  # 0: evaluate only at the end
  config.train.on_nonfinite = 'stop'  # non-finite loss/gradient: 'stop' the run, or 'skip' the update

  config.eval = ml_collections.ConfigDict()
  config.eval.global_batch_size = 256

  config.distributed = ml_collections.ConfigDict()
  # jax.distributed.initialize(): None = when the launcher (srun, a TPU pod, the fields below) implies
  # several processes; True = always (JAX's own detection if nothing else); False = never.
  config.distributed.initialize = config_dict.placeholder(bool)
  config.distributed.coordinator_address = config_dict.placeholder(str)
  config.distributed.num_processes = config_dict.placeholder(int)
  config.distributed.process_id = config_dict.placeholder(int)
  return config
