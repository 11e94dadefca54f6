"""Synthetic chest radiograph archive (phantoms) in the MIMIC-CXR + Chest ImaGenome formats."""

from regionmir.phantom.generate import generate_archive
from regionmir.phantom.preview import preview

__all__ = ["generate_archive", "preview"]
