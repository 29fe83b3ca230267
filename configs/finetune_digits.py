"""Fine-tune a trained digits network on 5 of the 10 digits, with a new 5-way head.

The pattern for fine-tuning any checkpoint (a timm tag, a hub id, a .safetensors file or another
se_flax workdir) on a new label set: `init_from` names the weights, the head is replaced because
the class count differs (logged), and the usual fine-tuning options are set below.

Command:   python train.py                                  # the source: workdirs/digits_seresnet20_cifar
           python train.py --config=configs/finetune_digits.py --workdir=workdirs/digits_ft
           (another source: --config.init_from=DIR | TAG | hf-hub:timm/TAG | FILE.safetensors)
Hardware:  any CPU; 2 cores are enough.
Data:      the digits 0-4 of scikit-learn's digits (data.keep_labels), relabelled 0..4.
Expected:  99.45% test top-1 on the 181 test digits 0-4 (40 steps; 1 min 53 s wall on a loaded
           2-core CPU, start-up and compilation included).
Arg:       the model name, which must be the source's (default seresnet20_cifar).
"""

from configs import digits


def get_config(arg: str | None = None):
  config = digits.get_config(arg)
  config.init_from = f'workdirs/digits_{config.model.name}'  # where `python train.py` trains
  config.data.keep_labels = (0, 1, 2, 3, 4)
  config.model.freeze_bn_stats = True  # keep the source's BatchNorm statistics

  config.finetune.backbone_lr_multiplier = 0.1  # the backbone moves 10x slower than the new head
  config.finetune.freeze_backbone_steps = 10  # the new head settles first

  config.optim.lr = 0.05
  config.schedule.warmup_epochs = 0.0
  config.train.num_epochs = 8.0
  config.train.log_every_steps = 10
  config.train.checkpoint_every_steps = 50
  config.train.eval_every_epochs = 4.0
  return config
