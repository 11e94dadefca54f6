"""The anatomy vocabulary: the 36 Chest ImaGenome regions, their CLI slugs and class indexes.

This is the only place the region list is written down. The CLI, the Qdrant payload
(`anatomy` = slug), the training labels (`index`) and the annotation readers
(`bbox_name`) all go through :class:`Anatomy`.

Laterality is the patient's: ``RIGHT_LUNG`` lies on the image's left in a PA or AP view.
"""

from __future__ import annotations

import difflib
import enum

from regionmir.errors import UnknownAnatomyError

# Chest ImaGenome bbox_name values, in class-index order. The first 29 are the regions
# that carry boxes in the gold standard; the last 7 appear in the silver scene graphs.
_NAMES: tuple[str, ...] = (
    "right lung",
    "right upper lung zone",
    "right mid lung zone",
    "right lower lung zone",
    "right hilar structures",
    "right apical zone",
    "right costophrenic angle",
    "right hemidiaphragm",
    "left lung",
    "left upper lung zone",
    "left mid lung zone",
    "left lower lung zone",
    "left hilar structures",
    "left apical zone",
    "left costophrenic angle",
    "left hemidiaphragm",
    "trachea",
    "spine",
    "right clavicle",
    "left clavicle",
    "aortic arch",
    "mediastinum",
    "upper mediastinum",
    "svc",
    "cavoatrial junction",
    "right atrium",
    "carina",
    "abdomen",
    "cardiac silhouette",
    "right cardiophrenic angle",
    "left cardiophrenic angle",
    "left cardiac silhouette",
    "right cardiac silhouette",
    "descending aorta",
    "left upper abdomen",
    "right upper abdomen",
)

N_BOXED = 29  # regions 0..28 are the gold-standard boxed set


class Anatomy(enum.Enum):
    """One Chest ImaGenome anatomical region.

    ``Anatomy.LEFT_LUNG.bbox_name == "left lung"``, ``.slug == "left-lung"``, ``.index == 8``.
    """

    RIGHT_LUNG = 0
    RIGHT_UPPER_LUNG_ZONE = 1
    RIGHT_MID_LUNG_ZONE = 2
    RIGHT_LOWER_LUNG_ZONE = 3
    RIGHT_HILAR_STRUCTURES = 4
    RIGHT_APICAL_ZONE = 5
    RIGHT_COSTOPHRENIC_ANGLE = 6
    RIGHT_HEMIDIAPHRAGM = 7
    LEFT_LUNG = 8
    LEFT_UPPER_LUNG_ZONE = 9
    LEFT_MID_LUNG_ZONE = 10
    LEFT_LOWER_LUNG_ZONE = 11
    LEFT_HILAR_STRUCTURES = 12
    LEFT_APICAL_ZONE = 13
    LEFT_COSTOPHRENIC_ANGLE = 14
    LEFT_HEMIDIAPHRAGM = 15
    TRACHEA = 16
    SPINE = 17
    RIGHT_CLAVICLE = 18
    LEFT_CLAVICLE = 19
    AORTIC_ARCH = 20
    MEDIASTINUM = 21
    UPPER_MEDIASTINUM = 22
    SVC = 23
    CAVOATRIAL_JUNCTION = 24
    RIGHT_ATRIUM = 25
    CARINA = 26
    ABDOMEN = 27
    CARDIAC_SILHOUETTE = 28
    RIGHT_CARDIOPHRENIC_ANGLE = 29
    LEFT_CARDIOPHRENIC_ANGLE = 30
    LEFT_CARDIAC_SILHOUETTE = 31
    RIGHT_CARDIAC_SILHOUETTE = 32
    DESCENDING_AORTA = 33
    LEFT_UPPER_ABDOMEN = 34
    RIGHT_UPPER_ABDOMEN = 35

    @property
    def index(self) -> int:
        """Class index used for training labels and logits."""
        return self.value

    @property
    def bbox_name(self) -> str:
        """Chest ImaGenome ``bbox_name`` (``"left lung"``)."""
        return _NAMES[self.value]

    @property
    def slug(self) -> str:
        """CLI and payload spelling (``"left-lung"``)."""
        return _NAMES[self.value].replace(" ", "-")

    @property
    def boxed(self) -> bool:
        """True for the 29 regions that have gold-standard boxes."""
        return self.value < N_BOXED

    @property
    def side(self) -> str | None:
        """The patient's side, ``"right"``/``"left"``, or None for midline structures."""
        first = _NAMES[self.value].split()[0]
        return first if first in ("right", "left") else None

    def contralateral(self) -> Anatomy | None:
        """The same structure on the patient's other side; None for midline structures and for
        sided ones without a twin in the vocabulary (``right atrium``)."""
        side = self.side
        if side is None:
            return None
        other = "left" if side == "right" else "right"
        return _BY_KEY.get(other + self.bbox_name[len(side):])

    @classmethod
    def parse(cls, text: str | Anatomy) -> Anatomy:
        """Accept a bbox_name (``"left lung"``), a slug (``"left-lung"``) or a member name.

        Raises:
            UnknownAnatomyError: ``text`` names no region; the message lists close matches.
        """
        if isinstance(text, Anatomy):
            return text
        key = str(text).strip().lower().replace("_", " ").replace("-", " ")
        key = " ".join(key.split())
        found = _BY_KEY.get(key)
        if found is None:
            raise UnknownAnatomyError(str(text), suggestions(str(text)))
        return found


_BY_KEY: dict[str, Anatomy] = {a.bbox_name: a for a in Anatomy}

ALL: tuple[Anatomy, ...] = tuple(Anatomy)
BOXED: tuple[Anatomy, ...] = tuple(a for a in Anatomy if a.boxed)
SLUGS: tuple[str, ...] = tuple(a.slug for a in Anatomy)


def suggestions(text: str, n: int = 5) -> list[str]:
    """Slugs that look like ``text``, best first (for error messages)."""
    key = str(text).strip().lower().replace("_", "-").replace(" ", "-")
    close = difflib.get_close_matches(key, SLUGS, n=n, cutoff=0.5)
    if not close:
        close = [s for s in SLUGS if any(part in s for part in key.split("-") if len(part) > 2)][:n]
    return close
