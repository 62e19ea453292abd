"""What a finished reconstruction writes: figures, the reconstruction arrays, ``metrics.json`` and
``config.toml`` (used by ``sgdip reconstruct`` and ``sgdip demo``; files go through an
:class:`~sgdip_jax.outputs.OutputDir`, so a crash never leaves half a result)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import save_config, to_dict
from .info import environment
from .metrics import center_crop, evaluate

if TYPE_CHECKING:
    from .outcomes import Outcome


def input_label(outcome: Outcome) -> str:
    """What ``A^H y`` is called in figures: the coil-combined ``"zero-filled"`` image for MRI (complex),
    the ``"masked input"`` for inpainting (real)."""
    return "zero-filled" if np.iscomplexobj(outcome.zero_filled) else "masked input"


def _figure_views(outcome: Outcome, label: str):
    """``(images, reference, uncertainty)`` for the comparison panel, centre-cropped like the metrics."""

    def crop(x):
        return center_crop(np.asarray(x), outcome.problem.crop, axes=(0, 1)) if outcome.problem.crop else x

    images = {input_label(outcome): crop(outcome.zero_filled), label: crop(outcome.image)}
    spread = outcome.result.uncertainty
    return images, outcome.problem.reference, {} if spread is None else {label: crop(spread)}


def _mask(outcome: Outcome, shape):
    """The operator's sampling mask as an ``(H, W)`` picture of shape ``shape`` (``None`` when the
    problem has no operator here or the figure is cropped to another size)."""
    mask = getattr(outcome.problem.operator, "mask", None)
    if mask is None:
        return None
    mask = np.asarray(mask)
    mask = mask[..., 0] if mask.ndim == 3 else mask
    fits = mask.ndim == 2 and all(m in (1, n) for m, n in zip(mask.shape, shape))
    return mask if fits else None


def write_run_figures(out, prefix: str, outcome: Outcome, label: str, title: str) -> None:
    """``panel.png`` (with the sampling mask), ``psnr.png``, ``loss.png`` and, with coils,
    ``coils.png`` of one reconstruction under ``prefix``."""
    from .figures import coil_maps_figure, comparison_figure

    images, reference, uncertainty = _figure_views(outcome, label)
    metrics = {input_label(outcome): outcome.zero_filled_metrics, label: outcome.metrics}
    panel = comparison_figure(
        images,
        reference,
        {k: v for k, v in metrics.items() if v},
        title,
        mask=_mask(outcome, np.shape(outcome.zero_filled)[:2]) if not outcome.problem.crop else None,
        uncertainty=uncertainty,
    )
    out.write_bytes(f"{prefix}panel.png", panel)
    write_curves(out, prefix, {label: outcome}, {input_label(outcome): outcome.zero_filled_metrics}, title)
    if outcome.smaps is not None:
        out.write_bytes(f"{prefix}coils.png", coil_maps_figure(outcome.smaps, f"{title}: coil maps used"))


def _montage(outcomes: list[Outcome], title: str) -> bytes:
    """The reported slices of a volume side by side, cropped like the metrics, with their PSNR."""
    from .figures import montage_figure

    images = {}
    for o in outcomes:
        image = np.asarray(o.image)
        image = center_crop(image, o.problem.crop, axes=(0, 1)) if o.problem.crop else image
        psnr = f", {o.metrics['psnr']:.2f} dB" if o.metrics else ""
        images[f"slice {o.problem.meta.get('slice')}{psnr}"] = image
    return montage_figure(images, title)


def write_curves(out, prefix: str, outcomes: dict[str, Outcome], baselines: dict, title: str) -> None:
    """``psnr.png`` (``baselines``: label -> metrics drawn as lines, e.g. the zero-filled image's; a
    star at each run's reported image: its iteration, its PSNR after the final steps) and
    ``loss.png``, when recorded."""
    from .figures import curves_figure

    histories = {label: o.result.history for label, o in outcomes.items()}
    lines = {k: m["psnr"] for k, m in baselines.items() if m}
    stars = {
        f"{label} reported": (_reported_iteration(o.result), o.metrics["psnr"])
        for label, o in outcomes.items()
        if o.metrics
    }
    curves = (
        ("psnr.png", "psnr", "PSNR (dB)", False, lines, stars),
        ("loss.png", ("loss", "data", "reg", "objective"), "loss", True, None, None),
    )
    for name, keys, ylabel, log_axis, horizontal, points in curves:
        png = curves_figure(histories, keys, ylabel, log=log_axis, title=title, baselines=horizontal, markers=points)
        if png is not None:
            out.write_bytes(f"{prefix}{name}", png)


def _reported_iteration(result) -> int:
    """The 1-based iteration of the reported image (self-validation's or ES-WMV's choice, else the last)."""
    if result.selection:
        return int(result.selection["iteration"]) + 1
    if result.stop_image is not None and result.config.get("early_stopping", {}).get("stop"):
        return int(result.stop_iteration) + 1
    return int(result.iterations)


RULES = ("auto", "discrepancy")
"""Setting values that name a rule or preset, resolved per run."""


def _slice_summary(outcome: Outcome, requested: dict) -> dict[str, Any]:
    r = outcome.result
    return {
        "metrics": outcome.metrics,
        "zero_filled_metrics": outcome.zero_filled_metrics,
        "iterations": r.iterations,
        "stop_iteration": r.stop_iteration,
        "diverged": r.diverged,
        "wall_time": r.wall_time,
        "interrupted": outcome.interrupted,
        "problem": outcome.problem.meta,
        "held_out_error": outcome.held_out_error,
        "chosen": chosen_settings(requested, r.config, r.selection),
        "selection": r.selection,
    }


def chosen_settings(requested: dict, config: dict, selection: dict | None) -> dict[str, Any]:
    """The values that a rule or preset set in a run: every field ``requested`` as a rule's name
    (``"auto"``, ``"discrepancy"``) with its value in the resolved config ``config`` (the classical
    methods' ``lam``, self-guided DIP's ``z_init`` and ``noise_scale``), and self-validation's
    stopping iteration."""
    chosen: dict[str, Any] = {
        k: config[k] for k, v in requested.items() if isinstance(v, str) and v in RULES and config.get(k, v) != v
    }
    if selection:
        chosen.update(selection.get("chosen", {}))
        chosen["iteration"] = selection["iteration"]
    return chosen


def _stack(outcomes, get):
    return np.stack([np.asarray(get(o)) for o in outcomes])


def write_reconstruction(out, outcomes: list[Outcome], h5_name: str | None, method: str) -> None:
    """The reported image, its magnitude, the moving average, the last iterate, the ES-WMV image (when
    detected), the per-pixel ``uncertainty`` (DIP methods, :attr:`~sgdip_jax.methods.Result.uncertainty`),
    the zero-filled image, the reference and the coil maps used (``smaps``, MRI): for a
    fastMRI input ``h5_name`` (the input file's name, as fastMRI's ``evaluate.py`` looks for it;
    slices stacked; ``reconstruction`` = the centre-cropped magnitude of fastMRI submissions) with
    ``recon.h5`` a link to it, else ``recon.npz``."""

    arrays: dict[str, np.ndarray] = {
        "image": _stack(outcomes, lambda o: o.image),
        "ema_image": _stack(outcomes, lambda o: o.result.ema_image),
        "last_image": _stack(
            outcomes, lambda o: o.result.image if o.result.last_iterate is None else o.result.last_iterate
        ),
        "zero_filled": _stack(outcomes, lambda o: o.zero_filled),
    }
    if np.iscomplexobj(arrays["image"]):
        arrays["magnitude"] = np.abs(arrays["image"])
    for name in ("stop_image", "uncertainty"):
        if all(getattr(o.result, name) is not None for o in outcomes):
            arrays[name] = _stack(outcomes, lambda o, name=name: getattr(o.result, name))
    if all(o.problem.reference is not None for o in outcomes):
        arrays["reference"] = _stack(outcomes, lambda o: o.problem.reference)
    if all(o.smaps is not None for o in outcomes):
        arrays["smaps"] = _stack(outcomes, lambda o: o.smaps)
    crop = outcomes[0].problem.crop
    if h5_name:
        magnitude = np.abs(arrays["image"])
        arrays["reconstruction"] = center_crop(magnitude, crop) if crop else magnitude
        slices = [o.problem.meta.get("slice") for o in outcomes]
        out.write_h5(h5_name, arrays, {"method": method, "slices": slices})
        if h5_name != "recon.h5":
            out.link("recon.h5", h5_name)
    else:
        out.write_npz("recon.npz", {k: v[0] for k, v in arrays.items()})


def volume_metrics(outcomes: list[Outcome]):
    """fastMRI volume metrics (PSNR/NRMSE/HFEN pooled, SSIM averaged, data range = volume maximum)."""
    if len(outcomes) < 2 or any(o.problem.reference is None for o in outcomes):
        return None
    crop = outcomes[0].problem.crop
    x = np.stack([center_crop(np.abs(o.image), crop) if crop else np.abs(o.image) for o in outcomes], -1)
    ref = np.stack([np.abs(o.problem.reference) for o in outcomes], -1)
    return evaluate(x, ref=ref)


def run_comment(outcomes: list[Outcome], config) -> str:
    """The head of ``config.toml``: what it reruns, and what this run actually did."""
    requested = getattr(config, "iterations", None)
    done = sorted({o.result.iterations for o in outcomes})
    text = (
        f"The settings of this run. `sgdip reconstruct INPUT --config config.toml` reruns the requested job "
        f"({requested} iterations).\nIterations run: {', '.join(map(str, done))}"
    )
    if any(o.interrupted for o in outcomes):
        text += " (interrupted before the end)"
    if any(o.result.diverged is not None for o in outcomes):
        text += " (stopped: the loss was not finite)"
    text += "."
    for o in outcomes:
        chosen = chosen_settings(to_dict(config), o.result.config, o.result.selection)
        if chosen:
            where = f" (slice {o.problem.meta['slice']})" if "slice" in o.problem.meta and len(outcomes) > 1 else ""
            values = ", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}" for k, v in chosen.items())
            text += f"\nChosen from the data{where}: {values}."
    return text


def write_outputs(
    out, outcomes: list[Outcome], *, input_path, kind: str, method: str, seed: int, config, resolved
) -> None:
    """Everything a finished run leaves in its output directory ``out`` (an
    :class:`~sgdip_jax.outputs.OutputDir`): per slice ``history.csv``, ``panel.png``, ``psnr.png``,
    ``loss.png`` and ``coils.png``; for a volume ``montage.png``; the reconstruction
    (:func:`write_reconstruction`); ``metrics.json`` (metrics, timings, provenance, environment);
    ``config.toml`` (``resolved``, the settings that rerun it)."""
    several = len(outcomes) > 1
    for outcome in outcomes:
        prefix = f"slice_{outcome.problem.meta['slice']:03d}/" if several else ""
        where = f" slice {outcome.problem.meta['slice']}" if "slice" in outcome.problem.meta else ""
        title = f"{Path(input_path).name}{where}: {method}"
        out.write_history(f"{prefix}history.csv", outcome.result.history)
        write_run_figures(out, prefix, outcome, method, title)
    write_reconstruction(out, outcomes, Path(input_path).name if kind == "fastmri" else None, method)
    if several:
        out.write_bytes("montage.png", _montage(outcomes, f"{Path(input_path).name}: {method}"))
    first = outcomes[0]
    summary: dict[str, Any] = {
        "input": str(input_path),
        "input_kind": kind,
        "simulated": bool(first.problem.meta.get("simulated", False)),
        "method": method,
        "seed": seed,
        "interrupted": any(o.interrupted for o in outcomes),
        "metric_conventions": "magnitude images; data range = maximum of the reference; centre crop to "
        "problem.metric_crop when set (fastMRI)",
        **environment(),
    }
    if several:
        summary["slices"] = [_slice_summary(o, to_dict(config)) for o in outcomes]
        summary["metrics"] = volume_metrics(outcomes)
        summary["wall_time"] = sum(o.result.wall_time for o in outcomes)
    else:
        summary.update(_slice_summary(first, to_dict(config)))
    out.write_json("metrics.json", summary)
    save_config(out.file("config.toml"), resolved, overwrite=True, comment=run_comment(outcomes, config))


def write_demo(out, outcomes: dict[str, Outcome], configs: dict, reference, describe: str, interrupted: bool) -> None:
    """The demo's files: ``panel.png`` of every method (with the DIP methods' uncertainty maps),
    ``psnr.png`` / ``loss.png`` of the DIP methods,
    their ``history_<method>.csv``, ``recon.npz``, ``metrics.json`` and ``config.toml``."""
    from .figures import comparison_figure
    from .methods import METHODS

    images = {m: o.image for m, o in outcomes.items()}
    metrics = {m: o.metrics for m, o in outcomes.items()}
    spreads = {m: o.result.uncertainty for m, o in outcomes.items() if o.result.uncertainty is not None}
    panel = comparison_figure(images, reference, metrics, f"demo: {describe}", uncertainty=spreads)
    out.write_bytes("panel.png", panel)
    dip = {m: o for m, o in outcomes.items() if METHODS[m].is_dip}
    write_curves(out, "", dip, {m: o.metrics for m, o in outcomes.items() if m not in dip}, describe)
    for m, o in outcomes.items():
        if METHODS[m].is_dip:
            out.write_history(f"history_{m}.csv", o.result.history)
    arrays = {m.replace("-", "_"): o.image for m, o in outcomes.items()}
    arrays.update({f"{m.replace('-', '_')}_uncertainty": v for m, v in spreads.items()})
    out.write_npz("recon.npz", {**arrays, "reference": reference})
    out.write_json(
        "metrics.json",
        {
            "setup": describe,
            "simulated": True,
            "interrupted": interrupted,
            "methods": {m: _slice_summary(o, to_dict(configs[m])) for m, o in outcomes.items()},
            **environment(),
        },
    )
    save_config(out.file("config.toml"), {m: to_dict(c) for m, c in configs.items()}, overwrite=True)


def demo_table(outcomes: dict[str, Outcome]) -> str:
    """One line per method, best PSNR first; the classical methods show the ``lam`` they chose."""
    from .methods import METHODS

    lines = [f"{'method':<12} {'PSNR (dB)':>9} {'SSIM':>7} {'held-out':>8} {'time (s)':>9}  setting"]
    for method, o in outcomes.items():
        m, config = o.metrics, o.result.config
        setting = f"{o.result.iterations} iterations" if METHODS[method].is_dip else ""
        if "lam_rule" in config:
            setting = f"lam {config['lam']:.3g} ({config['lam_rule']['rule']}, from the data)"
        if o.result.selection:
            chosen = "".join(f", {k} {v:g}" for k, v in o.result.selection.get("chosen", {}).items())
            setting += f" (image of iteration {o.result.selection['iteration']}{chosen}: self-validation)"
        held = "-" if o.held_out_error is None else f"{o.held_out_error:.4f}"
        lines.append(
            f"{method:<12} {m['psnr']:>9.2f} {m['ssim']:>7.4f} {held:>8} {o.result.wall_time:>9.1f}  {setting}".rstrip()
        )
    lines.append(
        "held-out: relative error on the measurements self-guided DIP held out (the classical methods re-solved "
        "without them), known without a reference"
    )
    return "\n".join(lines)


def diverged_messages(outcomes: list[Outcome], config, out_path) -> list[str]:
    """One line per run whose loss stopped being finite (its last finite images are saved), with the
    step size to try."""
    lines = []
    for o in (o for o in outcomes if o.result.diverged is not None):
        where = f" slice {o.problem.meta['slice']}" if "slice" in o.problem.meta else ""
        rates = {k: getattr(config, k) for k in ("lr", "lr_z") if isinstance(getattr(config, k, None), float)}
        setting = "" if not rates else " (" + ", ".join(f"{k} = {v:g}" for k, v in rates.items()) + ")"
        hint = (
            ""
            if not rates
            else "; lower the step sizes, e.g. " + " or ".join(f"--set {k}={v / 10:g}" for k, v in rates.items())
        )
        lines.append(
            f"{where.strip() + ': ' if where else ''}the loss was not finite at iteration {o.result.diverged}"
            f"{setting}; the images of iteration {o.result.iterations} are saved in {out_path}{hint}"
        )
    return lines
