"""One registry of model names: `create(name, **overrides)` and `names()`.

Names follow timm where timm has the model (`seresnet50`, `legacy_seresnet50`,
`seresnext50_32x4d`, `senet154`, ...). CIFAR nets carry a `_cifar` suffix.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Mapping

import flax.linen as nn

from se_flax.models.bninception import BNInception
from se_flax.models.facts import ModelFacts, facts
from se_flax.models.mobilenet import MobileNetV1
from se_flax.models.inception import InceptionV3
from se_flax.models.inception_resnet import InceptionResNetV2
from se_flax.models.resnet import ResNet
from se_flax.models.se import KINDS, SEConfig
from se_flax.models.selective_kernel import SKConfig
from se_flax.models.shufflenet import ShuffleNetV1
from se_flax.models.vgg import VGG


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A registered model: its constructor arguments and what it is for."""

  name: str
  kwargs: Mapping[str, Any]
  module: type[nn.Module]  # the network class the kwargs build (ResNet, VGG, ...)
  input_size: int  # natural input resolution (224 ImageNet, 32 CIFAR)
  description: str
  facts: ModelFacts  # timm name, pretrained tags, reference figures (se_flax/models/facts.py)

  @property
  def num_stages(self) -> int | None:
    """Stages the SE `stages` mask has one entry for (None: the network has no stage structure)."""
    sizes = self.kwargs.get('stage_sizes')
    return len(sizes) if sizes is not None else getattr(self.module, 'NUM_STAGES', None)

  @property
  def reference(self) -> str:
    """Published accuracy with its source (timm tags quoted, the paper's figure), '' if none."""
    return self.facts.reference


_REGISTRY: dict[str, ModelSpec] = {}


def register(name: str, *, input_size: int, description: str, module: type[nn.Module] = ResNet,
             **kwargs) -> None:
  """Add `name`: `module(**kwargs)` (every network has `se`, `num_classes`, `dtype`, `param_dtype`,
  `axis_name` and `drop_rate` fields, a flax classifier named `fc`, and `__call__(x, train)`)."""
  if name in _REGISTRY:
    raise ValueError(f'model {name!r} is already registered')
  _REGISTRY[name] = ModelSpec(name, dict(kwargs), module, input_size, description, facts(name))


def names(pattern: str | None = None) -> list[str]:
  """Registered names, sorted; `pattern` filters with fnmatch syntax (e.g. '*seresnext*')."""
  import fnmatch
  all_names = sorted(_REGISTRY)
  return [n for n in all_names if pattern is None or fnmatch.fnmatch(n, pattern)]


def did_you_mean(name: str, choices, n: int = 5, cutoff: float = 0.5) -> str:
  """'; did you mean a, b?' naming the choices closest to a mistyped `name`, or '' if none is close."""
  close = difflib.get_close_matches(name, choices, n=n, cutoff=cutoff)
  return f'; did you mean {", ".join(close)}?' if close else ''


def spec(name: str) -> ModelSpec:
  if name not in _REGISTRY:
    raise ValueError(f'unknown model {name!r}{did_you_mean(name, _REGISTRY)} (se_flax.models.names() lists '
                     f'all {len(_REGISTRY)})')
  return _REGISTRY[name]


def _resolve_se(base: SEConfig | None, se: Any) -> SEConfig | None:
  """`se` override: None/False = SE off, SEConfig = as given, mapping = changes to the base config.

  A mapping may carry `enabled` (bool); a mapping on a network without SE turns SE on with
  the paper's defaults plus the given changes.
  """
  if se is None or se is False:
    return None
  if isinstance(se, SEConfig):
    return se
  if isinstance(se, Mapping):
    changes = dict(se)
    if not changes.pop('enabled', True):
      return None
    if 'stages' in changes and changes['stages'] is not None:
      changes['stages'] = tuple(changes['stages'])
    return (base or SEConfig()).replace(**changes)
  raise ValueError(f'se={se!r} must be None, an SEConfig or a mapping of SE fields')


