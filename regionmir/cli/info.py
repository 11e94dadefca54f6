"""`regionmir info`: the store, its collections, their models and points per anatomy."""

from __future__ import annotations

import typer


def info(
    qdrant_url: str = typer.Option(None, "--qdrant-url", envvar="QDRANT_URL", help="Qdrant server; default: the embedded store."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
) -> None:
    """Show the store location, its collections, model ids, CTR range and points per anatomy."""
    import json

    from regionmir import config
    from regionmir.store import open_store

    url = qdrant_url or None
    if url is None:
        config.require_home()  # a file there is said, not shown as an empty store
    if url is None and not config.default_store_dir().is_dir():
        doc = {"store": str(config.default_store_dir()), "collections": []}
    else:
        store = open_store(url, config.qdrant_api_key(), path=None if url else config.default_store_dir())
        try:
            doc = {"store": store.location, "collections": [_collection(store, n) for n in store.collections()]}
        finally:
            store.close()
    if as_json:
        typer.echo(json.dumps(doc))
    else:
        _print(doc)


def _collection(store, name: str) -> dict:
    meta = store.collection_meta(name)
    per_anatomy = store.facet(name, "anatomy")
    return {
        "name": name, "points": store.count(name), "model_id": meta.get("model_id"),
        "dim": meta.get("dim"), "archive_root": meta.get("archive_root"),
        "created": meta.get("created"), "ctr_range": _ctr_range(store, name),
        "per_anatomy": dict(sorted(per_anatomy.items(), key=lambda kv: _order(kv[0]))),
    }


def _ctr_range(store, name: str) -> list[float] | None:
    """``[lowest, highest]`` cardiothoracic ratio stored; None for a collection without one."""
    span = store.value_range(name, "ctr")
    return None if span is None else list(span)


def _order(slug: str) -> tuple[int, str]:
    """Vocabulary (class index) order; slugs outside the vocabulary last, alphabetically."""
    from regionmir.anatomy import SLUGS

    return (SLUGS.index(slug), "") if slug in SLUGS else (len(SLUGS), slug)


def _print(doc: dict) -> None:
    """The human view; store path, names and slugs are user text, shown as written (no markup)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(markup=False, emoji=False, highlight=False)  # a '[/x]' in REGIONMIR_HOME is a name
    console.print(f"Store: {doc['store']}", soft_wrap=True)  # a long path stays one line, to copy
    if not doc["collections"]:
        console.print("No collections yet. Create one with `regionmir ingest ARCHIVE`.")
        return
    for c in doc["collections"]:
        console.print(Text.assemble(
            (c["name"], "bold"), f": {c['points']} points, model {c['model_id']} "
            f"({c['dim']}-d), archive {c['archive_root'] or 'a PACS (DICOMweb or DICOM)'}",
        ), soft_wrap=True)
        span = c["ctr_range"]
        console.print("cardiothoracic ratio: " + (f"{span[0]:.3f} to {span[1]:.3f} (filter with --where 'ctr>0.5')"
                                                  if span else "not stored (ingest again into a new collection)"))
        table = Table("anatomy", "points")
        for slug, n in c["per_anatomy"].items():
            table.add_row(slug, str(n))
        console.print(table)
