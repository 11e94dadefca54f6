"""Ingest from a PACS: DICOMweb (a local Orthanc) vs the folder, same files, same run; C-STORE into `listen`.

    .venv/bin/python bench/bench_pacs.py [--patients 10] [--size 1024] [--repeat 2]

Generates a phantom archive, starts Orthanc (the Debian package, DICOMweb plugin) on loopback
ports, uploads the files, then alternates folder and DICOMweb ingests into fresh stores
(`--repeat` times each; boxes from the scene graphs in both: the DICOMweb run reads them from a
folder of ``<SOPInstanceUID>_SceneGraph.json`` copies). Then starts `regionmir listen` (the
console script) and sends every file with a pynetdicom C-STORE client in one association:
acknowledged images/s, and images/s until the last one is ingested. The encoder is an untrained
one of the default architecture (the cost of a trained one). Prints one JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))


def sop_scene_graphs(archive: Path, out: Path) -> Path:
    """Copies of the archive's scene graphs named by SOP Instance UID (what a PACS ingest looks up)."""
    import pydicom

    from regionmir.archive import Archive

    out.mkdir(parents=True)
    a = Archive(archive)
    for path in a.dicom_paths():
        sop = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        shutil.copy(a.scene_graph_path(path.stem), out / f"{sop}_SceneGraph.json")
    return out


def ingest(home: Path, archive: Path | None, model: Path, source=None) -> dict:
    from regionmir.ingest.runner import IngestConfig, run_ingest

    os.environ["REGIONMIR_HOME"] = str(home)
    t = time.perf_counter()
    s = run_ingest(IngestConfig(archive, model, workers=2), source=source).as_dict()
    wall = time.perf_counter() - t  # model load, store open and planning (QIDO-RS) included
    return {**s, "wall_s": round(wall, 3), "wall_images_s": round(s["ingested"] / wall, 2)}


def dicomweb(home: Path, url: str, scene_graphs: Path, model: Path) -> dict:
    from regionmir.pacs.source import dicomweb_source

    os.environ["REGIONMIR_HOME"] = str(home)
    source = dicomweb_source(url, scene_graphs=scene_graphs)
    try:
        return ingest(home, None, model, source)
    finally:
        source.close()


def cstore(home: Path, files: list[Path], model: Path) -> dict:
    """Send ``files`` to a fresh `regionmir listen`: acknowledged and ingested images/s."""
    import pydicom
    from helpers.orthanc import free_port
    from pynetdicom import AE

    port = free_port()
    env = {**os.environ, "REGIONMIR_HOME": str(home)}
    cmd = [str(Path(sys.executable).parent / "regionmir"), "listen", "--port", str(port), "--host", "127.0.0.1",
           "--model", str(model), "--json", "--batch-seconds", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    assert json.loads(proc.stdout.readline())["event"] == "listening"
    datasets = [pydicom.dcmread(p) for p in files]  # read before timing: the sender's disk is not measured
    ae = AE(ae_title="BENCHSCU")
    for pair in {(str(d.SOPClassUID), str(d.file_meta.TransferSyntaxUID)) for d in datasets}:
        ae.add_requested_context(*pair)
    start = time.perf_counter()
    assoc = ae.associate("127.0.0.1", port, ae_title="REGIONMIR")
    for ds in datasets:
        assert assoc.send_c_store(ds).Status == 0
    assoc.release()
    acked = time.perf_counter() - start
    done = 0
    while done < len(files):
        e = json.loads(proc.stdout.readline())
        done += e["ingested"] + e["failed"] + e["unlabeled"]
    ingested = time.perf_counter() - start
    proc.terminate()
    proc.wait(60)
    return {"images": len(files), "ack_s": round(acked, 3), "ack_images_s": round(len(files) / acked, 2),
            "ingested_s": round(ingested, 3), "ingested_images_s": round(len(files) / ingested, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=10)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    from bench_ingest import default_model
    from helpers.orthanc import orthanc_missing, running_orthanc

    from regionmir.archive import Archive
    from regionmir.phantom import generate_archive

    if orthanc_missing():
        raise SystemExit(orthanc_missing())
    os.environ.setdefault("REGIONMIR_SALT", "bench-salt")
    os.environ.pop("QDRANT_URL", None)
    with tempfile.TemporaryDirectory(prefix="bench-pacs-") as tmp:
        tmp = Path(tmp)
        archive = tmp / "archive"
        generate_archive(archive, seed=0, patients=args.patients, studies_per_patient=2, size=args.size, workers=2)
        model = default_model(tmp / "model")
        files = Archive(archive).dicom_paths()
        graphs = sop_scene_graphs(archive, tmp / "sg")
        result = {"load_start": os.getloadavg(), "images": len(files), "size": args.size, "megabytes": round(sum(p.stat().st_size for p in files) / 1e6, 1),
                  "folder": [], "dicomweb": []}
        with running_orthanc(tmp / "orthanc") as orthanc:
            t = time.perf_counter()
            for p in files:
                orthanc.upload(p)
            result["upload_images_s"] = round(len(files) / (time.perf_counter() - t), 2)
            for k in range(args.repeat):
                result["folder"].append(ingest(tmp / f"home-folder-{k}", archive, model))
                result["dicomweb"].append(dicomweb(tmp / f"home-web-{k}", orthanc.dicomweb, graphs, model))
                for kind in ("folder", "dicomweb"):
                    r = result[kind][-1]
                    print(f"{kind}: {r['ingested']} images in {r['seconds']:.2f} s = {r['images_per_s']:.2f} images/s "
                          f"(whole call {r['wall_s']:.2f} s = {r['wall_images_s']:.2f} images/s)", flush=True)
        result["cstore"] = cstore(tmp / "home-listen", files, model)
        print(f"C-STORE: {result['cstore']}", flush=True)
        result["load_end"] = os.getloadavg()
        print(json.dumps(result))


if __name__ == "__main__":
    main()
