"""Small synthetic DICOMs for the tests: a DX writer with patient data in every header."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

# identifiers written into every synthetic file; no error message or output may contain them
PATIENT = {"PatientName": "Doe^Jane", "PatientID": "MRN-4711-X", "PatientBirthDate": "19700101"}


def write_dicom(path: Path, arr: np.ndarray, photometric: str = "MONOCHROME2",
                bits_stored: int | None = None, **elements) -> Path:
    """A small DX DICOM with ``arr`` as stored values; ``elements`` set (None: delete) tags."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.ViewPosition = "DX", "PA"
    for keyword, value in PATIENT.items():
        setattr(ds, keyword, value)
    ds.set_pixel_data(arr, photometric, bits_stored or arr.dtype.itemsize * 8)
    for keyword, value in elements.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def break_voi_lut(path: Path) -> Path:
    """Give the DICOM at ``path`` a VOI LUT whose descriptor says 5 bits per entry (not allowed)."""
    import pydicom

    ds = pydicom.dcmread(path)
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [256, 0, 5])
    item.add_new("LUTData", "US", list(range(256)))
    ds.VOILUTSequence = [item]
    ds.save_as(path)
    return path
