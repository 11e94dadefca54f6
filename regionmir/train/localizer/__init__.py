"""Localizer training (torch): a film -> one box per anatomy, exported to ONNX.

- :mod:`~regionmir.train.localizer.data`: films and their boxes from an archive
- :mod:`~regionmir.train.localizer.real`: real films with lung masks as training films
- :mod:`~regionmir.train.localizer.augment`: geometric and intensity augmentation (never mirrored)
- :mod:`~regionmir.train.localizer.model`: the network, its loss and its ONNX export
- :mod:`~regionmir.train.localizer.eval`: box IoU per anatomy on a split, with onnxruntime
- :mod:`~regionmir.train.localizer.run`: ``train_localizer``, one training run
"""

from regionmir.train.localizer.run import LocalizerConfig, train_localizer

__all__ = ["LocalizerConfig", "train_localizer"]
