"""What is known about each model of the zoo, in one table: its timm name, its pretrained tags
(timm's preprocessing and reference top-1), the tags the model table quotes, and the paper's figure.

Every other table is derived from this one: `se_flax.models.registry` attaches `facts(name)` to the
model it registers (`spec(name).reference`, the model table of `python -m se_flax.tools.model_table`
and the README); `se_flax.weights` takes its tag table (`TAGS`), `DEFAULT_TAGS` and the converter's
`TIMM_NAMES` from here. Pure data: no TensorFlow, no weights, no network (as timm's `default_cfgs`
beside `@register_model`).
"""

from __future__ import annotations

import dataclasses

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # timm IMAGENET_DEFAULT_MEAN / STD, in 0..1 units
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class Tag:
  """A published checkpoint of a timm model: how it was trained to be fed and how well it does.

  `input_size`/`crop_pct` are timm's train-resolution defaults; `test_size`/`test_crop_pct` the
  resolution timm reports `top1` at (its `test_input_size` where given). `top1`: ImageNet-1k
  validation top-1 (%) at test_size, None where timm publishes none. `pth_url`: set where timm
  publishes the weights only as a PyTorch file (no hub copy).
  """

  tag: str
  input_size: int
  crop_pct: float
  test_size: int
  test_crop_pct: float
  interpolation: str
  top1: float | None
  mean: tuple[float, float, float] = IMAGENET_MEAN
  std: tuple[float, float, float] = IMAGENET_STD
  pth_url: str | None = None

  @property
  def name(self) -> str:
    return self.tag.split('.', 1)[0]

  @property
  def hub_id(self) -> str | None:
    return None if self.pth_url else f'timm/{self.tag}'

  def quote(self) -> str:
    """'81.28 (ra2, 288 px)': top-1, the tag's suffix, and the test resolution where not 224."""
    suffix = self.tag.split('.', 1)[1].removesuffix('_in1k').removesuffix('in1k')
    notes = [n for n in (suffix, f'{self.test_size} px' if self.test_size != 224 else '') if n]
    return f'{self.top1:.2f}' + (f' ({", ".join(notes)})' if notes else '')


# Registry names that timm 1.0.31 also has (docs/reference.md, section 1): the names the
# converter maps (se_flax.weights.convert). One exception: 'bninception' is the `pretrainedmodels`
# package's BN-Inception (0.7.4, not in timm), whose state dict the converter maps alike.
TIMM_NAMES = (
    'resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152',
    'seresnet18', 'seresnet34', 'seresnet50', 'seresnet101', 'seresnet152',
    'legacy_seresnet18', 'legacy_seresnet34', 'legacy_seresnet50', 'legacy_seresnet101',
    'legacy_seresnet152', 'resnext50_32x4d', 'resnext101_32x4d', 'resnet26d', 'seresnext26d_32x4d',
    'seresnext50_32x4d', 'seresnext101_32x4d', 'legacy_seresnext26_32x4d', 'legacy_seresnext50_32x4d',
    'legacy_seresnext101_32x4d', 'senet154', 'legacy_senet154',
    'seresnext26t_32x4d', 'skresnet18', 'skresnet34', 'skresnext50_32x4d',
    'ecaresnet26t', 'ecaresnet50d', 'ecaresnet50t', 'ecaresnet101d', 'ecaresnetlight',
    'vgg16_bn', 'mobilenetv1_100',
    'inception_v3', 'inception_resnet_v2', 'bninception',
)

