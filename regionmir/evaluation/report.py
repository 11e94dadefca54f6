"""Evaluation report writer: ``report.json``, ``report.md`` and PNG plots of :func:`evaluate.evaluate`.

Plots need matplotlib (``pip install 'regionmir[eval]'``); without it the report is written
without them and says so.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

log = logging.getLogger("regionmir")

DEFINITIONS = """\
- Queries are the regions of the `{split}` split; the reference collection holds the regions of
  the `train` split (patients are split, so no query patient is in it). Search: {search} search
  of the embedded Qdrant store (cosine); ties are ranked by point id.
- **Anatomy accuracy**: argmax of `anatomy_logits` equals the region's anatomy.
- **Same anatomy@k**: fraction of the top k hits of a search WITHOUT anatomy filter that have the
  query's anatomy.
- **Findings** (search filtered to the query's anatomy, as `regionmir search` does): a hit is
  relevant when it has the same anatomy and exactly the same set of findings. *abnormal*: queries
  with at least one finding; *all*: every query region (normal regions match normal regions).
  Queries with no relevant region in the collection are left out and counted.
- precision@k = relevant in top k / k (missing hits count as misses); hit rate@k = 1 if any of
  the top k is relevant; MRR@k = mean of 1/rank of the first relevant hit in the top k (0 if none);
  recall@k = relevant in top k / relevant in the collection;
  **AP@k = sum_i<=k precision@i * rel_i / min(k, relevant in the collection)**; mAP@k = mean AP@k.
- **Same patient**: each query searches the `{split}` split itself (the patient's other studies
  are there, not in train), filtered to the query's anatomy and excluding the query's own study;
  relevant = same patient (pseudonym). Queries whose patient has no other study are left out.
- *random ranking*: the expected value when the same pool (the anatomy's regions, or the whole
  collection without filter) is ranked at random: precision = relevant / pool, hit rate@k =
  1 - C(pool - relevant, k) / C(pool, k). Intervals: 95% percentile bootstrap over query patients.
- **ANN recall@k**: share of the HNSW top k whose score reaches the exact k-th score (ties count).
"""


def _clean(value):
    """``value`` with NaN/inf as None, so that the JSON is strict."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _f(value, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"


def training_results(training: dict | None) -> dict[str, dict]:
    """Per-strategy held-out results of the model folder's ``report.json`` (``regionmir train``).

    Returns:
        ``strategy -> {"accuracy", "macro_accuracy", "precision_at_10"}`` (values may be None).
    """
    results = training.get("results") if isinstance(training, dict) else None
    if not isinstance(results, dict):
        return {}
    keys = ("accuracy", "macro_accuracy", "precision_at_10")
    return {str(name): {k: r.get(k) for k in keys} for name, r in results.items() if isinstance(r, dict)}


def comparison_table(report: dict) -> list[str]:
    """Markdown rows: one per evaluated model (and per strategy only found in report.json)."""
    k = max(report["ks"])
    trained = training_results(report.get("training_report"))
    head = (f"| model | backbone | train-report acc | train-report P@10 | eval acc | same anatomy@{k} "
            f"| P@{k} all | P@{k} abnormal | mAP@{k} abnormal | HR@{k} abnormal | MRR@{k} abnormal "
            f"| same patient HR@{k} | ANN recall@{k} |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for m in report["models"]:
        fa, fb, sp = m["findings_all"], m["findings_abnormal"], m["same_patient"]
        t = m.get("training_result") or {}
        rows.append(
            f"| {m['label']} | {m['backbone']} | {_f(t.get('accuracy'))} | {_f(t.get('precision_at_10'))} "
            f"| {_f(m['anatomy']['accuracy'])} "
            f"| {_f(m['anatomy'][f'same_anatomy@{k}'])} | {_f(fa[f'precision@{k}'])} | {_f(fb[f'precision@{k}'])} "
            f"| {_f(fb[f'map@{k}'])} | {_f(fb[f'hit_rate@{k}'])} | {_f(fb[f'mrr@{k}'])} "
            f"| {_f(sp[f'hit_rate@{k}'])} | {_f(m['ann_recall'][f'recall@{k}'])} |"
        )
    m0 = report["models"][0]
    fa, fb, sp = m0["findings_all"], m0["findings_abnormal"], m0["same_patient"]
    rows.append(f"| *random ranking (expected)* | | | | | {_f(m0['anatomy']['chance_same_anatomy'])} "
                f"| {_f(fa['chance_precision'])} | {_f(fb['chance_precision'])} | | {_f(fb[f'chance_hit_rate@{k}'])} "
                f"| | {_f(sp[f'chance_hit_rate@{k}'])} | |")
    evaluated = {m["strategy"] for m in report["models"]}
    for strategy, t in trained.items():
        if strategy not in evaluated:
            rows.append(f"| {strategy} (no ONNX) | | {_f(t.get('accuracy'))} | {_f(t.get('precision_at_10'))} |"
                        + " n/a |" * 9)
    return rows


def metric_table(block: dict, ks: list[int], names: tuple[str, ...]) -> list[str]:
    """Markdown rows: one metric per row, one k per column."""
    rows = ["| metric | " + " | ".join(f"@{k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    for name in names:
        rows.append(f"| {name} | " + " | ".join(_f(block.get(f"{name}@{k}")) for k in ks) + " |")
    if "chance_precision" in block:
        rows.append("| *precision, random ranking* | " + " | ".join(_f(block["chance_precision"]) for _ in ks) + " |")
        rows.append("| *hit_rate, random ranking* | " + " | ".join(_f(block.get(f"chance_hit_rate@{k}")) for k in ks) + " |")
    if "chance_same_anatomy" in block:
        rows.append("| *random ranking* | " + " | ".join(_f(block["chance_same_anatomy"]) for _ in ks) + " |")
    return rows


def per_anatomy_table(model: dict, k: int) -> list[str]:
    """Markdown rows: one anatomy per row for one model."""
    rows = [f"| anatomy | queries | accuracy | same anatomy@{k} | P@{k} all | abnormal queries "
            f"| P@{k} abnormal | mAP@{k} abnormal |", "|---|" + "---|" * 7]
    for slug, block in model["per_anatomy"].items():
        a, fa, fb = block["anatomy"], block["findings_all"], block["findings_abnormal"]
        rows.append(f"| {slug} | {a['n_queries']} | {_f(a['accuracy'])} | {_f(a[f'same_anatomy@{k}'])} "
                    f"| {_f(fa[f'precision@{k}'])} | {fb['n_queries']} | {_f(fb[f'precision@{k}'])} "
                    f"| {_f(fb[f'map@{k}'])} |")
    return rows


def markdown(report: dict, plots: list[str]) -> str:
    """The human report."""
    ks, k = report["ks"], max(report["ks"])
    d = report["data"]
    lines = ["# RegionMIR evaluation", "", f"Archive `{report['archive']}`; queries: `{report['split']}` split; "
             f"reference: `train` split; search: **{report['search']}** ({report['store']}).", "",
             "| split | images | regions | abnormal regions | patients | studies | unlabeled images | failed |",
             "|---|---|---|---|---|---|---|---|"]
    for name, s in d.items():
        lines.append(f"| {name} | {s['images']} | {s['regions']} | {s['abnormal_regions']} | {s['patients']} "
                     f"| {s['studies']} | {s['unlabeled_images']} | {s['failed_images']} |")
    lines += ["", "## Models", "", *comparison_table(report), "",
              "*train-report acc / P@10*: held-out anatomy accuracy and same-anatomy P@10 (held-out crops "
              "among themselves, in memory) from the model folder's report.json, one row per trained "
              "strategy; strategies without an exported ONNX have no retrieval numbers (train them into "
              "sub-folders of the model folder, e.g. `regionmir train ARCHIVE --strategy scratch --out "
              "MODEL_DIR/scratch`, and they are evaluated too). *eval acc* and the rest: measured here.", ""]
    for m in report["models"]:
        lines += [f"## {m['label']} (`{m['model_id']}`, {m['backbone']}, {m['embedding_dim']}-d)", ""]
        lines += [f"Anatomy accuracy {_f(m['anatomy']['accuracy'])} on {m['anatomy']['n_queries']} query regions.", ""]
        lines += ["95% intervals (bootstrap over query patients, 1000 resamples): " + "; ".join(
            f"{name} [{_f(lo)}, {_f(hi)}]" for name, (lo, hi) in m["ci95"].items()), ""]
        lines += ["**Same anatomy (no filter)**", "", *metric_table(m["anatomy"], ks, ("same_anatomy",)), ""]
        names = ("precision", "map", "hit_rate", "mrr", "recall")
        for key, title in (("findings_abnormal", "Findings, abnormal queries"), ("findings_all", "Findings, all queries"),
                           ("findings_all_unfiltered", "Findings, all queries, search without anatomy filter"),
                           ("same_patient", "Same patient, other studies")):
            b = m[key]
            lines += [f"**{title}** ({b['n_queries']} queries; {b['n_without_relevant']} without any relevant "
                      "region left out)", "", *metric_table(b, ks, names), ""]
        lines += ["**ANN (HNSW) recall vs exact**: " + ", ".join(f"@{kk} {_f(m['ann_recall'][f'recall@{kk}'])}"
                                                                  for kk in ks), ""]
    lines += [f"## Per anatomy: {report['models'][0]['label']}", "", *per_anatomy_table(report["models"][0], k), ""]
    lines += [f"![{p}]({p})" for p in plots] + ([""] if plots else [])
    lines += ["## Definitions", "", DEFINITIONS.format(split=report["split"], search=report["search"])]
    s = report["seconds"]
    lines += [f"Encoding {s['encode']} s, total {s['total']} s."]
    return "\n".join(lines) + "\n"


def write_report(report: dict, out: Path, plots: bool = True) -> list[Path]:
    """Write ``report.json``, the plots and ``report.md`` into ``out``; return the files written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images = draw_plots(report, out) if plots else []
    report = dict(report, plots=[p.name for p in images])
    (out / "report.json").write_text(json.dumps(_clean(report), indent=1))
    (out / "report.md").write_text(markdown(report, [p.name for p in images]))
    return [out / "report.json", out / "report.md", *images]


def draw_plots(report: dict, out: Path) -> list[Path]:
    """``per_anatomy.png`` and ``pr_curve.png``; none (with a warning) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no plots. Install it with: pip install 'regionmir[eval]'")
        return []
    return [_per_anatomy_plot(report, out / "per_anatomy.png", plt), _pr_plot(report, out / "pr_curve.png", plt)]


def _per_anatomy_plot(report: dict, path: Path, plt) -> Path:
    """Grouped horizontal bars per anatomy: same-anatomy@k and findings precision@k, one bar per model."""
    import numpy as np

    from regionmir.anatomy import Anatomy

    k, models = max(report["ks"]), report["models"]
    slugs = sorted({s for m in models for s in m["per_anatomy"]}, key=lambda s: Anatomy.parse(s).index)
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.32 * len(slugs) + 1.8), sharey=True)
    y, height = np.arange(len(slugs)), 0.8 / len(models)
    panels = ((f"same anatomy@{k} (no anatomy filter)", lambda b: b["anatomy"][f"same_anatomy@{k}"]),
              (f"findings precision@{k}, all queries (anatomy filter)",
               lambda b: b["findings_all"][f"precision@{k}"]))
    chances = (lambda b: b["anatomy"]["chance_same_anatomy"] if b else np.nan,
               lambda b: b["findings_all"]["chance_precision"] if b else np.nan)
    for ax, (title, get), chance_of in zip(axes, panels, chances):
        for i, m in enumerate(models):
            vals = [get(m["per_anatomy"][s]) if s in m["per_anatomy"] else np.nan for s in slugs]
            ax.barh(y + i * height - 0.4 + height / 2, np.nan_to_num(np.asarray(vals, float)), height,
                    label=m["label"])
        chance = [chance_of(models[0]["per_anatomy"].get(s)) for s in slugs]
        ax.scatter(np.nan_to_num(np.asarray(chance, float)), y, marker="|", s=120, color="black", zorder=3,
                   label="random ranking" if ax is axes[0] else None)
        ax.set_title(title, fontsize=10)
        ax.set_xlim(0, 1)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, slugs, fontsize=8)
    axes[0].invert_yaxis()
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", ncol=len(models), fontsize=8)
    fig.suptitle(f"Per anatomy, {report['split']} split queries vs train collection", fontsize=11, x=0.3)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _pr_plot(report: dict, path: Path, plt) -> Path:
    """Mean precision@k against mean recall@k over k = 1..depth, per model; abnormal and all queries."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, subset in zip(axes, ("abnormal", "all")):
        for i, m in enumerate(report["models"]):
            c = m["pr_curve"][subset]
            ax.plot(c["recall"], c["precision"], marker=".", markersize=3, label=m["label"])
            for kk in report["ks"] if i == 0 else ():  # k labels on the first model only: less clutter
                if kk <= len(c["k"]) and math.isfinite(c["recall"][kk - 1]):
                    ax.annotate(f"k={kk}", (c["recall"][kk - 1], c["precision"][kk - 1]), fontsize=7)
        chance = report["models"][0]["findings_" + subset]["chance_precision"]
        if chance is not None and math.isfinite(chance):
            ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label="random ranking")
        n = report["models"][0]["findings_" + subset]["n_queries"]
        ax.set_title(f"findings, {subset} queries (n={n})", fontsize=10)
        ax.set_xlabel("recall@k")
        ax.set_ylabel("precision@k")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Precision-recall over k = 1..{len(report['models'][0]['pr_curve']['all']['k'])}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
