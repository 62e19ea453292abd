"""sgdip-jax: self-guided deep image prior and NTK analysis of DIP networks, in JAX."""

__version__ = "0.1.0"