# Every pretrained ImageNet-1k tag that timm 1.0.31 lists for those names
# (`timm.list_pretrained(name)`, `get_pretrained_cfg(tag)`: input_size, crop_pct, test_input_size,
# test_crop_pct, interpolation, mean/std; crop_mode is 'center' throughout). resnet50.bamboo (no
# classifier) is left out; seresnet18/34/101/152 have no weights. top1: timm's
# results/results-imagenet.csv (commit 0173a139), measured at the test resolution and crop listed
# here, the one figure the project quotes for a tag (older 224 px figures such as seresnet50.ra2's
# 80.26 are not used); resnet34.tv_in1k is missing there and comes from docs/reference.md (73.31).
# (tag, input_size, crop_pct, test_size, test_crop_pct, interpolation, top1)
_ROWS = (
    ('resnet18.a1_in1k', 224, 0.95, 288, 1.0, 'bicubic', 73.158),
    ('resnet18.a2_in1k', 224, 0.95, 288, 1.0, 'bicubic', 72.372),
    ('resnet18.a3_in1k', 160, 0.95, 224, 0.95, 'bicubic', 68.254),
    ('resnet18.fb_ssl_yfcc100m_ft_in1k', 224, 0.875, 224, 0.875, 'bilinear', 72.594),
    ('resnet18.fb_swsl_ig1b_ft_in1k', 224, 0.875, 224, 0.875, 'bilinear', 73.282),
    ('resnet18.gluon_in1k', 224, 0.875, 224, 0.875, 'bicubic', 70.838),
    ('resnet18.tv_in1k', 224, 0.875, 224, 0.875, 'bilinear', 69.76),
    ('resnet34.a1_in1k', 224, 0.95, 288, 1.0, 'bicubic', 77.918),
    ('resnet34.a2_in1k', 224, 0.95, 288, 1.0, 'bicubic', 77.158),
    ('resnet34.a3_in1k', 160, 0.95, 224, 0.95, 'bicubic', 72.97),
    ('resnet34.bt_in1k', 224, 0.875, 288, 0.95, 'bicubic', 76.48),
    ('resnet34.gluon_in1k', 224, 0.875, 224, 0.875, 'bicubic', 74.578),
    ('resnet34.ra4_e3600_r224_in1k', 224, 0.9, 288, 1.0, 'bicubic', None),
    ('resnet34.tv_in1k', 224, 0.875, 224, 0.875, 'bilinear', 73.31),
    ('resnet50.a1_in1k', 224, 0.95, 288, 1.0, 'bicubic', 81.214),
    ('resnet50.a1h_in1k', 176, 0.9, 224, 1.0, 'bicubic', 80.676),
    ('resnet50.a2_in1k', 224, 0.95, 288, 1.0, 'bicubic', 80.772),
    ('resnet50.a3_in1k', 160, 0.95, 224, 0.95, 'bicubic', 78.048),
    ('resnet50.am_in1k', 224, 0.875, 224, 0.875, 'bicubic', 78.998),
    ('resnet50.b1k_in1k', 224, 0.95, 288, 1.0, 'bicubic', 80.706),
    ('resnet50.b2k_in1k', 224, 0.95, 288, 1.0, 'bicubic', 80.454),
    ('resnet50.bt_in1k', 224, 0.875, 288, 0.95, 'bicubic', 79.64),
    ('resnet50.c1_in1k', 224, 0.95, 288, 1.0, 'bicubic', 80.912),
    ('resnet50.c2_in1k', 224, 0.95, 288, 1.0, 'bicubic', 80.87),
    ('resnet50.d_in1k', 224, 0.95, 288, 1.0, 'bicubic', 80.972),
    ('resnet50.fb_ssl_yfcc100m_ft_in1k', 224, 0.875, 224, 0.875, 'bilinear', 79.234),
    ('resnet50.fb_swsl_ig1b_ft_in1k', 224, 0.875, 224, 0.875, 'bilinear', 81.182),
    ('resnet50.gluon_in1k', 224, 0.875, 224, 0.875, 'bicubic', 77.58),
    ('resnet50.ra_in1k', 224, 0.875, 288, 0.95, 'bicubic', 79.836),
    ('resnet50.ram_in1k', 224, 0.875, 288, 0.95, 'bicubic', 79.976),
    ('resnet50.tv2_in1k', 176, 0.875, 224, 0.965, 'bilinear', 80.85),
    ('resnet50.tv_in1k', 224, 0.875, 224, 0.875, 'bilinear', 76.13),
    ('resnet101.a1_in1k', 224, 0.95, 288, 1.0, 'bicubic', 82.322),
    ('resnet101.a1h_in1k', 224, 0.95, 288, 1.0, 'bicubic', 82.778),
    ('resnet101.a2_in1k', 224, 0.95, 288, 1.0, 'bicubic', 82.236),
    ('resnet101.a3_in1k', 160, 0.95, 224, 0.95, 'bicubic', 79.814),
    ('resnet101.gluon_in1k', 224, 0.875, 224, 0.875, 'bicubic', 79.31),
    ('resnet101.tv2_in1k', 176, 0.875, 224, 0.965, 'bilinear', 81.89),
    ('resnet101.tv_in1k', 224, 0.875, 224, 0.875, 'bilinear', 77.376),
    ('resnet152.a1_in1k', 224, 0.95, 288, 1.0, 'bicubic', 82.732),
    ('resnet152.a1h_in1k', 224, 0.95, 288, 1.0, 'bicubic', 83.45),
    ('resnet152.a2_in1k', 224, 0.95, 288, 1.0, 'bicubic', 82.608),
    ('resnet152.a3_in1k', 160, 0.95, 224, 0.95, 'bicubic', 80.546),
    ('resnet152.gluon_in1k', 224, 0.875, 224, 0.875, 'bicubic', 79.694),
    ('resnet152.tv2_in1k', 176, 0.875, 224, 0.965, 'bilinear', 82.288),
    ('resnet152.tv_in1k', 224, 0.875, 224, 0.875, 'bilinear', 78.322),
    ('seresnet50.a1_in1k', 224, 0.95, 288, 1.0, 'bicubic', 81.102),
    ('seresnet50.a2_in1k', 224, 0.95, 288, 1.0, 'bicubic', 81.106),
    ('seresnet50.a3_in1k', 160, 0.95, 224, 0.95, 'bicubic', 77.028),
    ('seresnet50.ra2_in1k', 224, 0.875, 288, 0.95, 'bicubic', 81.284),
    ('legacy_seresnet18.in1k', 224, 0.875, 224, 0.875, 'bicubic', 71.766),
    ('legacy_seresnet34.in1k', 224, 0.875, 224, 0.875, 'bilinear', 74.808),
    ('legacy_seresnet50.in1k', 224, 0.875, 224, 0.875, 'bilinear', 77.644),
    ('legacy_seresnet101.in1k', 224, 0.875, 224, 0.875, 'bilinear', 78.386),
    ('legacy_seresnet152.in1k', 224, 0.875, 224, 0.875, 'bilinear', 78.66),
    ('resnext50_32x4d.a1_in1k', 224, 0.95, 288, 1.0, 'bicubic', 81.466),
    ('resnext50_32x4d.a1h_in1k', 224, 0.95, 288, 1.0, 'bicubic', 82.014),
    ('resnext50_32x4d.a2_in1k', 224, 0.95, 288, 1.0, 'bicubic', 81.304),
    ('resnext50_32x4d.a3_in1k', 160, 0.95, 224, 0.95, 'bicubic', 79.268),
    ('resnext50_32x4d.fb_ssl_yfcc100m_ft_in1k', 224, 0.875, 224, 0.875, 'bilinear', 80.338),
    ('resnext50_32x4d.fb_swsl_ig1b_ft_in1k', 224, 0.875, 224, 0.875, 'bilinear', 82.174),
    ('resnext50_32x4d.gluon_in1k', 224, 0.875, 224, 0.875, 'bicubic', 79.36),
    ('resnext50_32x4d.ra_in1k', 224, 0.875, 288, 0.95, 'bicubic', 80.698),
    ('resnext50_32x4d.tv2_in1k', 176, 0.875, 224, 0.965, 'bilinear', 81.182),
    ('resnext50_32x4d.tv_in1k', 224, 0.875, 224, 0.875, 'bilinear', 77.618),
    ('resnext101_32x4d.fb_ssl_yfcc100m_ft_in1k', 224, 0.875, 224, 0.875, 'bilinear', 80.924),
    ('resnext101_32x4d.fb_swsl_ig1b_ft_in1k', 224, 0.875, 224, 0.875, 'bilinear', 83.232),
    ('resnext101_32x4d.gluon_in1k', 224, 0.875, 224, 0.875, 'bicubic', 80.34),
    ('resnet26d.bt_in1k', 224, 0.875, 288, 0.95, 'bicubic', 77.408),
    ('seresnext26d_32x4d.bt_in1k', 224, 0.875, 288, 0.95, 'bicubic', 78.814),
    ('seresnext50_32x4d.gluon_in1k', 224, 0.875, 224, 0.875, 'bicubic', 79.91),
    ('seresnext50_32x4d.racm_in1k', 224, 0.875, 288, 0.95, 'bicubic', 82.196),
    ('seresnext101_32x4d.gluon_in1k', 224, 0.875, 224, 0.875, 'bicubic', 80.892),
    ('legacy_seresnext26_32x4d.in1k', 224, 0.875, 224, 0.875, 'bicubic', 77.108),
    ('legacy_seresnext50_32x4d.in1k', 224, 0.875, 224, 0.875, 'bilinear', 79.076),
    ('legacy_seresnext101_32x4d.in1k', 224, 0.875, 224, 0.875, 'bilinear', 80.23),
    ('senet154.gluon_in1k', 224, 0.875, 224, 0.875, 'bicubic', 81.226),
    ('legacy_senet154.in1k', 224, 0.875, 224, 0.875, 'bilinear', 81.308),
    ('seresnext26t_32x4d.bt_in1k', 224, 0.875, 288, 0.95, 'bicubic', 78.744),
    ('skresnet18.ra_in1k', 224, 0.875, 224, 0.875, 'bicubic', 73.038),
    ('skresnet34.ra_in1k', 224, 0.875, 224, 0.875, 'bicubic', 76.91),
    ('skresnext50_32x4d.ra_in1k', 224, 0.875, 224, 0.875, 'bicubic', 80.162),
    ('ecaresnet26t.ra2_in1k', 256, 0.875, 320, 0.95, 'bicubic', 79.85),
    ('ecaresnet50d.miil_in1k', 224, 0.875, 288, 0.95, 'bicubic', 81.65),
    ('ecaresnet50t.a1_in1k', 224, 0.95, 288, 1.0, 'bicubic', 82.128),
    ('ecaresnet50t.a2_in1k', 224, 0.95, 288, 1.0, 'bicubic', 81.658),
    ('ecaresnet50t.a3_in1k', 160, 0.95, 224, 0.95, 'bicubic', 79.552),
    ('ecaresnet50t.ra2_in1k', 256, 0.875, 320, 0.95, 'bicubic', 82.352),
    ('ecaresnet101d.miil_in1k', 224, 0.875, 288, 0.95, 'bicubic', 82.984),
    ('ecaresnetlight.miil_in1k', 224, 0.875, 288, 0.95, 'bicubic', 81.408),
    # vgg16_bn: results-imagenet.csv as above. mobilenetv1_100 (not in that csv): timm's README
    # (MobileNet-V1 baselines, ra4 weights), 76.094 at 256 px (75.382 at 224).
    ('vgg16_bn.tv_in1k', 224, 0.875, 224, 0.875, 'bilinear', 73.37),
    ('mobilenetv1_100.ra4_e3600_r224_in1k', 224, 0.875, 256, 0.95, 'bicubic', 76.094),
    ('inception_v3.gluon_in1k', 299, 0.875, 299, 0.875, 'bicubic', 78.806),
    ('inception_v3.tf_adv_in1k', 299, 0.875, 299, 0.875, 'bicubic', 77.592),
    ('inception_v3.tf_in1k', 299, 0.875, 299, 0.875, 'bicubic', 77.862),
    ('inception_v3.tv_in1k', 299, 0.875, 299, 0.875, 'bicubic', 77.434),
    ('inception_resnet_v2.tf_ens_adv_in1k', 299, 0.8975, 299, 0.8975, 'bicubic', 79.978),
    ('inception_resnet_v2.tf_in1k', 299, 0.8975, 299, 0.8975, 'bicubic', 80.462),
)
IMAGENET_INCEPTION_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # timm IMAGENET_INCEPTION_MEAN / STD
_MEAN_STD = {'resnet34.ra4_e3600_r224_in1k': IMAGENET_INCEPTION_MEAN_STD,
             'mobilenetv1_100.ra4_e3600_r224_in1k': IMAGENET_INCEPTION_MEAN_STD,
             **{t: IMAGENET_INCEPTION_MEAN_STD for t in ('inception_v3.tv_in1k', 'inception_v3.tf_in1k',
                                                        'inception_v3.tf_adv_in1k', 'inception_resnet_v2.tf_in1k',
                                                        'inception_resnet_v2.tf_ens_adv_in1k')}}

