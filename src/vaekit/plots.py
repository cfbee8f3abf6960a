"""Figures for VAE runs: image grids, training curves, latent manifolds and scatters.

Every plotting function writes a PNG and returns its path. matplotlib and Pillow are imported
inside the functions (no work at import time), and figures are drawn with
``matplotlib.figure.Figure`` on an Agg canvas so no global pyplot state or GUI backend is touched.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch

_SPLITS = ("train/", "valid/", "test/")


# ----------------------------------------------------------------------------- helpers


def _check_tensor(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    # Plots are always made on CPU copies; never keep autograd graphs alive.
    x = x.detach().cpu()
    return x if x.is_floating_point() else x.float()


def _check_finite(x: torch.Tensor, name: str) -> None:
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} must be finite, found {bad} NaN/inf values")


def _check_unit_range(x: torch.Tensor, name: str) -> None:
    _check_finite(x, name)
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(
            f"{name} values must lie in [0, 1], got range "
            f"[{float(x.min()):.4g}, {float(x.max()):.4g}]"
        )


def _output_path(path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def save_figure(fig, path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = _output_path(path)
    FigureCanvasAgg(fig)  # attaches itself to fig; Agg needs no display
    fig.savefig(path, format="png", dpi=100)
    return path


def _positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


# ----------------------------------------------------------------------------- image grids


def image_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 1) -> torch.Tensor:
    """Tile images [N, C, H, W] (C = 1 or 3) or [N, H, W], values in [0, 1], into one image.

    Returns [C, R*H + (R-1)*padding, K*W + (K-1)*padding] with K = min(nrow, N) images per row
    (nrow defaults to ceil(sqrt(N))) and R = ceil(N / K) rows. Padding between tiles and
    unfilled trailing tiles are 1.0 (white). Floating dtypes are kept, others become float32.
    """
    x = _check_tensor(images, "images")
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4 or x.shape[0] == 0 or x.shape[1] not in (1, 3):
        raise ValueError(
            f"images must be [N, C, H, W] with C in (1, 3) or [N, H, W] with N >= 1, "
            f"got shape {tuple(images.shape)}"
        )
    _check_unit_range(x, "images")
    n, c, h, w = x.shape
    ncol = min(_positive_int(_ceil_sqrt(n) if nrow is None else nrow, "nrow"), n)
    nrows = math.ceil(n / ncol)
    padding = _positive_int(padding, "padding", minimum=0)
    blank = x.new_ones(nrows * ncol - n, c, h, w)
    # Pad every tile right/bottom, lay tiles out with one reshape, then drop the outer border.
    tiles = torch.nn.functional.pad(torch.cat([x, blank]), (0, padding, 0, padding), value=1.0)
    grid = tiles.reshape(nrows, ncol, c, h + padding, w + padding).permute(2, 0, 3, 1, 4)
    grid = grid.reshape(c, nrows * (h + padding), ncol * (w + padding))
    return grid[:, : grid.shape[1] - padding, : grid.shape[2] - padding].contiguous()


def _ceil_sqrt(n: int) -> int:
    """Smallest k with k*k >= n (exact integer arithmetic, no float rounding)."""
    return math.isqrt(n - 1) + 1 if n > 0 else 0


def _label_rows(pixels, labels: list[str], row_pitch: int):
    """pixels [H, W, C] uint8 with a white margin on the left holding labels[i] beside the i-th row
    of tiles (tiles row_pitch pixels apart)."""
    import numpy as np
    from PIL import Image, ImageDraw
    margin = 6 * max(len(label) for label in labels) + 6  # the default bitmap font: ~6 pixels a character
    canvas = np.full((pixels.shape[0], margin + pixels.shape[1], pixels.shape[2]), 255, np.uint8)
    canvas[:, margin:] = pixels
    image = Image.fromarray(canvas[:, :, 0] if canvas.shape[2] == 1 else canvas)
    draw = ImageDraw.Draw(image)
    for i, label in enumerate(labels):
        draw.text((3, i * row_pitch + row_pitch // 2 - 5), label, fill=0 if image.mode == "L" else (0, 0, 0))
    return np.asarray(image).reshape(canvas.shape)


def save_image_grid(images, path, nrow: int | None = None, padding: int = 1, scale: int = 1,
                    row_labels: list[str] | None = None) -> Path:
    """Write images [N, C, H, W] (C = 1 or 3) or [N, H, W] as one tiled PNG, no axes.

    Values must be finite and are clamped to [0, 1] (decoder means may overshoot slightly).
    Each pixel is repeated scale x scale times; the PNG is grayscale (mode L) when C == 1,
    RGB when C == 3, of size (scale*H', scale*W') for the image_grid size (H', W'), plus a left
    margin with row_labels[i] beside row i when labels are given.
    """
    from PIL import Image

    x = _check_tensor(images, "images")
    _check_finite(x, "images")
    scale = _positive_int(scale, "scale")
    grid = image_grid(x.clamp(0.0, 1.0), nrow=nrow, padding=padding)
    grid = grid.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
    pixels = (grid * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
    if row_labels:
        pixels = _label_rows(pixels, row_labels, (x.shape[-2] + padding) * scale)
    path = _output_path(path)
    mode = "L" if pixels.shape[2] == 1 else "RGB"
    Image.fromarray(pixels[:, :, 0] if mode == "L" else pixels, mode=mode).save(path, format="PNG")
    return path


# ----------------------------------------------------------------------------- training curves


def _is_number(v) -> bool:
    # bool is an int subclass but a flag, not a metric.
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def curve_keys(records: list[dict]) -> list[str]:
    """The metrics of metrics.jsonl rows: every numeric train/, valid/ or test/ key, in first-seen order."""
    return list(dict.fromkeys(k for r in records for k, v in r.items() if k.startswith(_SPLITS) and _is_number(v)))


def curve_points(records: list[dict], key: str, x_key: str = "epoch") -> tuple[list, list]:
    """(x, y) of the rows where both records[i][x_key] and records[i][key] are numbers, in order."""
    points = [(r[x_key], r[key]) for r in records if _is_number(r.get(x_key)) and _is_number(r.get(key))]
    return [x for x, _ in points], [y for _, y in points]


def _curve_groups(records: list[dict], keys: list[str] | None) -> dict[str, list[str]]:
    """Map subplot name (suffix after the first '/') -> metric keys, in first-seen order."""
    if keys is None:
        keys = curve_keys(records)
    else:
        for k in keys:
            if not any(_is_number(r.get(k)) for r in records):
                raise ValueError(f"keys entry {k!r} has no numeric value in any record")
    groups: dict[str, list[str]] = {}
    for k in keys:
        groups.setdefault(_panel(k.split("/", 1)[-1]), []).append(k)
    return groups


def _panel(suffix: str) -> str:
    """ELBO, IWAE bounds and log p(x) share one panel, so the gap between them shows."""
    return "log p(x) and its bounds" if suffix in ("elbo", "iwae", "log_px") or suffix.startswith("iwae") \
        else suffix


def plot_training_curves(records: list[dict], path, keys: list[str] | None = None,
                         x_key: str = "epoch") -> Path:
    """Plot metrics from metrics.jsonl rows (list of dicts) against records[i][x_key].

    keys defaults to every numeric key starting with train/, valid/ or test/. Keys sharing the
    suffix after the slash (train/elbo, valid/elbo) share one subplot, and the bounds on log p(x)
    (elbo, iwae*, log_px) share one. Rows missing the key or
    x_key (or holding a non-number there) are skipped for that key.
    """
    from matplotlib.figure import Figure

    if not isinstance(records, (list, tuple)) or not records:
        raise ValueError(f"records must be a non-empty list of dicts, got {records!r:.80}")
    if not all(isinstance(r, dict) for r in records):
        raise ValueError("records must contain only dicts (one per metrics.jsonl row)")
    groups = _curve_groups(records, keys)
    if not groups:
        raise ValueError(f"records have no plottable key (numeric train/, valid/, test/ keys); "
                         f"keys seen: {sorted({k for r in records for k in r})}")
    ncols = min(3, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    fig = Figure(figsize=(4.5 * ncols, 3.2 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (name, group) in zip(axes, groups.items()):
        _plot_group(ax, records, group, x_key)
        ax.set_title(name)
    for ax in axes[len(groups):]:
        ax.set_visible(False)
    return save_figure(fig, path)


def _plot_group(ax, records: list[dict], keys: list[str], x_key: str) -> None:
    for k in keys:
        xs, ys = curve_points(records, k, x_key)
        if xs:
            ax.plot(xs, ys, marker="." if len(xs) < 30 else None, label=k)
    ax.set_xlabel(x_key)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


# ----------------------------------------------------------------------------- latent space


def _check_image_shape(image_shape, name: str = "image_shape") -> tuple[int, int, int]:
    ok = (isinstance(image_shape, (tuple, list)) and len(image_shape) == 3
          and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in image_shape)
          and image_shape[0] in (1, 3))
    if not ok:
        raise ValueError(f"{name} must be (C, H, W) positive ints with C in (1, 3), got {image_shape!r}")
    return tuple(image_shape)


def manifold_grid(grid_size: int) -> torch.Tensor:
    """Latent points [grid_size**2, 2] at N(0,1) quantiles of linspace(0.05, 0.95, grid_size).

    Row-major over the picture: row i has z2 = q[grid_size-1-i] (highest z2 on top), column j
    has z1 = q[j], so point i*grid_size + j is drawn at picture row i, column j.
    """
    grid_size = _positive_int(grid_size, "grid_size")
    q = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, grid_size))
    z2, z1 = torch.meshgrid(q.flip(0), q, indexing="ij")
    return torch.stack([z1, z2], dim=-1).reshape(-1, 2)


def plot_latent_manifold(decode: Callable[[torch.Tensor], torch.Tensor],
                         image_shape: tuple[int, int, int], path, grid_size: int = 20,
                         scale: int = 1, padding: int = 0) -> Path:
    """Kingma & Welling (2014) fig. 4: decoded images over a grid_size x grid_size latent grid.

    decode is called once, under no_grad, with z [grid_size**2, 2] (float32, CPU; see
    manifold_grid) and must return [grid_size**2, D] (D = C*H*W) or [grid_size**2, C, H, W]
    with values in [0, 1]. Tiles are drawn without padding unless asked (small images whose strokes
    reach the border read better apart), first row = highest z2.
    """
    c, h, w = _check_image_shape(image_shape)
    z = manifold_grid(grid_size)
    with torch.no_grad():
        out = decode(z)
    out = _check_tensor(out, "decode output")
    n = grid_size * grid_size
    if out.ndim < 2 or out.shape[0] != n or out[0].numel() != c * h * w:
        raise ValueError(f"decode output must be [{n}, {c * h * w}] for image_shape "
                         f"{(c, h, w)}, got shape {tuple(out.shape)}")
    _check_unit_range(out, "decode output")
    return save_image_grid(out.reshape(n, c, h, w), path, nrow=grid_size, padding=padding, scale=scale)


def plot_latent_scatter(z: torch.Tensor, labels: torch.Tensor | None, path,
                        title: str | None = None) -> Path:
    """Scatter of 2-D encodings z [N, 2] coloured by integer labels [N] (tab10, legend).

    labels=None draws every point in one colour. Labels beyond 9 reuse tab10 colours cyclically.
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    z = _check_tensor(z, "z")
    if z.ndim != 2 or z.shape[1] != 2 or z.shape[0] == 0:
        raise ValueError(f"z must be [N, 2] with N >= 1, got shape {tuple(z.shape)}")
    _check_finite(z, "z")
    fig = Figure(figsize=(6, 5), layout="constrained")
    ax = fig.subplots()
    size = max(1.5, min(20.0, 10000.0 / z.shape[0]))  # keep dense scatters readable
    if labels is None:
        ax.scatter(z[:, 0], z[:, 1], s=size, alpha=0.6, linewidths=0)
    else:
        labels = _check_labels(labels, z.shape[0])
        cmap = colormaps["tab10"]
        for k in torch.unique(labels).tolist():
            m = labels == k
            ax.scatter(z[m, 0], z[m, 1], s=size, alpha=0.6, linewidths=0, color=cmap(k % 10), label=str(k))
        ax.legend(markerscale=max(1.0, 20.0 / size) ** 0.5, fontsize="small", loc="best")
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def _check_labels(labels, n: int) -> torch.Tensor:
    if not isinstance(labels, torch.Tensor):
        raise ValueError(f"labels must be a torch.Tensor or None, got {type(labels).__name__}")
    labels = labels.detach().cpu()
    if labels.shape != (n,):
        raise ValueError(f"labels must be [N] = [{n}] to match z, got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must have an integer dtype, got {labels.dtype}")
    return labels.long()


