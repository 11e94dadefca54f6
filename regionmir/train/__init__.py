"""Training (torch only): region crop datasets, augmentations, contrastive losses, encoders, loops, ONNX export.

Install with ``pip install 'regionmir[train]'``. Nothing outside this package imports torch.
"""

from regionmir.train.loop import STRATEGIES, TrainConfig
from regionmir.train.pipeline import MODEL_FILE, run

__all__ = ["MODEL_FILE", "STRATEGIES", "TrainConfig", "run"]
