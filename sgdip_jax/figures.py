"""PNG figures of a reconstruction run, drawn with matplotlib's Agg canvas (no display needed).

* :func:`comparison_figure`: reference, zero-filled and reconstructions side by side on one grey
  scale ``[0, max|reference|]``, with absolute-error maps ``|x - x_ref|`` underneath.
* :func:`curves_figure`: one history entry (PSNR, loss, ...) against iteration for one or more runs.
* :func:`coil_maps_figure`: the coil maps' magnitudes and their root sum of squares.
* :func:`montage_figure`: many images (a volume's slices) in one grid.

Both return PNG bytes, so callers decide where and how (atomically) to write them.
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def display_image(x: np.ndarray) -> np.ndarray:
    """What is shown of an image: ``|x|`` for complex ``(H, W)``, the image itself for real grey/RGB."""
    x = np.asarray(x)
    return np.abs(x) if np.iscomplexobj(x) else x.astype(np.float32)


def png_bytes(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    return buf.getvalue()


def comparison_figure(
    images: Mapping[str, np.ndarray],
    reference: np.ndarray | None = None,
    metrics: Mapping[str, Mapping[str, float]] | None = None,
    title: str | None = None,
    mask: np.ndarray | None = None,
    uncertainty: Mapping[str, np.ndarray] | None = None,
) -> bytes:
    """PNG of ``[reference] + images`` in one row and, when a reference exists, their error maps below.

    ``images`` maps a label (``"zero-filled"``, ``"sgdip"`` ...) to an image of the reference's shape;
    ``metrics`` optionally maps the same labels to ``{"psnr": .., "ssim": ..}`` shown in the titles.
    Grey images share one window ``[0, max|reference|]`` and the error maps another, each with its
    colour bar. ``mask`` (the sampling mask, ``(H, W)`` or a line mask ``(1, W)``) is drawn under the
    reference. Colour images ``(H, W, 3)`` are shown in colour, clipped to ``[0, 1]`` with error maps
    averaged over channels. ``uncertainty`` (label -> per-pixel standard deviation, e.g.
    :attr:`~sgdip_jax.methods.Result.uncertainty`) adds a last row, with its own colour bar.
    """
    shown = {label: display_image(x) for label, x in images.items()}
    ref = None if reference is None else display_image(reference)
    columns = ([("reference", ref)] if ref is not None else []) + list(shown.items())
    spreads = {k: (np.mean(v, axis=-1) if np.ndim(v) == 3 else np.asarray(v)) for k, v in (uncertainty or {}).items()}
    rows = (2 if ref is not None else 1) + bool(spreads)
    scale = ref if ref is not None else next(iter(shown.values()))
    vmax = float(np.max(scale)) if scale.size and np.max(scale) > 0 else 1.0
    err_max = None
    if ref is not None:
        errors = {label: np.abs(x - ref) for label, x in shown.items()}
        errors = {k: (e.mean(axis=-1) if e.ndim == 3 else e) for k, e in errors.items()}
        err_max = max(float(np.max(e)) for e in errors.values()) or 1.0

    spread_max = max((float(np.max(v)) for v in spreads.values()), default=0.0) or 1.0
    fig = Figure(
        figsize=(2.6 * len(columns) + 0.6, 2.8 * rows + (0.4 if title else 0.0)), dpi=100, layout="constrained"
    )
    axes = fig.subplots(rows, len(columns), squeeze=False)
    grey = None
    for j, (label, x) in enumerate(columns):
        ax = axes[0, j]
        if x.ndim == 3:
            ax.imshow(np.clip(x, 0.0, 1.0))
        else:
            grey = ax.imshow(x, cmap="gray", vmin=0.0, vmax=vmax)
        m = (metrics or {}).get(label, {})
        parts = [label]
        if m.get("psnr") is not None:
            parts.append(f"{m['psnr']:.2f} dB" + (f", SSIM {m['ssim']:.3f}" if m.get("ssim") is not None else ""))
        ax.set_title("\n".join(parts), fontsize=9)
        if ref is not None:
            bottom = axes[1, j]
            if label != "reference":
                im = bottom.imshow(errors[label], cmap="inferno", vmin=0.0, vmax=err_max)
                bottom.set_title(f"|{label} - reference|", fontsize=8)
            elif mask is not None:
                m = np.broadcast_to(np.asarray(mask, np.float32), x.shape[:2])
                bottom.imshow(m, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
                bottom.set_title(f"sampling mask ({m.mean():.0%} sampled)", fontsize=8)
            else:
                bottom.axis("off")
        if spreads:
            ax = axes[-1, j]
            if label in spreads:
                spread = ax.imshow(spreads[label], cmap="viridis", vmin=0.0, vmax=spread_max)
                ax.set_title(f"{label}: uncertainty (std)", fontsize=8)
            else:
                ax.axis("off")
    if grey is not None:
        fig.colorbar(grey, ax=list(axes[0, :]), shrink=0.8, label=f"magnitude, window [0, {vmax:.3g}]")
    if ref is not None:
        fig.colorbar(im, ax=list(axes[1, 1:]), shrink=0.8, label="|error|")
    if spreads:
        fig.colorbar(spread, ax=list(axes[-1, :]), shrink=0.8, label="standard deviation")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    return png_bytes(fig)


def curves_figure(
    histories: Mapping[str, Mapping[str, np.ndarray]],
    keys: tuple[str, ...] | str,
    ylabel: str,
    log: bool = False,
    title: str | None = None,
    baselines: Mapping[str, float] | None = None,
    markers: Mapping[str, tuple[int, float]] | None = None,
) -> bytes | None:
    """PNG of ``history[key]`` against iteration for every run and key present, or ``None`` if none is.

    ``histories`` maps a run label to its history dict; the line label is the run label (and the key,
    when several keys are drawn). ``log`` draws a logarithmic y axis (positive values only).
    ``baselines`` (label -> value, e.g. the zero-filled PSNR) are drawn as dashed horizontal lines,
    ``markers`` (label -> ``(iteration, value)``, e.g. the reported image's PSNR) as points.
    """
    keys = (keys,) if isinstance(keys, str) else tuple(keys)
    lines = []
    for run, history in histories.items():
        for key in keys:
            values = np.asarray(history.get(key, ()), dtype=np.float64).ravel()
            if values.size and np.isfinite(values).any():
                label = run if len(keys) == 1 else (key if len(histories) == 1 else f"{run}: {key}")
                lines.append((label, values))
    if not lines:
        return None
    fig = Figure(figsize=(5.5, 3.6), dpi=100)
    ax = fig.subplots()
    for label, values in lines:
        y = np.where(values > 0, values, np.nan) if log else values
        ax.plot(np.arange(1, len(values) + 1), y, label=label, linewidth=1.2)
    styles = iter(("--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1))))
    for label, value in (baselines or {}).items():
        if value is not None and np.isfinite(value):
            ax.axhline(value, linestyle=next(styles, "--"), color="grey", linewidth=1.0, label=label)
    for label, (iteration, value) in (markers or {}).items():
        if value is not None and np.isfinite(value):
            ax.plot([iteration], [value], marker="*", markersize=10, linestyle="none", label=label)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if len(lines) > 1 or len(histories) > 1 or baselines or markers:
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return png_bytes(fig)


def coil_maps_figure(smaps: np.ndarray, title: str | None = None) -> bytes:
    """PNG of the coil maps' magnitudes ``|S_c|`` ``(C, H, W)`` and their root sum of squares (1
    inside the support of normalised maps, 0 outside), on one window."""
    maps = np.abs(np.asarray(smaps))
    panels = [*maps, np.sqrt(np.sum(maps**2, axis=0))]
    cols = min(len(panels), 5)
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(2.0 * cols + 0.8, 2.1 * rows + (0.4 if title else 0.0)), dpi=100, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    vmax = max(float(np.max(p)) for p in panels) or 1.0
    for i, ax in enumerate(axes.ravel()):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= len(panels):
            ax.axis("off")
            continue
        im = ax.imshow(panels[i], cmap="gray", vmin=0.0, vmax=vmax)
        ax.set_title(f"|S_{i}|" if i < len(maps) else "root sum of squares", fontsize=8)
    fig.colorbar(im, ax=list(axes.ravel()), shrink=0.8, label="magnitude")
    if title:
        fig.suptitle(title, fontsize=10)
    return png_bytes(fig)


def montage_figure(images: Mapping[str, np.ndarray], title: str | None = None, columns: int = 6) -> bytes:
    """PNG of many images (e.g. the slices of a volume) in a grid on one window ``[0, max]``, each
    titled by its label (e.g. ``"slice 12, 31.20 dB"``)."""
    shown = {label: display_image(x) for label, x in images.items()}
    cols = min(columns, len(shown))
    rows = -(-len(shown) // cols)
    fig = Figure(figsize=(1.9 * cols + 0.8, 2.0 * rows + (0.4 if title else 0.0)), dpi=100, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    vmax = max(float(np.max(x)) for x in shown.values()) or 1.0
    im = None
    for ax, (label, x) in zip(axes.ravel(), shown.items()):
        im = ax.imshow(x, cmap="gray", vmin=0.0, vmax=vmax) if x.ndim == 2 else ax.imshow(np.clip(x, 0.0, 1.0))
        ax.set_title(label, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        if not ax.images:
            ax.axis("off")
    if im is not None and next(iter(shown.values())).ndim == 2:
        fig.colorbar(im, ax=list(axes.ravel()), shrink=0.8, label=f"magnitude, window [0, {vmax:.3g}]")
    if title:
        fig.suptitle(title, fontsize=10)
    return png_bytes(fig)
