"""Training report: accuracy per strategy (as the paper's table), per anatomy, left/right confusions.

Written as ``report.md`` and ``report.json`` in the model folder; the scores themselves are
tallied by :mod:`regionmir.train.tally`.
"""

from __future__ import annotations

import json
from pathlib import Path

from regionmir.inference.folder import REPORT_FILE

LOSS_NAMES = {"ntxent": "NT-Xent, self-supervised", "supcon": "SupCon, uses anatomy labels"}


def describe(strategy: str, cfg: dict) -> tuple[str, str]:
    """(pretraining, training) columns of the summary table for a strategy."""
    loss = LOSS_NAMES.get(cfg.get("contrastive"), cfg.get("contrastive"))
    pre, fine = cfg.get("pretrain_epochs", 0), cfg.get("epochs", 0)
    return {
        "regionmir": (f"contrastive ({loss}) on region crops, {pre} ep", f"classification, {fine} ep"),
        "scratch": ("none (random init)", f"classification, {pre + fine} ep"),
        "cotrain": ("none", f"contrastive ({loss}) + classification, {pre + fine} ep"),
    }[strategy]


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def markdown(report: dict) -> str:
    """The report as Markdown: summary table, per-anatomy accuracy, left/right confusions."""
    res, lines = report["results"], []
    lines += [f"# RegionMIR encoder report ({report['exported_strategy']} exported)", ""]
    lines += [f"Archive `{report['archive']}` (fingerprint {report['archive_fingerprint']}): "
              f"{report['train_crops']} training crops from {report['train_images']} images; evaluated on "
              f"the `{report['eval_split']}` split, {report['eval_crops']} crops from {report['eval_images']} images. "
              f"Trained on {report['device']} with {report['torch_threads']} torch thread(s); reading and "
              f"cropping took {report['data_seconds']:.0f} s, the whole run {report['total_seconds']:.0f} s.", ""]
    lines += ["| Strategy | Pretraining | Training | Accuracy | Macro acc. | L/R swaps | P@10 (embedding) | Time |",
              "|---|---|---|---|---|---|---|---|"]
    for name, r in res.items():
        pre, fine = describe(name, report["config"])
        lines.append(f"| {name} | {pre} | {fine} | {_pct(r['accuracy'])} | {_pct(r['macro_accuracy'])} | "
                     f"{_pct(r['lr_swap_rate'])} | {_pct(r['precision_at_10'])} | {r['train_seconds']:.0f} s |")
    extra = "".join(f"; baseline `{b['path']}` ({n}, {b['model_id']})" for n, b in report.get("baselines", {}).items())
    lines += ["", f"Exported `encoder.onnx` ({report['exported_strategy']}, model id {report['model']['model_id']}){extra}."]
    names = list(res)
    lines += ["", "## Accuracy per anatomy", "", "| Anatomy | n | " + " | ".join(names) + " |",
              "|---|---|" + "---|" * len(names)]
    for slug, v in res[names[0]]["per_anatomy"].items():
        cells = " | ".join(_pct(res[n]["per_anatomy"][slug]["accuracy"]) for n in names)
        lines.append(f"| {slug} | {v['n']} | {cells} |")
    lines += ["", "## Left/right confusions (true -> predicted contralateral)", ""]
    for n in names:
        swaps = [s for s in res[n]["lr_confusions"] if s["count"]]
        text = ", ".join(f"{s['true']} -> {s['predicted']}: {s['count']}/{s['of']}" for s in swaps) or "none"
        lines.append(f"- **{n}**: {text}")
    cfg = report["config"]
    lines += ["", "## Configuration", "", "```", json.dumps(cfg, indent=1), "```", ""]
    return "\n".join(lines)


def write(report: dict, folder: str | Path) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.json`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    md, js = folder / "report.md", folder / REPORT_FILE
    md.write_text(markdown(report))
    js.write_text(json.dumps(report, indent=1))
    return md, js


def print_summary(report: dict, console) -> None:
    """The strategy table on a rich console."""
    from rich.table import Table

    table = Table(title=f"Anatomy classification on `{report['eval_split']}` ({report['eval_crops']} crops)")
    for col in ("strategy", "accuracy", "macro acc.", "L/R swaps", "P@10", "time"):
        table.add_column(col, justify="left" if col == "strategy" else "right")
    for name, r in report["results"].items():
        table.add_row(name, _pct(r["accuracy"]), _pct(r["macro_accuracy"]), _pct(r["lr_swap_rate"]),
                      _pct(r["precision_at_10"]), f"{r['train_seconds']:.0f} s")
    console.print(table)