def plot_interpolation(images: torch.Tensor, path, scale: int = 1,
                       image_shape: tuple | None = None) -> Path:
    """One row per pair: images [P, S, C, H, W], or [P, S, D] together with image_shape=(C, H, W).

    Values must be finite and are clamped to [0, 1] (as in save_image_grid); tiles are
    separated by 1 white pixel.
    """
    x = _check_tensor(images, "images")
    if x.ndim == 3:
        if image_shape is None:
            raise ValueError(f"images of shape {tuple(x.shape)} are flat [P, S, D]: pass image_shape=(C, H, W)")
        c, h, w = _check_image_shape(image_shape)
        if x.shape[2] != c * h * w:
            raise ValueError(f"images last dim must be D = C*H*W = {c * h * w} for image_shape "
                             f"{(c, h, w)}, got shape {tuple(x.shape)}")
        x = x.reshape(x.shape[0], x.shape[1], c, h, w)
    if x.ndim != 5 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"images must be [P, S, C, H, W] or [P, S, D] with P, S >= 1, "
                         f"got shape {tuple(x.shape)}")
    p, s = x.shape[:2]
    return save_image_grid(x.reshape(p * s, *x.shape[2:]), path, nrow=s, padding=1, scale=scale)


def plot_posterior_contours(z1: torch.Tensor, z2: torch.Tensor, log_posterior: torch.Tensor,
                            log_q: torch.Tensor, path) -> Path:
    """The true posterior p(z|x) (filled contours) beside q(z|x) (lines), one panel per data point.

    z1, z2 [P, G]: each panel's grid axes; log_posterior and log_q [P, G, G] (row i = z2[p, i],
    column j = z1[p, j]), log-densities up to a constant: each panel is normalised over its grid.
    """
    from matplotlib.figure import Figure

    panels, size = z1.shape[0], z1.shape[-1]
    if z1.shape != z2.shape or log_posterior.shape != (panels, size, size) or log_q.shape != log_posterior.shape:
        raise ValueError(f"expected z1, z2 [P, G] and log_posterior, log_q [P, G, G]; got z1 {tuple(z1.shape)}, "
                         f"z2 {tuple(z2.shape)}, log_posterior {tuple(log_posterior.shape)}, log_q {tuple(log_q.shape)}")
    _check_finite(log_posterior, "log_posterior")
    _check_finite(log_q, "log_q")
    fig = Figure(figsize=(3 * panels, 3.2), layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    for ax, a1, a2, lp, lq in zip(axes, z1, z2, log_posterior, log_q):
        ax.contourf(a1, a2, (lp - lp.max()).exp(), levels=8, cmap="Blues")
        ax.contour(a1, a2, (lq - lq.max()).exp(), levels=5, colors="tab:red", linewidths=1)
        ax.set_xlabel("z1")
    axes[0].set_ylabel("z2")
    fig.suptitle("p(z|x) (filled) and q(z|x) (red lines)")
    return save_figure(fig, path)