def _resolve_attn(base: SEConfig | None, attn: Any) -> SEConfig | None:
  """`attn` override: None/False = slot off; a kind name = that kind at its defaults
  (`se.KIND_DEFAULTS`), keeping the registered placement and stages (the same kind: kept as is)."""
  if attn is None or attn is False:
    return None
  if not isinstance(attn, str):
    raise ValueError(f'attn={attn!r} must be None or an attention kind: {", ".join(KINDS)}')
  if attn not in KINDS:
    raise ValueError(f'attention kind={attn!r} is not one of {", ".join(KINDS)}')
  return (base or SEConfig(kind=attn)).replace(kind=attn)


def create(name: str, pretrained: Any = None, **overrides) -> nn.Module:
  """Build a registered model; `overrides` set any field of its network (`ResNet`, ...), e.g. num_classes, dtype,
  axis_name, or `se=dict(reduction=8, gate='tanh')` / `se=None` for the plain baseline.

  `attn=KIND` fills the attention slot with another kind ('se', 'eca', ...; `se.KINDS`) at its
  defaults, wherever the network puts SE (the registered placement and stages are kept);
  `attn=None` turns the slot off. `se=dict(...)` then changes settings of that kind.

  The zoo builds modules only: weights come from `se_flax.create_model(name, pretrained=...)`,
  which composes this with `se_flax.weights` (imported by nothing here, so no import cycle).
  """
  if pretrained is not None and pretrained is not False:
    raise ValueError(f'models.create({name!r}, pretrained={pretrained!r}): the zoo builds modules only; '
                     f'use se_flax.create_model({name!r}, pretrained={pretrained!r}) for weights')
  model_spec = spec(name)
  kwargs = dict(model_spec.kwargs)
  se = kwargs.pop('se', None)
  if 'attn' in overrides:
    attn = overrides.pop('attn')
    se = _resolve_attn(se, attn)
    if se is None and overrides.get('se') not in (None, False):
      raise ValueError(f'attn={attn!r} turns the attention slot off; se={overrides["se"]!r} has nothing to set')
  if 'se' in overrides:
    se = _resolve_se(se, overrides.pop('se'))
  fields = {f.name for f in dataclasses.fields(model_spec.module)} - {'parent', 'name'}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ValueError(f'unknown model field(s) {", ".join(unknown)} for {name!r}; allowed: attn, se, '
                     + ', '.join(sorted(fields - {"se"})))
  kwargs.update(overrides)
  return model_spec.module(se=se, **kwargs)


# ----------------------------------------------------------------------------------------------
# ImageNet networks. timm layout: stride on the 3x3, 3x3/2 max-pool with padding 1, SE width
# make_divisible(C/16, 8), last BatchNorm of each residual branch starting at 0 (timm ResNet's
# zero_init_last=True). Caffe layout (timm legacy_*): stride on the first 1x1 for SE-ResNet,
# ceil-mode max-pool, SE width C // 16, every BatchNorm scale starting at 1 (timm senet.py's
# init), no dropout: the SE-ResNet/SE-ResNeXt Caffe models (prototxts of the paper's release) have
# none before the classifier; only SENet-154 has dropout 0.2 (both layouts, as the paper).

_DEPTHS = {18: ('basic', (2, 2, 2, 2)), 34: ('basic', (3, 4, 6, 3)), 50: ('bottleneck', (3, 4, 6, 3)),
           101: ('bottleneck', (3, 4, 23, 3)), 152: ('bottleneck', (3, 8, 36, 3))}
_TIMM_SE = SEConfig(rounding='divisible8')
_CAFFE_SE = SEConfig(rounding='floor')
_CAFFE = dict(stem_pool='ceil', zero_init_last_bn=False)


