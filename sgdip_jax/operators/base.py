"""The interface every linear forward operator follows, and its shared behaviour.

An operator is an immutable pytree (``flax.struct.dataclass``) with the attributes and methods of
:class:`LinearOperator`: forward ``A`` (``__call__``), ``adjoint`` (``A^H``), ``normal``
(``A^H A``), ``norm()`` (spectral norm by power iteration), the image domain (``image_shape``,
``image_dtype``) and the ``mask`` of measured entries. How images become network tensors is not an
operator's business (:mod:`sgdip_jax.channels`). :func:`conjugate_gradient` solves with ``normal``.
"""

from typing import Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np


@runtime_checkable
class LinearOperator(Protocol):
    """What methods, metrics and the NTK code may use of an operator ``A``."""

    mask: jax.Array

    @property
    def image_shape(self) -> tuple[int, ...]: ...

    @property
    def image_dtype(self): ...

    def __call__(self, x): ...

    def adjoint(self, y): ...

    def normal(self, x): ...

    def norm(self, iters: int = 30, key=None): ...


def measured_entries(op, shape) -> np.ndarray:
    """Boolean array of the measurement ``shape``: the entries the operator measures (``op.mask != 0``,
    broadcast; for multi-coil MRI the mask repeats over coils)."""
    return np.broadcast_to(np.asarray(op.mask) != 0, tuple(shape))


def restrict_to_support(op, x):
    """``x`` set to 0 outside the operator's ``support()`` (the pixels it sees at all); unchanged for
    operators without one. Regularised methods would otherwise fill those unconstrained pixels."""
    support = getattr(op, "support", None)
    return x if support is None else x * support().astype(jnp.asarray(x).real.dtype)


def _vdot(a, b):
    return jnp.vdot(a.ravel(), b.ravel())


class LinearOperatorMixin:
    """``normal`` and ``norm`` in terms of ``__call__``, ``adjoint`` and ``image_shape``."""

    def normal(self, x):
        """``A^H A x``."""
        return self.adjoint(self(x))

    def norm(self, iters=30, key=None):
        """Spectral norm ``||A||_2 = sqrt(lambda_max(A^H A))`` by ``iters`` power iterations."""
        key = jax.random.PRNGKey(0) if key is None else key
        x = jax.random.normal(key, self.image_shape, jnp.float32).astype(self.image_dtype)

        def body(_, v):
            w = self.normal(v)
            return w / jnp.maximum(jnp.linalg.norm(w.ravel()), 1e-30)

        x = jax.lax.fori_loop(0, iters, body, x / jnp.linalg.norm(x.ravel()))
        return jnp.sqrt(jnp.abs(_vdot(x, self.normal(x))))


def cg_step(normal, state, floor=0.0):
    """One conjugate-gradient step on ``normal(x) = b`` (Hermitian positive definite ``normal``) for
    ``state = (x, r, p, ||r||^2)``; once ``||r||^2 <= floor`` (round-off of ``b``) or ``p^H normal(p)``
    is not positive, the state stays put (further steps would only amplify rounding)."""
    x, r, p, rr = state
    ap = normal(p)
    pap = jnp.real(_vdot(p, ap))
    active = (pap > 0) & (rr > floor)
    alpha = jnp.where(active, rr / jnp.where(active, pap, 1.0), 0.0)
    x, r = x + alpha * p, r - alpha * ap
    rr_new = jnp.real(_vdot(r, r))
    beta = jnp.where(active, rr_new / jnp.where(active, rr, 1.0), 0.0)
    return x, r, jnp.where(active, r + beta * p, p), jnp.where(active, rr_new, rr)


def cg_start(normal, b, x):
    """The state of :func:`cg_step` at ``x``."""
    r = b - normal(x)
    return x, r, r, jnp.real(_vdot(r, r))


def conjugate_gradient(normal, b, x, iterations: int):
    """``iterations`` CG steps on ``normal(x) = b`` from ``x`` (a Hermitian positive definite
    ``normal``); a fixed count, so it compiles to one loop and can be differentiated through."""
    state = cg_start(normal, b, x)
    return jax.lax.fori_loop(0, iterations, lambda _, s: cg_step(normal, s), state)[0]
