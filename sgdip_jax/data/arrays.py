"""NumPy ``.npy`` / ``.npz`` files read with errors that name the file and say what is wrong."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK"


def load_arrays(path: str | os.PathLike, what: str) -> dict[str | None, np.ndarray]:
    """The arrays of an ``.npz`` archive by key, or ``{None: array}`` for an ``.npy`` file, judged by
    the file's content (not its name). ``FileNotFoundError`` / ``ValueError`` name the file, ``what``
    it should be (e.g. ``"mask"``) and the problem: neither format, Python objects (pickled data is
    never loaded), or a damaged file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such {what} file")
    with open(path, "rb") as f:
        head = f.read(6)
    if not (head.startswith(NPY_MAGIC) or head.startswith(ZIP_MAGIC)):
        raise ValueError(
            f"{path}: not a NumPy file (neither an .npz archive nor an .npy array); expected the {what} as .npz or .npy"
        )
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                arrays = {k: loaded[k] for k in loaded.files}
        else:
            arrays = {None: loaded}
    except ValueError as err:
        if "pickle" in str(err).lower() or "object" in str(err).lower():
            raise ValueError(
                f"{path}: holds Python objects, which are not read (only numeric arrays); "
                f"expected the {what} as numeric arrays"
            ) from None
        raise ValueError(f"{path}: damaged NumPy file ({' '.join(str(err).split())})") from None
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise ValueError(f"{path}: damaged NumPy file ({' '.join(str(err).split())})") from None
    return arrays


def load_array(path: str | os.PathLike, what: str, keys: tuple[str, ...]) -> np.ndarray:
    """One array: an ``.npy`` file's, or the first of ``keys`` found in an ``.npz`` archive."""
    arrays = load_arrays(path, what)
    if None in arrays:
        return arrays[None]
    key = next((k for k in keys if k in arrays), None)
    if key is None:
        names = " or ".join(repr(k) for k in keys)
        raise ValueError(f"{path}: missing key {names} (found {sorted(arrays)}); expected the {what} under {names}")
    return arrays[key]
