"""Result directories written safely: staged beside the target, swapped in whole, never silently replaced.

An :class:`OutputDir` collects every file of one run in a hidden staging directory next to the
requested path. :meth:`OutputDir.commit` moves it into place in one rename (when the path is free),
or, with ``force``, renames the old directory aside, renames the new one in and only then deletes the
old one, so a crash leaves either the old or the new result, never a mixture. An existing non-empty
directory is refused unless ``force`` is given, both when the run starts and again at commit time;
``force`` replaces only a directory that holds an sgdip result and nothing else (the :data:`MARKER`
file every committed result carries lists the files sgdip wrote; a file or folder not on that list,
e.g. a user's notes, makes ``force`` refuse), never ``.``, ``..``, ``/``, the home directory or a
folder holding the working directory.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .files import atomic_write, current_umask, to_jsonable
from .interrupts import forget, on_abort

MARKER = ".sgdip-result"
"""File in every committed result directory: its first line says what it is, the others list the
files sgdip wrote there (what ``force`` may replace)."""
MARKER_HEADER = "written by sgdip; --force may replace this folder when it holds only these files:"


def _files(path: Path) -> set[str]:
    """Every file and folder under ``path``, as POSIX paths relative to it (the marker left out)."""
    return {p.relative_to(path).as_posix() for p in path.rglob("*")} - {MARKER}


def _strangers(path: Path) -> list[str]:
    """What in result folder ``path`` sgdip did not write (all of it when the marker lists nothing)."""
    lines = (path / MARKER).read_text().splitlines()
    written = set(lines[1:]) if lines and lines[0] == MARKER_HEADER else set()
    return sorted(_files(path) - written)


def _is_occupied(path: Path) -> bool:
    return path.exists() and (not path.is_dir() or any(path.iterdir()))


def check_output_dir(path: str | os.PathLike, force: bool = False) -> Path:
    """Raise ``FileExistsError`` if ``path`` exists and is not an empty directory, unless ``force``
    is given and it is an sgdip result directory (it holds :data:`MARKER`).

    ``.``, ``..``, ``/``, the home directory and any folder that holds the working directory are
    refused as outputs, with or without ``force``, as are a link to a missing target and a place
    that is not writable (``PermissionError``), before any work is done.
    """
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise FileExistsError(f"output path {str(path)!r} is a link to a missing target; choose a folder for --out")
    resolved, cwd = path.resolve(), Path.cwd().resolve()
    if resolved == Path(resolved.anchor) or resolved == Path.home().resolve() or cwd.is_relative_to(resolved):
        raise FileExistsError(
            f"output directory {str(path)!r} is the root, the home directory or holds the "
            f"working directory; choose a new folder for --out"
        )
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"output path {str(path)!r} exists and is not a directory")
    if _is_occupied(path) and not force:
        raise FileExistsError(
            f"output directory {str(path)!r} already exists and is not empty (use --force to replace it)"
        )
    if _is_occupied(path) and not (path / MARKER).is_file():
        raise FileExistsError(
            f"output directory {str(path)!r} holds files that sgdip did not write (no {MARKER} file); --force "
            f"replaces only an earlier sgdip result: choose a new folder for --out"
        )
    if _is_occupied(path) and (strangers := _strangers(path)):
        raise FileExistsError(
            f"output directory {str(path)!r} holds {len(strangers)} file(s) sgdip did not write (e.g. "
            f"{strangers[0]!r}); --force replaces only what sgdip wrote: move them or choose a new folder for --out"
        )
    parent = next(p for p in resolved.parents if p.exists())  # where the result is staged (created if missing)
    for where in (parent, *([resolved] if resolved.exists() else [])):
        if not os.access(where, os.W_OK | os.X_OK):
            raise PermissionError(
                f"output directory {str(path)!r}: {str(where)!r} is not writable; choose --out elsewhere"
            )
    return path


def history_csv(history: Mapping[str, np.ndarray]) -> str:
    """CSV text with an ``iteration`` column (1-based) and one column per history entry.

    Entries shorter than the longest one (e.g. recorded only until early stopping) leave empty cells.
    """
    columns = {k: np.asarray(v).ravel() for k, v in history.items() if np.asarray(v).size}
    n = max((len(v) for v in columns.values()), default=0)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["iteration", *columns])
    for i in range(n):
        row = [i + 1]
        for values in columns.values():
            row.append(repr(float(values[i])) if i < len(values) else "")
        writer.writerow(row)
    return buf.getvalue()


class OutputDir:
    """A run's output directory, staged in ``.NAME.tmp-*`` beside ``path`` until :meth:`commit`.

    Use as a context manager: leaving the block normally commits; leaving it by any exception
    (``KeyboardInterrupt`` included) before a commit removes the staging directory and leaves
    ``path`` untouched. A caller that wants to keep a partial result commits explicitly first.
    """

    def __init__(self, path: str | os.PathLike, force: bool = False):
        # a link to a folder: the result goes into its target, the link stays
        self.path = check_output_dir(path, force).absolute()
        self.path = self.path.resolve() if self.path.is_symlink() else self.path
        self.force = force
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.staging = Path(tempfile.mkdtemp(dir=self.path.parent, prefix=f".{self.path.name}.tmp-"))
        self.committed = False
        on_abort(self.discard)  # a second Ctrl-C leaves no staging folder behind

    def file(self, name: str) -> Path:
        """Path of ``name`` inside the staging directory (parents created)."""
        target = self.staging / name
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def write_bytes(self, name: str, data: bytes) -> Path:
        target = self.file(name)
        atomic_write(target, lambda f: f.write(data))
        return target

    def write_text(self, name: str, text: str) -> Path:
        return self.write_bytes(name, text.encode())

    def write_json(self, name: str, obj: Any) -> Path:
        return self.write_text(name, json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n")

    def write_history(self, name: str, history: Mapping[str, np.ndarray]) -> Path:
        return self.write_text(name, history_csv(history))

    def link(self, name: str, target: str) -> Path:
        """A relative symbolic link ``name`` to the staged file ``target`` (it moves with the folder)."""
        path = self.file(name)
        os.symlink(target, path)
        return path

    def write_npz(self, name: str, arrays: Mapping[str, np.ndarray]) -> Path:
        target = self.file(name)
        atomic_write(target, lambda f: np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()}))
        return target

    def write_h5(self, name: str, arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any] = ()) -> Path:
        """HDF5 file with one dataset per array and the file attributes ``attrs`` as HDF5 reads them
        plainly: strings and numbers as they are, lists of numbers as arrays, anything else (``None``,
        mappings, mixed lists) as its JSON text."""
        import h5py

        def plain(value):
            value = to_jsonable(value)
            if isinstance(value, (str, bool, int, float)):
                return value
            if isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):
                return np.asarray(value)
            return json.dumps(value)

        def write(f):
            with h5py.File(f, "w") as h5:
                for key, value in arrays.items():
                    h5.create_dataset(key, data=np.asarray(value))
                for key, value in dict(attrs).items():
                    h5.attrs[key] = plain(value)

        target = self.file(name)
        atomic_write(target, write)
        return target

    def _apply_umask(self) -> None:
        """Give the staged tree the permissions of ordinary new files (temp files start private)."""
        umask = current_umask()
        for root, _dirs, files in os.walk(self.staging):
            os.chmod(root, 0o777 & ~umask)
            for name in files:
                os.chmod(os.path.join(root, name), 0o666 & ~umask)

    def commit(self) -> Path:
        """Move the staged directory to ``path`` (replacing an existing one only with ``force``)."""
        check_output_dir(self.path, self.force)
        self.write_text(MARKER, "\n".join([MARKER_HEADER, *sorted(_files(self.staging))]) + "\n")
        self._apply_umask()
        if self.path.exists():
            old = Path(tempfile.mkdtemp(dir=self.path.parent, prefix=f".{self.path.name}.old-"))
            try:
                os.replace(self.path, old / "previous")
                try:
                    os.replace(self.staging, self.path)
                except OSError:  # put the earlier result back
                    os.replace(old / "previous", self.path)
                    raise
            finally:
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.staging, self.path)
        self.committed = True
        forget(self.discard)
        return self.path

    def discard(self) -> None:
        """Remove the staging directory without touching ``path``."""
        if not self.committed:
            shutil.rmtree(self.staging, ignore_errors=True)
        forget(self.discard)

    def __enter__(self) -> OutputDir:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.discard()
        elif not self.committed:
            self.commit()
