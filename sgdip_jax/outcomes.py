"""A finished reconstruction of one problem (:class:`Outcome`) and its one-file form, the ``.npz``
bytes a volume run stores and exchanges per slice."""

from __future__ import annotations

import dataclasses
import io
import json
from typing import Any

import numpy as np

from .files import to_jsonable


@dataclasses.dataclass
class Outcome:
    """A finished (or interrupted) reconstruction of one problem.

    ``image``: the reported reconstruction (:attr:`~sgdip_jax.methods.Result.image`), in the units
    of the input. ``metrics`` / ``zero_filled_metrics``: against the problem's reference, ``None``
    without one. ``held_out_error``: the relative prediction error on held-out measurements
    (:mod:`sgdip_jax.methods.self_validation`; ``None`` when not measured), comparable between
    methods that held out the same locations, and known without a reference. ``smaps``: the coil
    maps ``(C, H, W)`` the operator used (estimated ones included), ``None`` without coils.
    """

    problem: Any
    result: Any
    image: np.ndarray
    zero_filled: np.ndarray
    metrics: dict | None
    zero_filled_metrics: dict | None
    interrupted: bool
    held_out_error: float | None = None
    smaps: np.ndarray | None = None


def outcome_to_bytes(outcome: Outcome) -> bytes:
    """An outcome as one ``.npz`` file's bytes: its images, history and metadata, and the problem's
    reference, crop, coil maps and provenance (the operator and measurements are not kept)."""
    r = outcome.result
    arrays = {"image": outcome.image, "zero_filled": outcome.zero_filled, **r.to_arrays("result/")}
    if outcome.problem.reference is not None:
        arrays["reference"] = outcome.problem.reference
    if outcome.smaps is not None:
        arrays["smaps"] = outcome.smaps
    meta = {
        "metrics": outcome.metrics,
        "zero_filled_metrics": outcome.zero_filled_metrics,
        "interrupted": outcome.interrupted,
        "held_out_error": outcome.held_out_error,
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
        interrupted=meta["interrupted"],
        held_out_error=meta.get("held_out_error"),
        smaps=arrays.get("smaps"),
    )


class NonFiniteImage(RuntimeError):
    """A reconstruction holds NaN or Inf: nothing is written."""


def check_finite(outcomes, method: str) -> None:
    """:class:`NonFiniteImage` naming the slice, the method and its iterations unless every reported
    image is finite (a run never writes a NaN image with success)."""
    for o in outcomes:
        bad = ~np.isfinite(np.asarray(o.image))
        if bad.any():
            where = f"slice {o.problem.meta['slice']}: " if "slice" in o.problem.meta else ""
            raise NonFiniteImage(
                f"{where}{method} produced an image with {int(bad.sum())} NaN/Inf pixels after "
                f"{o.result.iterations} iterations; nothing was written (check the settings, e.g. lam, lr, "
                "network.base)"
            )
