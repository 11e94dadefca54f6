"""Ingest: every labeled region of an archive -> embeddings with payloads in a collection.

- :mod:`~regionmir.ingest.runner`: ``run_ingest``, the loop over a source's batches
- :mod:`~regionmir.ingest.stages`: plan, prepare (decode, crop), encode, to points
- :mod:`~regionmir.ingest.ledger`: what is done, so a killed ingest resumes without gaps
"""

from regionmir.ingest.ledger import Ledger
from regionmir.ingest.runner import IngestConfig, IngestSummary, run_ingest

__all__ = ["IngestConfig", "IngestSummary", "Ledger", "run_ingest"]
