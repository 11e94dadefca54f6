"""Real-film check: score phantom-trained models on real chest films with lung and heart truth."""

from regionmir.evaluation.real.check import findings_retrieval, lung_iou, run_check
from regionmir.evaluation.real.ctr import cardiothoracic_ratio, ctr_errors
from regionmir.evaluation.real.films import (
           RealFilm,
           lung_boxes_from_mask,
           read_films,
           truth_boxes,
)
from regionmir.evaluation.real.retrieval import enlarged_retrieval, same_label_share
from regionmir.evaluation.real.sheet import film_tile, write_sheet

__all__ = ["RealFilm", "cardiothoracic_ratio", "ctr_errors", "enlarged_retrieval", "film_tile", "findings_retrieval",
           "lung_boxes_from_mask", "lung_iou", "read_films", "run_check", "same_label_share", "truth_boxes",
           "write_sheet"]
