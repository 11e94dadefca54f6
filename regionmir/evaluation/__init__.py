"""Evaluation: retrieval and classification scores on an archive's test split, and on real films.

- :mod:`~regionmir.evaluation.run`: encode the split, fill collections, run the queries
- :mod:`~regionmir.evaluation.summary`: per-query rows -> scores with confidence intervals
- :mod:`~regionmir.evaluation.metrics`: precision@k, mAP, same-label@k and their chance levels
- :mod:`~regionmir.evaluation.report`: the JSON/Markdown report and its plots
- :mod:`~regionmir.evaluation.real`: phantom-trained models on real chest films
"""

from regionmir.evaluation.run import EvalConfig, evaluate

__all__ = ["EvalConfig", "evaluate"]
