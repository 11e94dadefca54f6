"""Option checks shared by commands: refused before any work is done, as usage errors."""

from __future__ import annotations

from pathlib import Path

import typer


def image_file(path: Path | None) -> Path | None:
    """Typer callback for an image to write (``--montage``, ``--preview``): a suffix Pillow can write."""
    if path is None:
        return None
    from PIL import Image

    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise typer.BadParameter(f"{path.name}: cannot write a {path.suffix or 'suffix-less'} image; "
                                 "name it .png (or .jpg)")
    return path
