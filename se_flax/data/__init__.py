"""Datasets and input pipelines (TensorFlow/TFDS only, never on the GPU).

`input_pipeline` is the entry point for training; `digits` defines the
offline `se_flax_digits` TFDS dataset; `pil_eval` is timm's eval transform in
PIL (numpy and PIL only), for pretrained tags.
"""
