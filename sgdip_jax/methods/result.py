"""The ``Result`` every reconstruction method returns, with ``.npz`` + JSON persistence."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


@dataclasses.dataclass
class Result:
    """Output of a reconstruction method.

    ``image``: the final reconstruction (last iterate; for self-guided DIP the mean over noise draws).
    ``ema_image``: exponential moving average of the iterates (equals ``image`` for classical methods).
    ``history``: per-iteration 1-D arrays keyed by name (``loss``, ``data``, ``reg``, ``psnr``,
    ``ssim``, ``es_stat`` ... whichever the method records).
    ``stop_iteration`` / ``stop_image``: the early-stopping detection, when enabled and triggered.
    ``diverged``: the iteration whose loss was not finite, when the run stopped there; the images
    are then those of the last finite chunk (``iterations`` steps).
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

    def save(self, path: str | os.PathLike) -> None:
        """Write ``path`` (``.npz``: images + history) and ``path`` with ``.json`` (metadata), atomically."""
        path = Path(path)
        arrays = {"image": self.image, "ema_image": self.ema_image}
        if self.stop_image is not None:
            arrays["stop_image"] = self.stop_image
        arrays.update({f"history/{k}": np.asarray(v) for k, v in self.history.items()})
        meta = {
            "method": self.method,
            "iterations": self.iterations,
            "config": self.config,
            "seed": self.seed,
            "wall_time": self.wall_time,
            "stop_iteration": self.stop_iteration,
            "diverged": self.diverged,
        }
        atomic_write(path, lambda f: np.savez(f, **arrays))
        atomic_write(path.with_suffix(".json"), lambda f: f.write(json.dumps(meta, indent=2).encode()))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Result:
        """Read a result written by :meth:`save`."""
        path = Path(path)
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(path.with_suffix(".json").read_text())
        history = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("history/")}
        return cls(
            image=arrays["image"],
            ema_image=arrays["ema_image"],
            stop_image=arrays.get("stop_image"),
            history=history,
            **meta,
        )


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(fileobj)`` on a temporary file beside ``path``, then rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
