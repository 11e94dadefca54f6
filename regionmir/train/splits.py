"""An archive split listed in one streaming pass: what cutting and naming its crops needs, without its scene graphs.

A training run needs, before it cuts anything, the anatomy list of the train split, how many
crops each image gives and the split's fingerprint. Holding every ``(path, SceneGraph)`` pair for
that costs ~30 KB per film (all 36 boxes, findings and phrases), 11 GB at MIMIC-CXR's 377k films.
:func:`scan_split` reads the scene graphs one at a time and keeps per image only its path, id and
the anatomy index of each region (2 bytes a region); the cut reads each scene graph again,
beside its image, with :meth:`SplitScan.item`.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from regionmir.anatomy import Anatomy
from regionmir.annotations import SceneGraph, read_scene_graph
from regionmir.archive import Archive
from regionmir.errors import AnnotationError
from regionmir.train.data import FingerprintSum


@dataclass
class SplitScan:
    """The images of one split that have scene graphs, in split-file order."""

    archive: Archive
    name: str
    paths: list[str]  # (images,) DICOM path of each image
    graphs: list[str]  # (images,) path of its scene graph
    image_ids: list[str]  # (images,) its image id (the scene graph's, as crops are named)
    anatomies: np.ndarray  # (regions,) int16: Anatomy index of each region, image after image, scene-graph order
    starts: np.ndarray  # (images + 1,) int64: image i's regions are anatomies[starts[i]:starts[i + 1]]
    fingerprint: str  # data.fingerprint of the split's scene graphs

    def __len__(self) -> int:
        return len(self.image_ids)

    def classes(self) -> tuple[Anatomy, ...]:
        """Anatomies that occur in the split, in :class:`Anatomy` index order (``data.present_classes``)."""
        found = set(np.unique(self.anatomies).tolist())
        return tuple(a for a in Anatomy if a.index in found)

    def labels(self, classes) -> tuple[np.ndarray, np.ndarray]:
        """``(labels (N,) int64, starts (images + 1,) int64)`` of the regions whose anatomy is in
        ``classes``: each label is the position of its anatomy in ``classes``; image i's crops are
        rows ``starts[i]:starts[i + 1]``."""
        lookup = np.full(len(Anatomy), -1, np.int64)
        lookup[[a.index for a in classes]] = np.arange(len(classes))
        pos = lookup[self.anatomies]  # (regions,)
        kept = pos >= 0
        cum = np.concatenate([[0], np.cumsum(kept)]).astype(np.int64)  # (regions + 1,)
        return pos[kept], cum[self.starts]

    def item(self, i: int) -> tuple[Path, SceneGraph]:
        """``(dicom_path, scene_graph)`` of image ``i``, the scene graph read again from disk.

        Raises:
            AnnotationError: the scene graph is gone or no longer matches the scan.
        """
        want = self.anatomies[self.starts[i]:self.starts[i + 1]].tolist()
        try:
            sg = read_scene_graph(self.graphs[i])
        except AnnotationError:
            sg = None
        if sg is None or [r.anatomy.index for r in sg.regions] != want:
            raise AnnotationError(f"The scene graph of {self.image_ids[i]} changed or vanished while training "
                                  f"read the {self.name} split of {self.archive.root}; run the command again.")
        return Path(self.paths[i]), sg


def scan_split(archive: Archive, name: str) -> SplitScan:
    """List split ``name`` of ``archive``: every image with a scene graph, one scene graph in memory at a time.

    Raises:
        AnnotationError: unknown split name or missing split file.
    """
    paths, graphs, ids, starts = [], [], [], [0]
    anatomies = array("h")
    digest = FingerprintSum()
    for row in archive.split(name):  # as Archive.iter_split, keeping where each scene graph is
        dicom = archive.root / row.path
        where = archive.scene_graph_path(row.dicom_id, dicom)
        if where is None:
            continue
        sg = read_scene_graph(where)
        paths.append(str(dicom))
        graphs.append(str(where))
        ids.append(sg.image_id)
        anatomies.extend(r.anatomy.index for r in sg.regions)
        starts.append(len(anatomies))
        digest.add(sg)
    return SplitScan(archive, name, paths, graphs, ids, np.frombuffer(anatomies, np.int16).copy(),
                     np.asarray(starts, np.int64), digest.hexdigest())