# Tags that timm (pretrained_cfg 'url', no 'hf_hub_id') publishes only as PyTorch files. No tag
# for bninception: timm has none, and the pretrainedmodels weights take BGR input in 0..255, which
# the input pipeline does not produce (docs/reference.md, section 8).
_V01 = 'https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-'
_PTH_URLS = {
    'legacy_seresnet18.in1k': _V01 + 'weights/seresnet18-4bb0ce65.pth',
    'legacy_seresnet34.in1k': _V01 + 'weights/seresnet34-a4004e63.pth',
    'legacy_seresnet50.in1k': _V01 + 'cadene/se_resnet50-ce0d4300.pth',
    'legacy_seresnet101.in1k': _V01 + 'cadene/se_resnet101-7e38fcc6.pth',
    'legacy_seresnet152.in1k': _V01 + 'cadene/se_resnet152-d17c99b7.pth',
    'legacy_seresnext26_32x4d.in1k': _V01 + 'weights/seresnext26_32x4d-65ebdb501.pth',
    'legacy_seresnext50_32x4d.in1k': _V01 + 'weights/legacy_se_resnext50_32x4d-f3651bad.pth',
    'legacy_seresnext101_32x4d.in1k': _V01 + 'weights/legacy_se_resnext101_32x4d-37725eac.pth',
    'legacy_senet154.in1k': _V01 + 'weights/legacy_senet154-e9eb9fe6.pth',
}

