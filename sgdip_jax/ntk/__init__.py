"""Empirical neural tangent kernels of DIP networks, kernel-regime predictions and NTK spectra.

* :mod:`.empirical`: ``empirical_ntk_fn`` (neural-tangents' calling convention and layout),
  ``ntk_vp_fn`` (kernel-vector products without the kernel), ``ntk_matrix`` (the flattened kernel,
  evaluated block-wise).
* :mod:`.kernel_regime`: linearised gradient-flow / gradient-descent trajectories, their limit and
  the projector ``P = K A^H (A K A^H)^+ A``; the same without a dense kernel (linearised training,
  conjugate gradients); null spaces; real representations of forward operators.
* :mod:`.spectra`: Lanczos and randomized top-k eigenpairs from kernel-vector products; the kernel in
  the Fourier basis and the sampled/unsampled coupling (dense, or matrix-free from kernel-vector products).
"""

from .empirical import empirical_ntk_fn, ntk_matrix, ntk_vp_fn
from .kernel_regime import (
    KernelRegime,
    LinearMap,
    NullSpace,
    dense_matrix,
    gradient_descent,
    kernel_limit,
    null_space_fraction,
    operator_map,
)
from .spectra import (
    coupling,
    coupling_vp,
    fourier_kernel,
    fourier_real,
    fourier_real_t,
    lanczos_eigh,
    randomized_eigh,
    sandwich,
)

__all__ = [
    "KernelRegime",
    "LinearMap",
    "NullSpace",
    "coupling",
    "coupling_vp",
    "dense_matrix",
    "empirical_ntk_fn",
    "fourier_kernel",
    "fourier_real",
    "fourier_real_t",
    "gradient_descent",
    "kernel_limit",
    "lanczos_eigh",
    "ntk_matrix",
    "ntk_vp_fn",
    "null_space_fraction",
    "operator_map",
    "randomized_eigh",
    "sandwich",
]
