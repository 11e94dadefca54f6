"""Findings precision@10 of region search on the phantom test split.

    .venv/bin/python bench/bench_precision.py [--model DIR] [--archive DIR] [--patients 40] [--epochs 6]

The whole archive is ingested; each test-split region that carries a finding F is a query
(its own annotated box, same anatomy, query image and its patient excluded, top 10), and
precision@10 is the fraction of hits whose findings include F. The base rate (fraction of
that anatomy's regions, other patients, with F) is printed beside it: a useful encoder beats
it by a wide margin. Without --model a model is trained on the archive's train split with
`regionmir train` defaults but --epochs (needs torch); an untrained encoder of the same
architecture is measured too, as a floor.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_ingest import default_model  # noqa: E402


def precision_at_10(archive: Path, model: Path, collection: str) -> dict:
    """Mean precision@10 and base rate over the test split's regions with findings."""
    from regionmir.archive import Archive
    from regionmir.inference.encoder import load_encoder
    from regionmir.ingest.runner import IngestConfig, run_ingest
    from regionmir.search.searcher import Searcher, search_image
    from regionmir.store import Filter, open_store

    run_ingest(IngestConfig(archive, model, collection=collection))
    a = Archive(archive)
    store = open_store()
    searcher = Searcher(store, collection, load_encoder(model))
    precisions, bases, per_finding = [], [], defaultdict(list)
    try:
        for row in a.split("test"):
            stored = searcher.stored_regions(row.dicom_id)
            for slug, payload in stored.items():
                for finding in payload["findings"]:
                    out = search_image(searcher, a.root / row.path, slug, top_k=10)
                    hits = out.regions[0].hits
                    p = np.mean([finding in h.payload["findings"] for h in hits]) if hits else 0.0
                    others = Filter(must={"anatomy": slug}, must_not={"patient": payload["patient"]})
                    with_f = Filter(must={"anatomy": slug, "findings": finding}, must_not={"patient": payload["patient"]})
                    bases.append(store.count(collection, with_f) / max(1, store.count(collection, others)))
                    precisions.append(p)
                    per_finding[finding].append(p)
    finally:
        store.close()
    return {"queries": len(precisions), "precision@10": float(np.mean(precisions)) if precisions else float("nan"),
            "base_rate": float(np.mean(bases)) if bases else float("nan"),
            "per_finding": {k: (len(v), float(np.mean(v))) for k, v in sorted(per_finding.items())}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--archive", type=Path)
    ap.add_argument("--patients", type=int, default=40)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0, help="phantom seed")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-precision-"))
    os.environ["REGIONMIR_HOME"] = str(tmp / "home")
    os.environ.pop("QDRANT_URL", None)
    archive = args.archive
    if archive is None:
        from regionmir.phantom import generate_archive

        archive = tmp / "archive"
        generate_archive(archive, seed=args.seed, patients=args.patients, studies_per_patient=2, size=args.size, workers=2)
    models = {"given": args.model} if args.model else {}
    if not models:
        from regionmir.train import TrainConfig, run

        t = time.perf_counter()
        run(archive, tmp / "trained", TrainConfig(epochs=args.epochs, pretrain_epochs=args.epochs, device="cpu"))
        print(f"trained a default-architecture model in {time.perf_counter() - t:.0f} s ({args.epochs}+{args.epochs} epochs)")
        models = {"trained": tmp / "trained", "untrained": default_model(tmp / "untrained")}
    results = {}
    for name, model in models.items():
        r = results[name] = precision_at_10(archive, model, name)
        print(f"{name:10s} precision@10 {r['precision@10']:.3f}  (base rate {r['base_rate']:.3f}, {r['queries']} queries)")
        for finding, (n, p) in r["per_finding"].items():
            print(f"    {finding:28s} {p:.3f} ({n})")
    print(json.dumps({"bench": "precision", "patients": args.patients, "epochs": args.epochs, "results": results}))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
