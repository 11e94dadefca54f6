"""`regionmir search`: find the regions (or studies) of an archive most like a query image's."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from regionmir.cli.options import image_file


def search(
    image: str = typer.Argument(..., help="Query image: DICOM (PNG/JPEG accepted), or a WADO-RS instance URL .../studies/UID/series/UID/instances/UID."),
    anatomy: str = typer.Option(..., "--anatomy", "-a", help="Region slug (see `regionmir anatomies`), or 'all' to rank studies."),
    box: str = typer.Option(None, "--box", help="Query box x1,y1,x2,y2 in image pixels."),
    scene_graph: Path = typer.Option(None, "--scene-graph", exists=True, dir_okay=False, help="Scene graph JSON with the query's regions."),
    where: list[str] = typer.Option([], "--where", help="Payload condition (repeatable, all hold): key=value (view=PA, findings=nodule), or a cardiothoracic ratio bound, quoted for the shell: 'ctr>0.5', 'ctr<=0.45'."),
    study: str = typer.Option(None, "--study", help="Only regions of this study."),
    exclude_same_patient: bool = typer.Option(None, "--exclude-same-patient/--include-same-patient", help="Leave out the query's patient \\[default: exclude when the query is in the collection]."),
    top_k: int = typer.Option(10, "--top-k", "-k", min=1, max=1000, help="Number of results."),
    exact: bool = typer.Option(False, "--exact", help="Exact (brute-force) search instead of HNSW."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON results only."),
    montage: Path = typer.Option(None, "--montage", dir_okay=False, callback=image_file,
                                 help="Write a PNG: query crop beside the top hits."),
    model: Path = typer.Option(None, "--model", help="Model folder or encoder.onnx \\[default: $REGIONMIR_HOME/model]."),
    collection: str = typer.Option(None, "--collection", help="Collection \\[default: regions]."),
    qdrant_url: str = typer.Option(None, "--qdrant-url", envvar="QDRANT_URL", help="Qdrant server; default: the embedded store."),
    server: str = typer.Option(None, "--server", help="Send the query to this `regionmir serve` URL \\[default: the server of $REGIONMIR_HOME, when one runs]."),
    no_server: bool = typer.Option(False, "--no-server", help="Search in this process even when a server runs."),
) -> None:
    """Search the collection for regions like IMAGE's region of --anatomy.

    An IMAGE URL is retrieved with WADO-RS (credentials: REGIONMIR_DICOMWEB_TOKEN or
    REGIONMIR_DICOMWEB_USER/PASSWORD) and is never kept. When `regionmir serve` runs for
    $REGIONMIR_HOME (or with --server URL) the query is sent there: same results, no store to open.
    """
    t0, started = time.perf_counter(), time.time()
    import tempfile

    from regionmir.pacs.dicomweb import download_instance, is_url, parse_instance_url

    if not is_url(image) and not Path(image).is_file():
        what = "is a directory, not an image file" if Path(image).is_dir() else "is not a file"
        raise typer.BadParameter(f"{image} {what} (nor a WADO-RS instance URL "
                                 ".../studies/UID/series/UID/instances/UID)", param_hint="IMAGE")
    if not no_server and (doc := _via_server(server, image, anatomy, box, scene_graph, where, study,
                                             exclude_same_patient, top_k, exact, montage, model, collection,
                                             qdrant_url)) is not None:
        _output(doc, as_json, None)
        return
    with tempfile.TemporaryDirectory(prefix="regionmir-query-") as tmp:
        query = download_instance(image, Path(tmp)) if is_url(image) else Path(image)
        pacs = (parse_instance_url(image)[0], Path(tmp) / "hits") if is_url(image) else None
        _search(query, anatomy, box, scene_graph, where, study, exclude_same_patient, top_k, exact, as_json,
                montage, model, collection, qdrant_url, t0, started, pacs)


def _via_server(server, image, anatomy, box, scene_graph, where, study, exclude_same_patient, top_k, exact,
                montage, model, collection, qdrant_url) -> dict | None:
    """The `--json` document from `regionmir serve` (``server``, else the one of this home), or None
    to search in this process (no server runs, or the options name another model or store)."""
    import os

    from regionmir import config
    from regionmir.errors import RegionMIRError
    from regionmir.serve import client, discovery

    url = server
    if url is None:
        info = None if (model or qdrant_url) else discovery.find(config.require_home())
        if info is None or (collection and collection != info.collection):
            return None
        url = info.url
        if info.token_sha256 and discovery.token_hash(os.environ.get(client.TOKEN_ENV)) != info.token_sha256:
            raise RegionMIRError(f"`regionmir serve` at {url} holds this home's store and needs its token: "
                                 f"set {client.TOKEN_ENV} (or search with --server URL).")
    if montage is not None or scene_graph is not None:
        which = "--montage" if montage is not None else "--scene-graph"
        raise typer.BadParameter(f"cannot go through `regionmir serve` ({url}), which holds the store: "
                                 "stop the server, or search without it", param_hint=which)
    params = client.search_params(anatomy, top_k, where, box, study, exclude_same_patient, exact)
    try:
        return client.search(url, image, params)
    except client.ServerUnreachableError:
        if server:
            raise
        return None  # a server that died without removing its file: search here
    except client.ServerAnswerError as e:
        if e.param:
            raise typer.BadParameter(e.message, param_hint=e.param) from None
        raise


def _search(image: Path, anatomy, box, scene_graph, where, study, exclude_same_patient, top_k, exact, as_json,
            montage, model, collection, qdrant_url, t0: float, started: float, pacs=None) -> None:
    """The search itself; ``pacs``: (DICOMweb root, folder) to fetch montage hits from when the query came from it."""
    from concurrent.futures import ThreadPoolExecutor

    from regionmir import config
    from regionmir.search.query import document, parse_query, run_query
    from regionmir.search.searcher import Searcher
    from regionmir.search.where import check_where
    from regionmir.store.collection import open_existing_store, require_collection

    anatomy, query_box, conditions = _usage(parse_query, anatomy, box, where)
    config.require_home()  # its model, store or salt: a file there is said, not "no store"
    timings = {"import": time.perf_counter() - t0}
    name = collection or config.DEFAULT_COLLECTION
    with ThreadPoolExecutor(1) as pool:
        loading = pool.submit(_load_models, model)  # ONNX session creation overlaps the store load
        t = time.perf_counter()
        store = open_existing_store(qdrant_url or None)
        try:
            meta = require_collection(store, name)  # the one check per search; the Searcher reuses it
            store.count(name)  # loads the collection now, while the model loads
            check_where(store, name, conditions)
            timings["open_store"] = time.perf_counter() - t
            t = time.perf_counter()
            encoder, localizer, timings["model_load"] = loading.result()
            timings["model_wait"] = time.perf_counter() - t
            searcher = Searcher(store, name, encoder, localizer, meta=meta)
            outcome = _usage(run_query, searcher, image, anatomy, query_box, scene_graph, conditions, study,
                             exclude_same_patient, top_k, exact, timings)
            if montage is not None:
                from regionmir.search.montage import write_montage

                write_montage(outcome, _montage_root(outcome, searcher, pacs, top_k), montage, top_k)
            _output(document(outcome, searcher, timings, t0, started), as_json, montage)  # before the store closes
        finally:
            store.close()


def _usage(call, *args):
    """``call(*args)``, a :class:`~regionmir.errors.UsageError` made the CLI's usage error (exit 2)."""
    from regionmir.errors import UsageError

    try:
        return call(*args)
    except UsageError as e:
        raise typer.BadParameter(e.reason, param_hint=e.option) from None