def _register_imagenet() -> None:
  for depth, (block, stages) in _DEPTHS.items():
    base = dict(block=block, stage_sizes=stages)
    register(f'resnet{depth}', input_size=224, description=f'ResNet-{depth} (timm layout)', **base)
    register(f'seresnet{depth}', input_size=224, description=f'SE-ResNet-{depth} (timm layout)',
             se=_TIMM_SE, **base)
    register(f'legacy_seresnet{depth}', input_size=224,
             description=f'SE-ResNet-{depth}, Caffe layout of the paper (timm legacy_seresnet{depth})',
             se=_CAFFE_SE, stride_on='1x1', act_before_attn=(block == 'basic'), **_CAFFE, **base)

  resnext = dict(block='bottleneck', cardinality=32, base_width=4)
  resnet_d = dict(stem='deep', stem_width=32, stem_channels=64, downsample='avg')
  for depth in (50, 101):
    stages = _DEPTHS[depth][1]
    register(f'resnext{depth}_32x4d', input_size=224, description=f'ResNeXt-{depth} 32x4d',
             stage_sizes=stages, **resnext)
    register(f'seresnext{depth}_32x4d', input_size=224, description=f'SE-ResNeXt-{depth} 32x4d',
             stage_sizes=stages, se=_TIMM_SE, **resnext)
  for depth in (26, 50, 101):
    stages = (2, 2, 2, 2) if depth == 26 else _DEPTHS[depth][1]
    register(f'legacy_seresnext{depth}_32x4d', input_size=224,
             description=f'SE-ResNeXt-{depth} 32x4d, Caffe layout (timm legacy_seresnext{depth}_32x4d)',
             stage_sizes=stages, se=_CAFFE_SE, **_CAFFE, **resnext)
  register('resnet26d', input_size=224, description='ResNet-26-D (deep stem, avg-pool shortcut)',
           block='bottleneck', stage_sizes=(2, 2, 2, 2), **resnet_d)
  register('seresnext26d_32x4d', input_size=224, description='SE-ResNeXt-26-D 32x4d',
           stage_sizes=(2, 2, 2, 2), se=_TIMM_SE, **resnext, **resnet_d)

  senet154 = dict(block='bottleneck', stage_sizes=(3, 8, 36, 3), cardinality=64, base_width=4,
                  reduce_first=2, stem='deep', stem_width=64, stem_channels=128, down_kernel_size=3,
                  drop_rate=0.2)
  register('senet154', input_size=224, description='SENet-154 (timm layout)', se=_TIMM_SE, **senet154)
  register('legacy_senet154', input_size=224, description='SENet-154, Caffe layout of the paper',
           se=_CAFFE_SE, **_CAFFE, **senet154)


# ----------------------------------------------------------------------------------------------
# CIFAR networks (32x32, three stages, 3x3 stem without pooling), as the papers the SE paper's
# CIFAR tables take them from: every BatchNorm scale starts at 1 (no zero-init); the basic-block
# ResNets (He et al. 2016, CIFAR section) use option A shortcuts (identity, zero-padded channels,
# no parameters); ResNet-164 (He et al., Identity Mappings: KaimingHe/resnet-1k-layers) and
# WRN-16-8 (Zagoruyko & Komodakis) project with 1x1 convolutions where the shape changes.

def _register_cifar() -> None:
  cifar = dict(stem='cifar', stem_channels=16, widths=(16, 32, 64), drop_rate=0.0, num_classes=10,
               zero_init_last_bn=False)
  paper_se = SEConfig(rounding='floor')
  for depth in (20, 32, 44, 56, 110):
    n = (depth - 2) // 6
    base = dict(block='basic', stage_sizes=(n, n, n), downsample='pad', **cifar)
    register(f'resnet{depth}_cifar', input_size=32, description=f'ResNet-{depth} (He et al. 2016, CIFAR)', **base)
    register(f'seresnet{depth}_cifar', input_size=32, description=f'SE-ResNet-{depth} (CIFAR)',
             se=paper_se, **base)
    register(f'preactresnet{depth}_cifar', input_size=32,
             description=f'pre-activation ResNet-{depth} (CIFAR)', **{**base, 'block': 'preact_basic'})
    register(f'sepreactresnet{depth}_cifar', input_size=32,
             description=f'SE pre-activation ResNet-{depth} (CIFAR)', se=paper_se,
             **{**base, 'block': 'preact_basic'})
  for prefix, se in (('', None), ('se', paper_se)):
    register(f'{prefix}resnet164_cifar', input_size=32,
             description=f'{"SE-" if se else ""}ResNet-164, pre-activation bottleneck (CIFAR)',
             se=se, block='preact_bottleneck', stage_sizes=(18, 18, 18), **cifar)
    register(f'{prefix}wrn16_8_cifar', input_size=32,
             description=f'{"SE-" if se else ""}WRN-16-8 (Zagoruyko & Komodakis, CIFAR)',
             se=se, block='preact_basic', stage_sizes=(2, 2, 2),
             **{**cifar, 'widths': (128, 256, 512)})