TAGS: dict[str, Tag] = {row[0]: Tag(*row, *_MEAN_STD.get(row[0], ()), pth_url=_PTH_URLS.get(row[0]))
                        for row in _ROWS}

# timm's default tag per name (`get_pretrained_cfg(name).tag`): what pretrained=True loads.
DEFAULT_TAGS = {
    'resnet18': 'resnet18.a1_in1k', 'resnet34': 'resnet34.a1_in1k', 'resnet50': 'resnet50.a1_in1k',
    'resnet101': 'resnet101.a1h_in1k', 'resnet152': 'resnet152.a1h_in1k', 'seresnet50': 'seresnet50.a1_in1k',
    'legacy_seresnet18': 'legacy_seresnet18.in1k', 'legacy_seresnet34': 'legacy_seresnet34.in1k',
    'legacy_seresnet50': 'legacy_seresnet50.in1k', 'legacy_seresnet101': 'legacy_seresnet101.in1k',
    'legacy_seresnet152': 'legacy_seresnet152.in1k', 'resnext50_32x4d': 'resnext50_32x4d.a1h_in1k',
    'resnext101_32x4d': 'resnext101_32x4d.fb_ssl_yfcc100m_ft_in1k', 'resnet26d': 'resnet26d.bt_in1k',
    'seresnext26d_32x4d': 'seresnext26d_32x4d.bt_in1k', 'seresnext50_32x4d': 'seresnext50_32x4d.racm_in1k',
    'seresnext101_32x4d': 'seresnext101_32x4d.gluon_in1k',
    'legacy_seresnext26_32x4d': 'legacy_seresnext26_32x4d.in1k',
    'legacy_seresnext50_32x4d': 'legacy_seresnext50_32x4d.in1k',
    'legacy_seresnext101_32x4d': 'legacy_seresnext101_32x4d.in1k', 'senet154': 'senet154.gluon_in1k',
    'seresnext26t_32x4d': 'seresnext26t_32x4d.bt_in1k', 'skresnet18': 'skresnet18.ra_in1k',
    'skresnet34': 'skresnet34.ra_in1k', 'skresnext50_32x4d': 'skresnext50_32x4d.ra_in1k',
    'ecaresnet26t': 'ecaresnet26t.ra2_in1k', 'ecaresnet50d': 'ecaresnet50d.miil_in1k',
    'ecaresnet50t': 'ecaresnet50t.ra2_in1k', 'ecaresnet101d': 'ecaresnet101d.miil_in1k',
    'ecaresnetlight': 'ecaresnetlight.miil_in1k',
    'vgg16_bn': 'vgg16_bn.tv_in1k', 'mobilenetv1_100': 'mobilenetv1_100.ra4_e3600_r224_in1k',
    'legacy_senet154': 'legacy_senet154.in1k', 'inception_v3': 'inception_v3.tv_in1k',
    'inception_resnet_v2': 'inception_resnet_v2.tf_in1k',
}

