"""`regionmir anatomies`: list the region vocabulary."""

from __future__ import annotations

import typer


def anatomies(
    as_json: bool = typer.Option(False, "--json", help="Print JSON for machines."),
) -> None:
    """List the 36 Chest ImaGenome regions with their slugs and class indexes."""
    from regionmir.anatomy import ALL

    rows = [{"index": a.index, "slug": a.slug, "bbox_name": a.bbox_name, "boxed": a.boxed} for a in ALL]
    if as_json:
        import json

        typer.echo(json.dumps(rows))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("index", "slug", "bbox_name", "gold box")
    for r in rows:
        table.add_row(str(r["index"]), r["slug"], r["bbox_name"], "yes" if r["boxed"] else "")
    Console().print(table)
