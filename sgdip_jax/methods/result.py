"""The ``Result`` every reconstruction method returns, with ``.npz`` + JSON persistence."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..files import atomic_write


@dataclasses.dataclass
class Result:
    """Output of a reconstruction method.

    ``image``: the reconstruction, the one image a run reports: for DIP methods the moving average
    where the self-validation error was smallest (``selection``), else the ES-WMV image when the
    config stops there, else the final moving average; for the other methods their solution.
    ``ema_image``: the final exponential moving average of the iterates (equals ``image`` for
    classical methods). ``last_iterate``: the last iterate (for self-guided DIP the mean over noise
    draws; ``None`` for methods without iterates to average).
    ``history``: per-iteration 1-D arrays keyed by name (``loss``, ``data``, ``reg``, ``psnr``,
    ``ssim``, ``es_stat`` ... whichever the method records).
    ``stop_iteration`` / ``stop_image``: the early-stopping detection, when enabled and triggered.
    ``diverged``: the iteration whose loss was not finite, when the run stopped there; the images
    are then those of the last finite chunk (``iterations`` steps).
    ``selection``: how ``image`` and any ``"auto"`` settings were chosen by self-validation (the
    held-out fraction and count, the chosen iteration and its validation error, the candidates and
    their pilots' errors, the values chosen; for a run restarted with other settings, the first
    run's stop and the threshold, :func:`~.common._restart_early`; :mod:`.self_validation`),
    ``None`` without it. ``iterations`` and ``history`` are those of the run reported (a restarted
    run's), ``wall_time`` counts every run.
    ``uncertainty``: for DIP methods, the per-pixel standard deviation (in the image's units) of the
    network outputs averaged into the moving average (the one self-validation selected, else the
    final one): across the noise draws of each step and the steps under the average's weights
    (:mod:`sgdip_jax.engine`), before any data-consistency step; ``None`` for the other methods.
    How well it predicts the error: ``benchmarks/RESULTS.md``.
    ``warm_start``: for DIP methods, where the run ended
    (:class:`~sgdip_jax.methods.common.WarmStart`), to start a neighbouring problem from; not saved.
    """

    method: str
    image: np.ndarray
    ema_image: np.ndarray
    history: dict[str, np.ndarray]
    iterations: int
    config: dict[str, Any]
    seed: int
    wall_time: float
    stop_iteration: int | None = None
    stop_image: np.ndarray | None = None
    diverged: int | None = None
    last_iterate: np.ndarray | None = None
    selection: dict[str, Any] | None = None
    uncertainty: np.ndarray | None = None
    warm_start: Any = dataclasses.field(default=None, repr=False, compare=False)

    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        """The images as ``<prefix>image``, ``<prefix>ema_image`` (and ``<prefix>last_iterate``,
        ``<prefix>stop_image``, ``<prefix>uncertainty``) and the history as ``history/<name>``: the ``.npz`` layout of
        :meth:`save` and of the CLI's outcomes."""
        arrays = {f"{prefix}image": self.image, f"{prefix}ema_image": self.ema_image}
        for name in ("last_iterate", "stop_image", "uncertainty"):
            if getattr(self, name) is not None:
                arrays[f"{prefix}{name}"] = getattr(self, name)
        arrays.update({f"history/{k}": np.asarray(v) for k, v in self.history.items()})
        return arrays

    def metadata(self) -> dict[str, Any]:
        """The fields that are not arrays (the ``.json`` of :meth:`save`)."""
        return {k: getattr(self, k) for k in METADATA}

    @classmethod
    def from_arrays(cls, arrays, metadata, prefix: str = "") -> Result:
        """Inverse of :meth:`to_arrays` and :meth:`metadata`."""
        return cls(
            image=arrays[f"{prefix}image"],
            ema_image=arrays[f"{prefix}ema_image"],
            stop_image=arrays.get(f"{prefix}stop_image"),
            last_iterate=arrays.get(f"{prefix}last_iterate"),
            uncertainty=arrays.get(f"{prefix}uncertainty"),
            history={k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("history/")},
            **metadata,
        )

    def save(self, path: str | os.PathLike) -> None:
        """Write ``path`` (``.npz``: images + history) and ``path`` with ``.json`` (metadata), atomically."""
        path = Path(path)
        atomic_write(path, lambda f: np.savez(f, **self.to_arrays()))
        atomic_write(path.with_suffix(".json"), lambda f: f.write(json.dumps(self.metadata(), indent=2).encode()))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Result:
        """Read a result written by :meth:`save`."""
        path = Path(path)
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        return cls.from_arrays(arrays, json.loads(path.with_suffix(".json").read_text()))


METADATA = ("method", "iterations", "config", "seed", "wall_time", "stop_iteration", "diverged", "selection")
