"""Search: a query film's regions -> the most similar stored regions of the same anatomy.

- :mod:`~regionmir.search.searcher`: ``Searcher``, ``search_image``
- :mod:`~regionmir.search.where`: the ``--where`` language (``view=PA``, ``'ctr>0.5'``)
- :mod:`~regionmir.search.montage`: a contact sheet of the query and its hits
"""

from regionmir.search.searcher import (
    RegionResult,
    Searcher,
    SearchOutcome,
    StudyResult,
    search_image,
)
from regionmir.search.where import check_where, parse_where

__all__ = ["RegionResult", "SearchOutcome", "Searcher", "StudyResult", "check_where", "parse_where", "search_image"]
