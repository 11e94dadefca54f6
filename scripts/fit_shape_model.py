"""Fit the phantom's statistical shape model (PCA of lung and heart landmarks) and save it as .npz.

Input: the contour landmarks of the Chest-xray-landmark-dataset (github.com/ngaggion/
Chest-xray-landmark-dataset, `landmarks/{RL,LL,H}/*.npy`, 1024 px frame after crop-to-content
and padding). Only Shenzhen (CHNCXR_*), Montgomery (MCUCXR_*) and PadChest files are used; JSRT
files (JPC*) and the clavicle folders are excluded. No images are read or stored: the output is
the mean shape, the principal modes and their standard deviations, plus framing statistics.

    python scripts/fit_shape_model.py LANDMARK_DIR regionmir/phantom/data/shape_model.npz
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

VARIANCE = 0.95  # keep the modes that explain this share of the variance


def usable(name: str) -> bool:
    """Shenzhen, Montgomery or PadChest (PadChest files are named by long numbers); never JSRT."""
    return not name.startswith("JPC") and (name.startswith(("CHNCXR", "MCUCXR")) or name[0].isdigit())


def normalise(rl: np.ndarray, ll: np.ndarray, *more: np.ndarray):
    """Pixels -> lung units (x toward the patient's left from the midline, y down from the apices;
    mean apex-to-base height = 1) and the film framing of this example."""
    y0 = (rl[:, 1].min() + ll[:, 1].min()) / 2
    y1 = (rl[:, 1].max() + ll[:, 1].max()) / 2
    x0 = (rl[:, 0].max() + ll[:, 0].min()) / 2
    L = y1 - y0
    f = lambda p: (p - np.array([x0, y0])) / L  # noqa: E731  image left = patient right = x < 0
    frame = np.array([y0 / 1024, L / 1024, x0 / 1024, (ll[:, 0].max() - rl[:, 0].min()) / 1024])
    return [f(rl), f(ll), *(f(m) for m in more)], frame


def pca(X: np.ndarray, share: float):
    mean = X.mean(0)
    u, s, vt = np.linalg.svd(X - mean, full_matrices=False)
    var = s**2 / (len(X) - 1)
    k = int(np.searchsorted(np.cumsum(var) / var.sum(), share) + 1)
    return mean, vt[:k], np.sqrt(var[:k])


def fit(root: Path) -> dict[str, np.ndarray]:
    names = sorted(p.name for p in (root / "RL").glob("*.npy") if usable(p.name))
    lungs, frames, heart_rows, heart_lungs = [], [], [], []
    for n in names:
        rl, ll = np.load(root / "RL" / n), np.load(root / "LL" / n)
        h_path = root / "H" / n
        extra = (np.load(h_path),) if h_path.is_file() else ()
        shapes, frame = normalise(rl, ll, *extra)
        lungs.append(np.concatenate([shapes[0], shapes[1]]).ravel())
        frames.append(frame)
        if extra:
            heart_rows.append(shapes[2].ravel())
            heart_lungs.append(lungs[-1])
    X = np.stack(lungs)
    mean, comp, sd = pca(X, VARIANCE)
    Hx = np.stack(heart_rows)
    b = (np.stack(heart_lungs) - mean) @ comp.T / sd  # lung mode scores of the heart examples
    design = np.hstack([np.ones((len(b), 1)), b])
    coef, *_ = np.linalg.lstsq(design, Hx, rcond=None)  # heart | lungs, linear
    resid = Hx - design @ coef
    _, h_comp, h_sd = pca(resid, VARIANCE)
    return {"lung_mean": mean, "lung_modes": comp, "lung_sd": sd, "n_right": np.array(44), "n_left": np.array(50),
            "heart_coef": coef, "heart_modes": h_comp, "heart_sd": h_sd, "frame_mean": np.stack(frames).mean(0), "frame_cov": np.cov(np.stack(frames).T),
            "n_lung_examples": np.array(len(X)), "n_heart_examples": np.array(len(Hx)),
            "provenance": np.array("Chest-xray-landmark-dataset (ngaggion), landmarks RL/LL/H; Shenzhen CHNCXR, "
                                   "Montgomery MCUCXR and PadChest only (no JSRT); fitted by scripts/fit_shape_model.py")}


if __name__ == "__main__":
    model = fit(Path(sys.argv[1]))
    model = {k: (v.astype(np.float32) if v.dtype.kind == "f" else v) for k, v in model.items()}
    np.savez_compressed(sys.argv[2], **model)
    print(f"{int(model['n_lung_examples'])} lung shapes ({len(model['lung_sd'])} modes), "
          f"{int(model['n_heart_examples'])} hearts ({len(model['heart_sd'])} residual modes) -> {sys.argv[2]}")
