"""Localizer network, loss and ONNX export (torch).

Why direct regression: the 29 regions have a fixed count, exactly one instance each, and a
strong spatial layout. A generic detector (anchors, NMS, classes) solves a harder problem than
this and costs far more on two CPU cores. Here a small strided CNN keeps a coarse spatial map
(not a global pool, which would throw away *where*), flattens it, and regresses every region's
``x1, y1, x2, y2`` as an offset from the training set's mean box (the anatomical prior). A
second head predicts, per region, the IoU its own box will have with the truth; that is the
confidence the localizer reports.

With ``refine`` (the default) a second stage corrects each coarse box from local evidence, as
the second stage of a two-stage detector does: it samples a small grid of stride-8 features
over the coarse box (widened by half, so the box's edges and what lies beyond them are in
view), and a shared per-region MLP (told which region it looks at) predicts the box's
correction, in units of the box's own size, and the IoU logit. The flattened coarse map
knows the layout; the stride-8 samples see the edges precisely.
"""

from __future__ import annotations

import io
import warnings

import torch
import torch.nn.functional as F
from torch import nn

N_REGIONS = 29


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


GRID = 4  # refinement samples a GRID x GRID grid of stride-8 features per box
WIDEN = 1.5  # ... over the coarse box widened this much about its centre


def roi_grid(boxes: torch.Tensor) -> torch.Tensor:
    """``grid_sample`` points ``(N, 29 * GRID, GRID, 2)`` in [-1, 1] over each widened box ``(N, 29, 4)``."""
    steps = (torch.arange(GRID, dtype=boxes.dtype, device=boxes.device) + 0.5) / GRID - 0.5  # (G,)
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2  # (N, 29, 2) x, y
    extent = (boxes[..., 2:] - boxes[..., :2]).abs() * WIDEN  # (N, 29, 2)
    xs = centre[..., 0:1] + steps * extent[..., 0:1]  # (N, 29, G)
    ys = centre[..., 1:2] + steps * extent[..., 1:2]  # (N, 29, G)
    grid = torch.stack([xs[:, :, None, :].expand(-1, -1, GRID, -1),
                        ys[:, :, :, None].expand(-1, -1, -1, GRID)], dim=-1)  # (N, 29, G, G, 2)
    return (2 * grid - 1).reshape(boxes.shape[0], N_REGIONS * GRID, GRID, 2)


