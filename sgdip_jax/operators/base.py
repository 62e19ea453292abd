"""Shared behaviour of linear forward operators.

Every operator is an immutable pytree (``flax.struct.dataclass``) exposing ``__call__`` (forward
``A``), ``adjoint`` (``A^H``), ``normal`` (``A^H A``), ``norm()`` (spectral norm ``||A||_2`` by power
iteration), and the conversion between its image domain and a network's real channels-last tensor
(``to_channels`` / ``from_channels``, plus ``n_channels``).
"""

import jax
import jax.numpy as jnp


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
