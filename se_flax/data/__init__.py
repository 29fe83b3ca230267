"""Datasets and input pipelines (TensorFlow/TFDS only, never on the GPU).

`datasets` holds the TF-free facts (class counts, image shapes, mean/std, the `data` config
section) that configs read; `input_pipeline` is the entry point for training; `digits` defines
the offline `se_flax_digits` TFDS dataset; `pil_eval` is timm's eval transform in PIL (numpy and
PIL only), for pretrained tags.
"""