class LocalizerNet(nn.Module):
    """``(N, 1, S, S)`` normalized image -> ``boxes (N, 29, 4)`` in [0, 1], ``confidence (N, 29)``.

    Five stride-2 stages (S/32 map), widths ``w, 2w, 4w, 6w, 8w``; then a 1x1 squeeze to 32
    channels, flatten (position kept), one hidden layer, and the coarse heads; with
    ``refine``, the second stage described in the module docstring on the stride-8 map.
    """

    def __init__(self, size: int, template: torch.Tensor, width: int = 16, hidden: int = 256,
                 refine: bool = True):
        super().__init__()
        if size % 32:
            raise ValueError(f"input size must be a multiple of 32, got {size}")
        widths = [width, 2 * width, 4 * width, 6 * width, 8 * width]
        layers, cin = [], 1
        for i, w in enumerate(widths):
            layers += [_conv(cin, w, 2)] + ([_conv(w, w, 1)] if i > 0 else [])
            cin = w
        self.stem = nn.Sequential(*layers[:5])  # stride 8, 4w channels
        self.features = nn.Sequential(*layers[5:])
        self.refine = refine
        if refine:
            self.region_embedding = nn.Embedding(N_REGIONS, 32)
            self.refine_head = nn.Sequential(
                nn.Linear(4 * width * GRID * GRID + 32, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 5))
            nn.init.zeros_(self.refine_head[-1].weight)
            nn.init.zeros_(self.refine_head[-1].bias)
        self.squeeze = _conv(cin, 32, 1)
        cells = (size // 32) ** 2
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(32 * cells, hidden), nn.ReLU(inplace=True))
        self.box_head = nn.Linear(hidden, N_REGIONS * 4)
        self.iou_head = nn.Linear(hidden, N_REGIONS)
        nn.init.zeros_(self.box_head.weight)
        nn.init.zeros_(self.box_head.bias)
        self.register_buffer("template", template.reshape(N_REGIONS, 4).float())
        # confidence = sigmoid(a * logit + b); (a, b) = (1, 0) while training, then fitted on
        # held-out films by `calibrate`, because augmented training films are harder than real ones
        self.register_buffer("calibration", torch.tensor([1.0, 0.0]))

    def stages(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Coarse boxes ``(N, 29, 4)``, final boxes ``(N, 29, 4)``, uncalibrated IoU logits ``(N, 29)``."""
        f8 = self.stem(x)  # (N, 4w, S/8, S/8)
        h = self.hidden(self.squeeze(self.features(f8)))  # (N, hidden)
        coarse = self.template + self.box_head(h).view(-1, N_REGIONS, 4)  # (N, 29, 4)
        if not self.refine:
            return coarse, coarse, self.iou_head(h)
        n = x.shape[0]
        anchor = coarse.detach()  # the second stage corrects boxes; it does not move the first
        sampled = F.grid_sample(f8, roi_grid(anchor), align_corners=False)  # (N, C, 29*G, G)
        local = sampled.view(n, -1, N_REGIONS, GRID, GRID).permute(0, 2, 1, 3, 4).reshape(n, N_REGIONS, -1)
        ids = self.region_embedding.weight.unsqueeze(0).expand(n, -1, -1)  # (N, 29, 32)
        out = self.refine_head(torch.cat([local, ids], dim=-1))  # (N, 29, 5)
        extent = (anchor[..., 2:] - anchor[..., :2]).abs().clamp(min=1e-3).repeat(1, 1, 2)  # (N, 29, 4)
        return coarse, anchor + out[..., :4] * extent, self.iou_head(h) + out[..., 4]

    def raw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Boxes ``(N, 29, 4)`` and the uncalibrated IoU logits ``(N, 29)``."""
        _, boxes, logits = self.stages(x)
        return boxes, logits

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        boxes, logits = self.raw(x)
        return boxes, self.confidence(logits)  # (N, 29, 4), (N, 29) predicted IoU

    def confidence(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated predicted IoU from the raw logits."""
        a, b = self.calibration[0], self.calibration[1]
        return torch.sigmoid(a * logits + b)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Elementwise IoU and GIoU of boxes ``(..., 4)`` xyxy (``a`` may be unordered)."""
    a = torch.cat([torch.minimum(a[..., :2], a[..., 2:]), torch.maximum(a[..., :2], a[..., 2:])], -1)
    wh = (torch.minimum(a[..., 2:], b[..., 2:]) - torch.maximum(a[..., :2], b[..., :2])).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = (area_a + area_b - inter).clamp(min=1e-9)
    iou = inter / union
    hull = torch.maximum(a[..., 2:], b[..., 2:]) - torch.minimum(a[..., :2], b[..., :2])
    hull_area = (hull[..., 0] * hull[..., 1]).clamp(min=1e-9)
    return iou, iou - (hull_area - union) / hull_area


def box_loss(boxes: torch.Tensor, target: torch.Tensor, m: torch.Tensor, n: torch.Tensor):
    """DETR-style ``5 * L1 + 2 * (1 - GIoU)`` over the regions where ``m`` is 1; and the IoUs."""
    l1 = ((boxes - target).abs().sum(-1) * m).sum() / n
    iou, giou = box_iou(boxes, target)
    return 5 * l1 + 2 * ((1 - giou) * m).sum() / n, iou


def localizer_loss(boxes: torch.Tensor, confidence: torch.Tensor, target: torch.Tensor,
                   mask: torch.Tensor, coarse: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Box loss (:func:`box_loss`) on visible regions, plus BCE of the IoU head.

    The IoU head's target is the IoU the box head achieved on this sample (detached), so the
    confidence learns to predict box quality, not just "a region exists". ``coarse``, the
    first stage's boxes of a refining net, get the same box loss (the second stage only
    corrects them, so they must stay good on their own).
    """
    m = mask.float()  # (N, 29)
    n = m.sum().clamp(min=1.0)
    lb, iou = box_loss(boxes, target, m, n)
    bce = F.binary_cross_entropy(confidence.clamp(1e-6, 1 - 1e-6), iou.detach(), reduction="none")
    lc = (bce * m).sum() / n
    total = lb + lc
    if coarse is not None and coarse is not boxes:
        total = total + box_loss(coarse, target, m, n)[0]
    return total, {"box": lb.item(), "conf": lc.item(), "iou": ((iou * m).sum() / n).item()}


def export_onnx(model: LocalizerNet, size: int) -> bytes:
    """The ONNX graph of ``model`` (input ``image`` (N,1,S,S); outputs ``boxes``, ``confidence``).

    Uses torch's TorchScript exporter (the dynamo exporter needs onnxscript, which the train
    extra does not install); its deprecation notice is silenced here, deliberately.
    """
    model = model.eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model, torch.zeros(1, 1, size, size), buffer, dynamo=False, opset_version=17,
            input_names=["image"], output_names=["boxes", "confidence"],
            dynamic_axes={"image": {0: "n"}, "boxes": {0: "n"}, "confidence": {0: "n"}},
        )
    return buffer.getvalue()


def calibrate(model: LocalizerNet, x: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    """Fit ``model.calibration`` (Platt scaling of the IoU logit) on held-out films.

    Args:
        x: ``(N, 1, S, S)`` normalized, un-augmented canvases; ``target`` ``(N, 29, 4)``; ``mask`` ``(N, 29)``.

    Returns:
        The fitted ``(a, b)``; the model's confidence becomes ``sigmoid(a * logit + b)``.
    """
    model.eval()
    with torch.no_grad():
        boxes, logits = model.raw(x)
        iou, _ = box_iou(boxes, target)
    z, y = logits[mask], iou[mask]  # (M,), (M,)
    ab = torch.tensor([1.0, 0.0], requires_grad=True)
    opt = torch.optim.LBFGS([ab], lr=0.5, max_iter=200)

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(ab[0] * z + ab[1], y)
        loss.backward()
        return loss

    if z.numel() >= 10:
        opt.step(closure)
    if torch.isfinite(ab).all() and ab[0] > 0:  # a must keep "higher logit = better box"
        model.calibration.copy_(ab.detach())
    return float(model.calibration[0]), float(model.calibration[1])
