"""Problems in, evaluated reconstructions out: one problem (:func:`reconstruct_problem`) or a batch
(:func:`reconstruct_batch`, DIP methods in one compiled step via :mod:`sgdip_jax.parallel`).

Every problem is solved in the same units: the measurements are scaled by ``s = 1 / max|A^H y|``
(so regularisation weights of the classical methods refer to a zero-filled image of peak 1) and the
images scaled back, and a problem gives the same images alone or in a batch.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from .files import to_jsonable


@dataclasses.dataclass
class Outcome:
    """A finished (or interrupted) reconstruction of one problem.

    ``image``: the reported reconstruction (the ES-WMV detection with ``--early-stopping`` when it
    triggered, else the moving average), in the units of the input. ``metrics`` /
    ``zero_filled_metrics``: against the problem's reference, ``None`` without one.
    """

    problem: Any
    result: Any
    image: np.ndarray
    zero_filled: np.ndarray
    metrics: dict | None
    zero_filled_metrics: dict | None
    data_scale: float
    interrupted: bool


def evaluate_problem(problem, image):
    """Metrics of ``image`` against ``problem.reference`` (centre-cropped to ``problem.crop``), or ``None``."""
    from .data.fastmri import center_crop
    from .metrics import evaluate

    if problem.reference is None:
        return None
    x = center_crop(np.asarray(image), problem.crop, axes=(0, 1)) if problem.crop else image
    return evaluate(x, problem.reference)


def _warn_unmeasurable(problem) -> None:
    """Say before the run which metrics the reference is too small for (they are reported absent)."""
    import logging

    from .metrics import SSIM_WIN

    if problem.reference is not None and min(np.shape(problem.reference)[:2]) < SSIM_WIN:
        logging.getLogger("sgdip").warning(
            "SSIM will be absent (null): the reference %s is smaller than its %dx%d window",
            "x".join(map(str, np.shape(problem.reference)[:2])),
            SSIM_WIN,
            SSIM_WIN,
        )


def _scaled(problem):
    """``(zero_filled, s, s y, s target)`` of a problem (see the module docstring)."""
    y = jnp.asarray(problem.y)
    zero_filled = np.asarray(problem.operator.adjoint(y))
    peak = float(np.max(np.abs(zero_filled)))
    if not peak > 0:
        if not np.any(np.asarray(problem.y)):
            raise ValueError("the measurements are all zero (nothing was sampled where the data is non-zero)")
        raise ValueError(
            "the zero-filled image A^H y is all zero although the measurements are not: the coil maps "
            "are zero (check --smaps, the file's 'smaps', or ESPIRiT's calibration lines)"
        )
    scale = 1.0 / peak
    target = None if problem.target is None else jnp.asarray(problem.target) * scale
    return zero_filled, scale, y * scale, target


def _outcome(problem, config, result, zero_filled, scale, interrupted) -> Outcome:
    """Scale ``result`` back to the problem's units, pick the reported image and evaluate it."""
    unscale = {
        k: None if getattr(result, k) is None else np.asarray(getattr(result, k)) / scale
        for k in ("image", "ema_image", "stop_image")
    }
    result = dataclasses.replace(result, **unscale)
    use_stop = result.stop_image is not None and getattr(getattr(config, "early_stopping", None), "stop", False)
    image = result.stop_image if use_stop else result.ema_image
    return Outcome(
        problem=problem,
        result=result,
        image=image,
        zero_filled=zero_filled,
        metrics=evaluate_problem(problem, image),
        zero_filled_metrics=evaluate_problem(problem, zero_filled),
        data_scale=scale,
        interrupted=interrupted,
    )