def _montage_root(outcome, searcher, pacs, top_k: int):
    """Where the montage reads hit images: the archive folder, or hits fetched from the query's PACS."""
    if pacs is None:
        return searcher.meta.get("archive_root")
    from regionmir.pacs.dicomweb import download_paths

    root, folder = pacs
    hits = outcome.regions[0].hits if outcome.studies is None else [s.best for s in outcome.studies]
    download_paths(root, [str(h.payload.get("path", "")) for h in hits[:top_k]], folder)
    return folder


def _output(doc: dict, as_json: bool, montage: Path | None) -> None:
    if as_json:
        import json

        typer.echo(json.dumps(doc))
    else:
        _print(doc, montage)


def _load_models(model: Path | None):
    """``(encoder, localizer loader, seconds)``: the encoder now, the localizer on first use."""
    from regionmir.inference.folder import ModelFolder

    t = time.perf_counter()
    folder = ModelFolder(model)
    encoder = folder.load_encoder()
    return encoder, folder.load_localizer, time.perf_counter() - t


def _short(image_id: str) -> str:
    """MIMIC dicom_ids are five hex groups; the first one identifies an image in a table."""
    head = image_id.split("-")[0]
    return head + "…" if len(head) < len(image_id) else image_id


def _ctr(value: float | None) -> str:
    """A cardiothoracic ratio as the table shows it; ``-`` for a film without one."""
    return "-" if value is None else f"{value:.3f}"


def _print(doc: dict, montage: Path | None) -> None:
    """The human view. File names, ids and paths are user text: shown as written, never as markup."""
    from rich.console import Console
    from rich.table import Table

    console = Console(markup=False, emoji=False, highlight=False)  # '[bold]q.dcm' is a file name
    q = doc["query"]
    where = "in the collection" if q["in_collection"] else "not in the collection"
    ctr = "" if q.get("ctr") is None else f"; CTR {q['ctr']:.3f}"
    console.print(f"Query {q['image_id']} ({where}; boxes from {q['regions'][0]['source']}{ctr})", soft_wrap=True)
    wide = console.width >= 150  # paths only where they fit; --json always has everything
    if "results" in doc:
        anatomies = {r["anatomy"] for r in doc["results"]}
        table = Table("rank", "score", "study", "image", "box", "findings", "ctr", *(("path",) if wide else ()),
                      title=f"{', '.join(sorted(anatomies))}: top {len(doc['results'])}" if anatomies else None)
        for r in doc["results"]:
            table.add_row(str(r["rank"]), f"{r['score']:.4f}", str(r["study_id"]), _short(r["image_id"]),
                          ",".join(f"{v:.0f}" for v in r["box"]), ", ".join(r["findings"]) or "-", _ctr(r["ctr"]),
                          *((r["path"],) if wide else ()))
    else:
        table = Table("rank", "score", "study", "regions matched", "best image", "best anatomy", "ctr",
                      *(("path",) if wide else ()))
        for s in doc["studies"]:
            b = s["best"]
            table.add_row(str(s["rank"]), f"{s['score']:.4f}", str(s["study_id"]),
                          f"{s['matched_regions']}/{len(s['regions'])}", _short(b["image_id"]), b["anatomy"],
                          _ctr(b["ctr"]), *((b["path"],) if wide else ()))
    for column in table.columns:
        column.overflow = "fold"  # wrap long values instead of cutting them
    console.print(table)
    if montage is not None:
        console.print(f"Montage written to {montage}", soft_wrap=True)
