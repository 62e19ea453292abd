"""ES-WMV early stopping (Wang, Li, Zhuang, Chen, Liang & Sun, "Early stopping for deep image prior").

The statistic at iteration ``t`` is the windowed moving variance of the last ``W`` reconstructions

    VAR_t = 1/W sum_{i=t-W+1}^{t} ||x_i - mean(x_{t-W+1..t})||^2 / N,

with ``N`` the number of entries of one image; it is undefined (NaN) until ``W`` iterates exist.
DIP's iterates first converge towards the image (variance falls) and then start fitting noise
(variance rises), so the detected stopping point is the argmin of ``VAR_t``. Patience rule: once the
minimum has not improved for ``patience`` iterations, detection has *triggered*; the detected
iteration is the argmin and its reconstruction ``x_argmin`` has been kept on device since it was the
running minimum. After triggering the minimum is frozen, so the detection does not depend on how
the loop is chunked.

Everything here runs inside the compiled step with ``O(N)`` work per step: a ring buffer of the
last ``W`` images (to know which image leaves the window), the window mean ``m`` and the sum of
squared deviations ``M2 = sum_i ||x_i - m||^2`` updated in Welford's form (no cancellation between
large sums):

    filling (n < W images):  m' = m + (x - m) / (n + 1),   M2' = M2 + <x - m, x - m'>
    sliding (x replaces x_old):  m' = m + (x - x_old) / W,   M2' = M2 + <x - x_old, x - m' + x_old - m>

and ``VAR_t = M2 / (W N)``; plus the running minimum with its image. In float32 the running updates
drift slowly (about 1e-3 relative after 3000 steps of fluctuations 2e-4 the size of the mean),
harmless for locating a minimum.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from flax import struct


@dataclasses.dataclass(frozen=True)
class ESConfig:
    """ES-WMV settings.

    ``enabled``: compute the statistic (costs a ring buffer of ``window`` images).
    ``window``: ``W``, the number of recent reconstructions whose variance is taken.
    ``patience``: iterations without a new minimum after which detection triggers.
    ``stop``: end the run (at the end of the chunk) once detection triggers; otherwise only record.
    """

    enabled: bool = True
    window: int = 100
    patience: int = 1000
    stop: bool = False

    def __post_init__(self):
        if self.window < 1:
            raise ValueError(f"early_stopping.window must be >= 1, got {self.window}")
        if self.patience < 1:
            raise ValueError(f"early_stopping.patience must be >= 1, got {self.patience}")


@struct.dataclass
class ESState:
    """Device state: ring ``buffer (W, ...)`` of recent images, ``count`` of images seen, the window
    ``mean`` and ``m2`` (sum of squared deviations), the running minimum ``best_stat`` at iteration
    ``best_step`` with its image ``best_image``, and ``triggered``."""

    buffer: jnp.ndarray
    count: jnp.ndarray
    mean: jnp.ndarray
    m2: jnp.ndarray
    best_stat: jnp.ndarray
    best_step: jnp.ndarray
    best_image: jnp.ndarray
    triggered: jnp.ndarray


def es_init(config: ESConfig, image_shape, dtype=jnp.float32) -> ESState:
    """Empty ES-WMV state for images of ``image_shape``."""
    return ESState(
        buffer=jnp.zeros((config.window, *image_shape), dtype),
        count=jnp.zeros((), jnp.int32),
        mean=jnp.zeros(image_shape, jnp.float32),
        m2=jnp.zeros((), jnp.float32),
        best_stat=jnp.full((), jnp.inf, jnp.float32),
        best_step=jnp.full((), -1, jnp.int32),
        best_image=jnp.zeros(image_shape, dtype),
        triggered=jnp.zeros((), bool),
    )


def es_update(state: ESState, image: jnp.ndarray, step, config: ESConfig) -> tuple[ESState, jnp.ndarray]:
    """Push ``image`` (the reconstruction of iteration ``step``) and return ``(state, VAR_step)``.

    ``VAR_step`` is NaN until ``window`` images have been seen.
    """
    w = config.window
    x = image.astype(jnp.float32)
    slot = state.count % w
    old = state.buffer[slot].astype(jnp.float32)
    sliding = state.count >= w
    n = jnp.minimum(state.count + 1, w).astype(jnp.float32)
    leaving = jnp.where(sliding, old, state.mean)
    mean = state.mean + (x - leaving) / n
    m2 = state.m2 + jnp.sum((x - leaving) * (x - mean + jnp.where(sliding, old - state.mean, 0.0)))
    buffer = state.buffer.at[slot].set(x.astype(state.buffer.dtype))
    count = state.count + 1
    full = count >= w
    stat = jnp.where(full, jnp.maximum(m2, 0.0) / (w * x.size), jnp.nan)
    improved = full & (stat < state.best_stat) & ~state.triggered
    best_stat = jnp.where(improved, stat, state.best_stat)
    best_step = jnp.where(improved, jnp.asarray(step, jnp.int32), state.best_step)
    best_image = jnp.where(improved, x.astype(state.best_image.dtype), state.best_image)
    triggered = state.triggered | ((best_step >= 0) & (step - best_step >= config.patience))
    return ESState(buffer, count, mean, m2, best_stat, best_step, best_image, triggered), stat
