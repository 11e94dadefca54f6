"""PACS access: DICOMweb (QIDO-RS/WADO-RS) as an ingest source and a DICOM C-STORE listener.

- :mod:`~regionmir.pacs.dicomweb`: credentials, search and retrieve (dicomweb-client)
- :mod:`~regionmir.pacs.spool`: the durable folder of instances waiting for ingest
- :mod:`~regionmir.pacs.source`: ingest sources (a DICOMweb service, a spool) for ``run_ingest``
- :mod:`~regionmir.pacs.listener`: the C-STORE SCP (pynetdicom) behind `regionmir listen`
- :mod:`~regionmir.pacs.gate`: who may connect to the listener, and how many connections each peer holds
"""

from regionmir.pacs.dicomweb import (
    InstanceRef,
    Query,
    connect,
    find_instances,
    is_url,
    parse_instance_url,
    retrieve,
)
from regionmir.pacs.spool import Spool

__all__ = ["InstanceRef", "Query", "Spool", "connect", "find_instances", "is_url", "parse_instance_url", "retrieve"]
