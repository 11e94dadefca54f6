"""`regionmir localize`: put the 29 Chest ImaGenome boxes on a frontal chest radiograph."""

from __future__ import annotations

from pathlib import Path

import typer

from regionmir.cli.options import image_file


def localize(
    image: Path = typer.Argument(..., exists=True, dir_okay=False, help="DICOM, PNG or JPEG of a frontal chest film."),
    model: Path = typer.Option(None, "--model", help="Model folder or localizer.onnx (default: $REGIONMIR_HOME/model)."),
    preview: Path = typer.Option(None, "--preview", dir_okay=False, callback=image_file,
                                 help="Write a PNG of the film with the predicted boxes."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (onnxruntime)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
) -> None:
    """Predict the 29 boxed regions of IMAGE; confidence is the model's predicted IoU of each box."""
    import json

    from regionmir.dicom import read_image
    from regionmir.inference.folder import ModelFolder
    from regionmir.inference.localizer import Localizer, draw_regions

    loc = Localizer(ModelFolder(model).file("localizer"), device=device)  # ModelError says how to train one
    radiograph = read_image(image)
    regions = loc.locate(radiograph.pixels)
    h, w = radiograph.pixels.shape
    rows = [{"anatomy": r.anatomy.slug, "box": r.box.as_list(), "confidence": round(r.confidence, 3)}
            for r in regions]
    if preview is not None:
        draw_regions(radiograph.pixels, regions).save(preview)
    if as_json:
        from regionmir.privacy import mask_path

        shown = mask_path(Path(image).as_posix(), *radiograph.header.patient_values)  # no patient folder
        typer.echo(json.dumps({"image": shown, "width": w, "height": h,
                               "model_id": loc.model_id, "regions": rows}))
        return
    _print_table(image, w, h, loc.model_id, rows, preview)


def _print_table(image, w, h, model_id, rows, preview) -> None:
    """The human view; the file names are user text, shown as written (no markup, no emoji codes)."""
    from rich.console import Console
    from rich.table import Table

    table = Table("anatomy", "box x1,y1,x2,y2 (px)", "confidence (predicted IoU)",
                  title=f"{image.name} {w}x{h}, localizer {model_id}")
    for r in rows:
        table.add_row(r["anatomy"], ", ".join(f"{v:.0f}" for v in r["box"]), f"{r['confidence']:.2f}")
    console = Console(markup=False, emoji=False, highlight=False)
    console.print(table)
    if preview is not None:
        console.print(f"preview written to {preview}")