# The tags the model table quotes (torchvision's where timm has them, as the paper compares with
# those; else the SE weights timm trained; Inception-ResNet-v2: TF-slim's) and the paper's figures:
# ImageNet 100 - Table 2/8 top-1 error, CIFAR Tables 4-5 error (docs/reference.md, sections 1 and 3;
# the Inception nets: its Inception section).
_QUOTED = {
    'resnet18': ('tv',), 'resnet34': ('tv',), 'resnet50': ('tv', 'a1'), 'resnet101': ('tv',),
    'resnet152': ('tv',), 'seresnet50': ('ra2',), 'resnext50_32x4d': ('tv',), 'seresnext26d_32x4d': ('bt',),
    'seresnext50_32x4d': ('racm',), 'seresnext101_32x4d': ('gluon',), 'senet154': ('gluon',),
    **{name: ('',) for name in TIMM_NAMES if name.startswith('legacy_')},
    'seresnext26t_32x4d': ('bt',), 'skresnet18': ('ra',), 'skresnet34': ('ra',), 'skresnext50_32x4d': ('ra',),
    'ecaresnet26t': ('ra2',), 'ecaresnet50d': ('miil',), 'ecaresnet50t': ('ra2',), 'ecaresnet101d': ('miil',),
    'ecaresnetlight': ('miil',),
    'vgg16_bn': ('tv',), 'mobilenetv1_100': ('ra4_e3600_r224',),
    'inception_v3': ('tv',), 'inception_resnet_v2': ('tf',),
}
_PAPER = {
    'resnet50': 'paper baseline 75.20', 'seresnet50': 'paper 76.71', 'legacy_seresnet50': 'paper 76.71',
    'legacy_seresnet101': 'paper 77.62', 'legacy_seresnet152': 'paper 78.43',
    'seresnext50_32x4d': 'paper 78.90', 'seresnext101_32x4d': 'paper 79.30',
    'legacy_seresnext50_32x4d': 'paper 78.90', 'legacy_seresnext101_32x4d': 'paper 79.30',
    'senet154': 'paper 81.32', 'legacy_senet154': 'paper 81.32',
    'resnet110_cifar': 'paper C10 err 6.37, C100 26.88', 'seresnet110_cifar': 'paper C10 err 5.21, C100 23.85',
    'resnet164_cifar': 'paper C10 err 5.46, C100 24.33', 'seresnet164_cifar': 'paper C10 err 4.39, C100 21.31',
    'wrn16_8_cifar': 'paper C10 err 4.27, C100 20.43', 'sewrn16_8_cifar': 'paper C10 err 3.88, C100 19.14',
    # SKNet-50 of Li et al. (arXiv 1903.06586, Table 2: 20.79% top-1 error at 224 px), the network
    # timm's skresnext50_32x4d reproduces (docs/reference.md, 'Channel-attention ResNets').
    'skresnext50_32x4d': 'SKNet paper 79.21',
    # Table 2 (VGG-16 with BN) and Table 3 (mobile networks): 100 - top-1 error.
    'vgg16_bn': 'paper baseline 72.98', 'se_vgg16_bn': 'paper 74.78',
    'mobilenetv1_100': 'paper baseline 71.60', 'se_mobilenetv1_100': 'paper 74.70',
    'shufflenet_v1_g3': 'paper baseline 67.40', 'se_shufflenet_v1_g3': 'paper 69.00',
    'bninception': 'paper baseline 74.62', 'se_bninception': 'paper 75.77',
    'inception_resnet_v2': 'paper baseline 79.63', 'se_inception_resnet_v2': 'paper 80.20',
}


