"""Trained weights of the supervised baselines as ``.npz`` files (NumPy only, no pickle):

* ``params/<path>``: one array per parameter (``params/cnn/Conv_0/kernel``, ``params/lam``);
* ``model``: the :class:`~sgdip_jax.methods.supervised.ModelConfig` as JSON;
* ``info``: JSON describing how the weights were made (training config, data split, steps,
  validation loss, package version).

``"bundled"`` names the checkpoint shipped with the package for a method
(``sgdip_jax/weights/<method>.npz``, made by ``sgdip train``; the command and commit are in
``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np

from .files import atomic_write, to_jsonable

BUNDLED_DIR = Path(__file__).parent / "weights"


def bundled_path(method: str) -> Path:
    """Where the bundled checkpoint of ``method`` lives (whether or not it exists)."""
    return BUNDLED_DIR / f"{method}.npz"


def save_weights(path: str | os.PathLike, weights) -> None:
    """Write :class:`~sgdip_jax.methods.supervised.Weights` to ``path`` atomically."""
    from flax.traverse_util import flatten_dict

    from .config import to_dict

    arrays = {"params/" + "/".join(k): np.asarray(v) for k, v in flatten_dict(weights.params).items()}
    arrays["model"] = np.array(json.dumps(to_dict(weights.model)))
    arrays["info"] = np.array(json.dumps(to_jsonable(weights.info)))

    def write(f):
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        f.write(buffer.getvalue())

    atomic_write(path, write)


def load_weights(path: str | os.PathLike = "bundled", method: str | None = None):
    """:class:`~sgdip_jax.methods.supervised.Weights` from ``path``, or the bundled checkpoint of
    ``method`` when ``path == "bundled"``. FileNotFoundError says how to make missing weights;
    ValueError names what is wrong with a file that is not a checkpoint."""
    from flax.traverse_util import unflatten_dict

    from .config import from_dict
    from .methods.supervised import ModelConfig, Weights

    if str(path) == "bundled":
        if method is None:
            raise ValueError("load_weights('bundled') needs the method whose checkpoint to load")
        path = bundled_path(method)
        if not path.is_file():
            raise FileNotFoundError(
                f"no bundled weights for {method}: train them with `sgdip train --method {method} --out DIR` "
                f"and pass --weights DIR/weights.npz"
            )
    path = Path(path)
    if not path.is_file():
        hint = f"; train weights with `sgdip train --method {method or 'modl'} --out DIR`"
        raise FileNotFoundError(f"{path}: no such weights file{hint}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError):
        raise ValueError(f"{path}: not a weights file (an .npz archive written by sgdip train)") from None
    for field in ("model", "info"):
        if field not in arrays:
            raise ValueError(f"{path}: not a weights file: no {field!r} entry (written by sgdip train)")
    model = from_dict(ModelConfig, json.loads(str(arrays.pop("model"))), where=f"{path}: model")
    info = json.loads(str(arrays.pop("info")))
    params = unflatten_dict({tuple(k.split("/")[1:]): v for k, v in arrays.items() if k.startswith("params/")})
    weights = Weights(model=model, params=params, source=str(path), info=info)
    if method is not None:
        from .methods.supervised import check_weights

        check_weights(weights, method)
    return weights
