"""Real-film check: score phantom-trained models on real chest films with lung masks or boxes."""

from regionmir.evaluation.real.check import findings_retrieval, lung_iou, run_check
from regionmir.evaluation.real.films import RealFilm, lung_boxes_from_mask, read_films, truth_boxes
from regionmir.evaluation.real.sheet import film_tile, write_sheet

__all__ = ["RealFilm", "film_tile", "findings_retrieval", "lung_boxes_from_mask", "lung_iou", "read_films",
           "run_check", "truth_boxes", "write_sheet"]
