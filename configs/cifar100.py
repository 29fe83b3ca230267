"""CIFAR-100 with the paper's CIFAR recipe (same as configs/cifar10.py, 100 classes).

Command:   python train.py --config=configs/cifar100.py:seresnet110_cifar --workdir=workdirs/c100_seresnet110
Hardware:  one GPU (about 1-3 h); data: `tfds build cifar100` once on a networked machine.
Expected:  paper's error (not yet measured here): ResNet-110 26.88 -> SE 23.85; ResNet-164 24.33 -> 21.31;
           WRN-16-8 20.43 -> 19.14 (top-1 error, %).
"""

from configs import cifar10


def get_config(arg: str | None = None):
  return cifar10.cifar_config('cifar100', arg or 'seresnet110_cifar')
