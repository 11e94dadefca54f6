"""Model folders: the one place that turns "a folder, a file in it, or nothing" into model files.

A model folder holds ``encoder.onnx`` (from `regionmir train`), ``report.json`` beside it, and
optionally ``localizer.onnx`` (from `regionmir train-localizer`) and baselines in sub-folders.
Every command takes ``--model`` as the folder or one ``.onnx`` file in it; ``None`` is
``config.default_model_dir()``. A missing encoder or localizer raises one :class:`ModelError`
that says how to make one.
"""

from __future__ import annotations

from pathlib import Path

from regionmir import config
from regionmir.errors import ModelError

ENCODER_FILE = "encoder.onnx"
LOCALIZER_FILE = "localizer.onnx"
REPORT_FILE = "report.json"  # the training report `regionmir train` writes beside encoder.onnx

FILES = {"encoder": ENCODER_FILE, "localizer": LOCALIZER_FILE}  # by ModelMeta.kind
HOW_TO_MAKE = {
    "encoder": "Train one with `regionmir train ARCHIVE --out {folder}` "
               "(or pass --model to an existing model folder).",
    "localizer": "Train one with `regionmir train-localizer ARCHIVE --out {folder}` "
                 "(or pass --model to a folder that has localizer.onnx).",
}


class ModelFolder:
    """A model folder, found from what a person passed as ``--model``.

    Attributes:
        path: the folder.
        named: the one file given instead of a folder (any name; a path ending in ``.onnx``
            counts as a file even when it does not exist), else None.
    """

    def __init__(self, path: str | Path | None = None):
        """``path``: a model folder, a model file in one, or None for ``config.default_model_dir()``."""
        given = config.default_model_dir() if path is None else Path(path).expanduser()
        self.named = given if given.suffix == ".onnx" or given.is_file() else None
        self.path = given.parent if self.named is not None else given

    def __repr__(self) -> str:
        return f"ModelFolder({self.named or self.path})"

    def file(self, kind: str) -> Path:
        """The ``kind`` ("encoder" or "localizer") model: the file named, else the folder's one.

        Raises:
            ModelError: nothing is there; the message says how to make one.
        """
        file = self.named or self.path / FILES[kind]
        if not file.is_file():
            raise ModelError(f"No {kind} model at {file}. {HOW_TO_MAKE[kind].format(folder=self.path)}")
        return file

    def has(self, kind: str) -> bool:
        """Whether the ``kind`` ("encoder" or "localizer") model is there."""
        return (self.named or self.path / FILES[kind]).is_file()

    @property
    def encoder_file(self) -> Path:
        """The encoder: the file named, else ``encoder.onnx`` in the folder.

        Raises:
            ModelError: no encoder there (the message says to run `regionmir train`).
        """
        return self.file("encoder")

    @property
    def localizer_file(self) -> Path | None:
        """``localizer.onnx`` in the folder (beside the encoder), or None when there is none."""
        file = self.path / LOCALIZER_FILE
        return file if file.is_file() else None

    @property
    def report(self) -> Path:
        """Where `regionmir train` writes its ``report.json`` (it may not exist)."""
        return self.path / REPORT_FILE

    def onnx_files(self) -> list[Path]:
        """The encoder first, then, when a folder was given, every other ``.onnx`` under it
        (baselines in sub-folders, the localizer), sorted.

        Raises:
            ModelError: no encoder there.
        """
        main = self.encoder_file
        if self.named is not None:
            return [main]
        return [main, *sorted(p for p in self.path.rglob("*.onnx") if p.resolve() != main.resolve())]

    def load_encoder(self, device: str = "auto", threads: int = 0):
        """The :class:`~regionmir.inference.encoder.Encoder` of this folder.

        Raises:
            ModelError: no encoder there, or it cannot be used.
        """
        from regionmir.inference.encoder import Encoder

        return Encoder(self.encoder_file, device=device, threads=threads)

    def load_localizer(self, device: str = "auto", threads: int = 0):
        """The :class:`~regionmir.inference.localizer.Localizer` beside the encoder, or None
        when the folder has no ``localizer.onnx``.

        Raises:
            ModelError: the folder's localizer.onnx cannot be used.
        """
        from regionmir.inference.localizer import Localizer

        file = self.localizer_file
        return None if file is None else Localizer(file, device=device, threads=threads)