# ----------------------------------------------------------------------------------------------
# timm's channel-attention ResNets with pretrained weights (timm 1.0.31 resnet.py and sknet.py;
# docs/reference.md, 'Channel-attention ResNets'). 't': the tiered deep stem (24-32-64 channels),
# 'd': the deep stem (32-32-64); both with the avg-pool shortcut. SK nets: a selective-kernel
# convolution in place of the 3x3 (basic blocks: the first), every BatchNorm scale starting at 1
# (timm zero_init_last=False).

_ECA = SEConfig(kind='eca')  # timm attn_layer='eca': kernel size from the channels, gamma 2, beta 1
_SK_RESNET = SKConfig(reduction=8, divisor=16, split_input=True)  # timm skresnet18/34
_SK_RESNEXT = SKConfig(reduction=16, divisor=32, split_input=False)  # timm skresnext50_32x4d (SKNet-50)


def _register_attention_nets() -> None:
  resnext = dict(block='bottleneck', cardinality=32, base_width=4)
  tiered = dict(stem='tiered', stem_width=32, stem_channels=64, downsample='avg')
  deep = dict(stem='deep', stem_width=32, stem_channels=64, downsample='avg')
  eca = dict(block='bottleneck', se=_ECA)
  register('ecaresnet26t', input_size=224, description='ECA-ResNet-26-T (tiered deep stem; timm trains at 256 px)',
           stage_sizes=(2, 2, 2, 2), **eca, **tiered)
  register('ecaresnet50d', input_size=224, description='ECA-ResNet-50-D', stage_sizes=_DEPTHS[50][1], **eca, **deep)
  register('ecaresnet50t', input_size=224, description='ECA-ResNet-50-T (tiered deep stem)',
           stage_sizes=_DEPTHS[50][1], **eca, **tiered)
  register('ecaresnet101d', input_size=224, description='ECA-ResNet-101-D', stage_sizes=_DEPTHS[101][1],
           **eca, **deep)
  register('ecaresnetlight', input_size=224,
           description='ECA-ResNet-light: 1-1-11-3 bottlenecks, 7x7 stem, avg-pool shortcut',
           stage_sizes=(1, 1, 11, 3), downsample='avg', **eca)
  register('seresnext26t_32x4d', input_size=224, description='SE-ResNeXt-26-T 32x4d (tiered deep stem)',
           stage_sizes=(2, 2, 2, 2), se=_TIMM_SE, **resnext, **tiered)
  for depth in (18, 34):
    register(f'skresnet{depth}', input_size=224,
             description=f'SK-ResNet-{depth}: selective-kernel first 3x3, input split across branches',
             block='basic', stage_sizes=_DEPTHS[depth][1], selective_kernel=_SK_RESNET,
             zero_init_last_bn=False)
  register('skresnext50_32x4d', input_size=224, description='SK-ResNeXt-50 32x4d (SKNet-50)',
           stage_sizes=_DEPTHS[50][1], selective_kernel=_SK_RESNEXT, zero_init_last_bn=False, **resnext)


# The paper's other architectures (Tables 2-3): VGG-16 with BN (SE after each conv's ReLU),
# MobileNet v1 (SE at the end of each depthwise-separable block) and ShuffleNet v1 1x, g = 3 (SE
# on each unit's residual branch). SE as the paper and its Caffe models: r = 16, C // r, FC biases.
# Tiny variants (32 px, 10 classes) for tests and digits runs; se=None gives their baselines.

_PAPER_SE = SEConfig(reduction=16, rounding='floor')
_TINY_SE = SEConfig(reduction=4, rounding='floor')


def _register_vgg() -> None:
  # Dropout 0.5 after fc6 and before the classifier: the VGG paper's and torchvision's training setting.
  for prefix, se in (('', None), ('se_', _PAPER_SE)):
    register(f'{prefix}vgg16_bn', input_size=224, module=VGG, se=se, drop_rate=0.5, stage_sizes=(2, 2, 3, 3, 3),
             widths=(64, 128, 256, 512, 512), description=f'{"SE-" if se else ""}VGG-16 with BatchNorm (timm vgg16_bn layout)')
  register('se_vgg_tiny', input_size=32, module=VGG, se=_TINY_SE, stage_sizes=(1, 1, 1), widths=(8, 16, 32),
           head_width=32, head_kernel=2, num_classes=10, description='tiny SE-VGG-BN for tests')