def reconstruct_problem(problem, method, config, seed=0, *, prior_image=None, progress=True, interrupt=None) -> Outcome:
    """Run ``method`` on one problem and evaluate it. DIP methods poll ``interrupt.requested``
    after every chunk and stop early when it is set."""
    from .methods import get_method, run_method

    zero_filled, scale, y, target = _scaled(problem)
    _warn_unmeasurable(problem)
    kwargs: dict[str, Any] = {"progress": progress}
    if target is not None:
        kwargs["target"] = target
    if prior_image is not None:
        kwargs["prior_image"] = prior_image
    if get_method(method).takes_sigma:
        kwargs["sigma"] = None if problem.sigma is None else problem.sigma * scale
    if interrupt is not None:
        kwargs["callback"] = lambda info: interrupt.requested
    result = run_method(method, problem.operator, y, config, seed, **kwargs)
    requested = getattr(config, "iterations", None)
    cut_short = requested is not None and result.iterations < requested and result.diverged is None
    return _outcome(
        problem, config, result, zero_filled, scale, bool(interrupt is not None and interrupt.requested and cut_short)
    )


def reconstruct_batch(
    problems: Sequence,
    method: str,
    config,
    seed=0,
    *,
    prior_images: Sequence | None = None,
    devices=None,
    progress=True,
    interrupt=None,
) -> list[Outcome]:
    """:func:`reconstruct_problem` for each of ``problems`` with the same method, config and seed.

    DIP methods run all problems in one compiled, ``vmap``-ed step (sharded over ``devices`` when
    given; see :func:`sgdip_jax.parallel.run_dip_batch`); classical methods run one after another.
    ``prior_images``: one reference image per problem (``ref-dip``).
    """
    from .methods import get_method
    from .parallel import run_dip_batch

    priors = [None] * len(problems) if prior_images is None else list(prior_images)
    spec = get_method(method)
    if not spec.is_dip:
        return [
            reconstruct_problem(p, method, config, seed, prior_image=r, progress=progress, interrupt=interrupt)
            for p, r in zip(problems, priors)
        ]
    scaled = [_scaled(p) for p in problems]
    tasks = [spec.make_task(config, prior_image=r) for r in priors]
    targets = None if problems[0].target is None else [t for *_, t in scaled]
    callback = None if interrupt is None else (lambda info: interrupt.requested)
    results = run_dip_batch(
        tasks,
        [p.operator for p in problems],
        [y for *_, y, _ in scaled],
        [seed] * len(problems),
        targets,
        devices=devices,
        progress=progress,
        callback=callback,
    )
    interrupted = bool(interrupt is not None and interrupt.requested)
    return [_outcome(p, config, r, zf, s, interrupted) for p, r, (zf, s, *_) in zip(problems, results, scaled)]


# --------------------------------------------------------------------------- outcomes as files


def outcome_to_bytes(outcome: Outcome) -> bytes:
    """An outcome as one ``.npz`` file's bytes: its images, history and metadata, and the problem's
    reference, crop and provenance (the operator and measurements are not kept)."""
    r = outcome.result
    arrays = {"image": outcome.image, "zero_filled": outcome.zero_filled, **r.to_arrays("result/")}
    if outcome.problem.reference is not None:
        arrays["reference"] = outcome.problem.reference
    meta = {
        "metrics": outcome.metrics,
        "zero_filled_metrics": outcome.zero_filled_metrics,
        "data_scale": outcome.data_scale,
        "interrupted": outcome.interrupted,
        "crop": outcome.problem.crop,
        "problem": outcome.problem.meta,
        "result": r.metadata(),
    }
    arrays["meta"] = np.frombuffer(json.dumps(to_jsonable(meta)).encode(), np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
    return buffer.getvalue()


def outcome_from_bytes(blob: bytes) -> Outcome:
    """Inverse of :func:`outcome_to_bytes` (the problem comes back without operator and data)."""
    from .inputs import Problem
    from .methods import Result

    with np.load(io.BytesIO(blob)) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays.pop("meta").tobytes())
    crop = None if meta["crop"] is None else tuple(meta["crop"])
    problem = Problem(
        operator=None, y=None, target=None, reference=arrays.get("reference"), crop=crop, meta=meta["problem"]
    )
    result = Result.from_arrays(arrays, meta["result"], "result/")
    return Outcome(
        problem=problem,
        result=result,
        image=arrays["image"],
        zero_filled=arrays["zero_filled"],
        metrics=meta["metrics"],
        zero_filled_metrics=meta["zero_filled_metrics"],
        data_scale=meta["data_scale"],
        interrupted=meta["interrupted"],
    )
