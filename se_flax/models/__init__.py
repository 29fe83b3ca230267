"""The SENet model zoo: `create(name, **overrides)`, `from_config(config.model, num_classes)`, `names()`,
and the building blocks."""

from se_flax.models.factory import DTYPES, check_gate_init, from_config
from se_flax.models.bninception import BNInception
from se_flax.models.flops import count_macs, count_params
from se_flax.models.mobilenet import MobileNetV1
from se_flax.models.inception import InceptionV3
from se_flax.models.inception_resnet import InceptionResNetV2
from se_flax.models.registry import ModelSpec, create, names, spec
from se_flax.models.resnet import ResNet
from se_flax.models.se import GATES, KINDS, PLACEMENTS, ROUNDINGS, SQUEEZES, SEBlock, SEConfig
from se_flax.models.selective_kernel import SelectiveKernel, SKConfig
from se_flax.models.shufflenet import ShuffleNetV1
from se_flax.models.vgg import VGG

__all__ = ['create', 'from_config', 'check_gate_init', 'names', 'spec', 'ModelSpec', 'ResNet', 'SEBlock',
           'SEConfig', 'SelectiveKernel', 'SKConfig', 'count_macs', 'count_params', 'DTYPES', 'GATES', 'KINDS',
           'PLACEMENTS', 'ROUNDINGS', 'SQUEEZES', 'VGG', 'MobileNetV1', 'ShuffleNetV1', 'BNInception', 'InceptionV3',
           'InceptionResNetV2']