def _register_mobilenet() -> None:
  for prefix, se in (('', None), ('se_', _PAPER_SE)):
    register(f'{prefix}mobilenetv1_100', input_size=224, module=MobileNetV1, se=se, stage_sizes=(1, 2, 2, 6, 2),
             widths=(64, 128, 256, 512, 1024), description=f'{"SE-" if se else ""}MobileNet v1 1.0 (timm mobilenetv1_100 layout, ReLU6)')
  register('se_mobilenet_tiny', input_size=32, module=MobileNetV1, se=_TINY_SE, stage_sizes=(1, 1, 1),
           widths=(16, 32, 64), stem_width=8, num_classes=10, description='tiny SE-MobileNet v1 for tests')


def _register_shufflenet() -> None:
  for prefix, se in (('', None), ('se_', _PAPER_SE)):
    register(f'{prefix}shufflenet_v1_g3', input_size=224, module=ShuffleNetV1, se=se, groups=3,
             stage_sizes=(4, 8, 4), widths=(240, 480, 960), description=f'{"SE-" if se else ""}ShuffleNet v1 1x, g = 3 (Zhang et al. 2018)')
  register('se_shufflenet_tiny', input_size=32, module=ShuffleNetV1, se=_TINY_SE, groups=3, stage_sizes=(1, 1, 1),
           widths=(24, 48, 96), stem_width=12, num_classes=10, description='tiny SE-ShuffleNet v1 for tests')
# The Inception networks of the paper's Table 2 (BN-Inception, Inception-ResNet-v2) and
# Inception-v3. SE as the SE-BN-Inception prototxt: C // 16 with biases, sigmoid (SEConfig's
# defaults). Baselines: the pretrainedmodels BN-Inception port, timm's inception_v3 and
# inception_resnet_v2. The _tiny variants (1/8 width, one module or residual block per SE stage;
# compilation time grows with the conv count) are for tests and digits runs: BN-Inception at
# 32 px, the others at 75 px (their smallest input).

_INCEPTION_SE = SEConfig(reduction=16, rounding='floor')
_TINY_SE = SEConfig(reduction=4, rounding='floor')


def _register_inception() -> None:
  nets = (('bninception', 'BN-Inception', BNInception, 224, dict(modules=('3a', '3c', '5b')), 32),
          ('inception_v3', 'Inception-v3', InceptionV3, 299, dict(modules=('5b', '6a', '7b')), 75),
          ('inception_resnet_v2', 'Inception-ResNet-v2', InceptionResNetV2, 299, dict(depths=(1, 1, 0)), 75))
  for name, title, module, size, tiny, tiny_size in nets:
    register(name, input_size=size, description=title, module=module)
    register(f'se_{name}', input_size=size, description=f'SE-{title}', module=module, se=_INCEPTION_SE)
    register(f'se_{name}_tiny', input_size=tiny_size, description=f'tiny SE-{title} for tests',
             module=module, se=_TINY_SE, width=0.125, **tiny)


# ----------------------------------------------------------------------------------------------
# Tiny variants, for tests and smoke runs.

def _register_tiny() -> None:
  register('seresnet_tiny', input_size=32, description='tiny bottleneck SE-ResNet for tests',
           block='bottleneck', stage_sizes=(1, 1, 1, 1), widths=(8, 16, 32, 64), stem_channels=16,
           se=SEConfig(reduction=4))
  register('seresnet_tiny_cifar', input_size=32, description='tiny CIFAR SE-ResNet for tests',
           block='basic', stage_sizes=(1, 1, 1), stem='cifar', stem_channels=8, widths=(8, 16, 32),
           se=SEConfig(reduction=4), num_classes=10)
  register('skresnet_tiny_cifar', input_size=32, description='tiny CIFAR SK-ResNet for tests',
           block='basic', stage_sizes=(1, 1, 1), stem='cifar', stem_channels=8, widths=(8, 16, 32),
           selective_kernel=SKConfig(reduction=2, divisor=4), zero_init_last_bn=False, num_classes=10)


_register_imagenet()
_register_cifar()
_register_attention_nets()
_register_vgg()
_register_mobilenet()
_register_shufflenet()
_register_inception()
_register_tiny()
