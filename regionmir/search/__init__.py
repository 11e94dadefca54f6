"""Search: a query film's regions -> the most similar stored regions of the same anatomy.

- :mod:`~regionmir.search.searcher`: ``Searcher``, ``search_image``, ``--where`` filters
- :mod:`~regionmir.search.montage`: a contact sheet of the query and its hits
"""

from regionmir.search.searcher import RegionResult, Searcher, SearchOutcome, StudyResult, parse_where, search_image

__all__ = ["RegionResult", "SearchOutcome", "Searcher", "StudyResult", "parse_where", "search_image"]
