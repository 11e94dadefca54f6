"""Writing a phantom radiograph as a DICOM file the way CR/DX scanners do (pydicom 3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

from regionmir.phantom.patient import Patient, Pose

CR_IMAGE = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
DX_IMAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation


def uid(*parts: object) -> str:
    """A UID derived deterministically from ``parts`` (the archive seed and the object's ids)."""
    return generate_uid(entropy_srcs=["regionmir-phantom", *(str(p) for p in parts)])


def stored_values(image: np.ndarray, pose: Pose) -> np.ndarray:
    """``(H, W)`` [0, 1] bright = dense -> uint16 stored values (MONOCHROME1 inverted)."""
    top = (1 << pose.bits) - 1
    v = np.rint(np.clip(image, 0, 1) * top).astype(np.uint16)
    return (top - v).astype(np.uint16) if pose.photometric == "MONOCHROME1" else v


def dataset(
    pixels: np.ndarray, p: Patient, pose: Pose, ids: dict[str, str], seed: int
) -> Dataset:
    """The DICOM dataset of one image; ``ids`` holds subject_id, study_id and dicom_id."""
    sop_class = CR_IMAGE if pose.modality == "CR" else DX_IMAGE
    study_uid = uid(seed, "study", ids["study_id"])
    series_uid = uid(seed, "series", ids["study_id"], ids["dicom_id"])
    sop_uid = uid(seed, "sop", ids["dicom_id"])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "REGIONMIR_PH1"
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    date = pose.date.strftime("%Y%m%d")
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "%02d%02d00" % (8 + p.index % 10, p.index % 60)
    ds.AccessionNumber = ids["study_id"][1:]
    ds.Modality = pose.modality
    ds.Manufacturer = "RegionMIR Phantom"
    ds.InstitutionName = "Synthetic Hospital"
    ds.StudyDescription = "CHEST (PA AND LAT)" if pose.view == "PA" else "CHEST (PORTABLE AP)"
    ds.SeriesDescription = f"CHEST {pose.view}"
    ds.PatientName = p.name
    ds.PatientID = p.subject_id
    ds.PatientBirthDate = p.birth.strftime("%Y%m%d")
    ds.PatientSex = p.sex
    ds.PatientAge = "%03dY" % max(0, (pose.date - p.birth).days // 365)
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = pose.view
    ds.PatientOrientation = ["L", "F"] if pose.view == "PA" else ["R", "F"]
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.StudyID = ids["study_id"][1:]
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.ImagerPixelSpacing = [round(pose.spacing_mm, 6)] * 2
    ds.PixelSpacing = [round(pose.spacing_mm * (0.9 if pose.view == "PA" else 0.92), 6)] * 2
    ds.DistanceSourceToDetector = 1800 if pose.view == "PA" else 1000
    _pixels(ds, pixels, pose)
    return ds


def _pixels(ds: Dataset, pixels: np.ndarray, pose: Pose) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = pose.photometric
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, pose.bits, pose.bits - 1
    ds.PixelRepresentation = 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    ds.PresentationLUTShape = "INVERSE" if pose.photometric == "MONOCHROME1" else "IDENTITY"
    if pose.window:
        top = (1 << pose.bits) - 1
        ds.WindowCenter, ds.WindowWidth = round(top * 0.5), round(top * 0.95)
    ds.PixelData = pixels.astype("<u2").tobytes()


def write(path: Path, ds: Dataset, compression: str | None) -> Path:
    """Save ``ds`` (compressed losslessly with RLE or JPEG 2000 when asked)."""
    if compression == "rle":
        ds.compress(RLELossless, generate_instance_uid=False)
    elif compression == "j2k":
        ds.compress(JPEG2000Lossless, generate_instance_uid=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