@dataclasses.dataclass(frozen=True)
class ModelFacts:
  """Everything recorded about one registered model."""

  name: str
  timm: bool  # the converter maps this name (timm 1.0.31's architecture; bninception: pretrainedmodels')
  tags: tuple[Tag, ...]  # timm's pretrained tags, all of them
  default_tag: str | None  # what pretrained=True loads
  quoted: tuple[Tag, ...]  # the tags the model table quotes
  paper: str  # the paper's figure, '' if it reports none
  baseline: str | None = None  # the converter name whose weights this SE net starts from (`baseline_of`)

  @property
  def reference(self) -> str:
    """The model table's reference column: quoted tags' top-1, then the paper's figure."""
    timm = ' / '.join(t.quote() for t in self.quoted if t.top1 is not None)
    return '; '.join(p for p in (timm, self.paper) if p)


def baseline_of(name: str) -> str | None:
  """The converter name an SE net without weights of its own starts from: `name` without its 'se_'
  prefix ('se_inception_v3' -> 'inception_v3'), where the converter has that name; else None. A
  weights file or hub id given for `name` is read as that baseline's (SE parameters stay fresh)."""
  base = name.removeprefix('se_')
  return base if base != name and name not in TIMM_NAMES and base in TIMM_NAMES else None


def facts(name: str) -> ModelFacts:
  """The facts about `name` (a model without timm weights or paper figures gets empty ones)."""
  quoted = tuple(TAGS[f'{name}.{s}_in1k' if s else f'{name}.in1k'] for s in _QUOTED.get(name, ()))
  return ModelFacts(name, name in TIMM_NAMES, tuple(t for t in TAGS.values() if t.name == name),
                    DEFAULT_TAGS.get(name), quoted, _PAPER.get(name, ''), baseline_of(name))
