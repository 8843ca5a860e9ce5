"""A decoded copy of a dataset's IDX files: one uint8 .npy per file, memory-mapped
on later loads, so a load skips the gunzip (about 0.5 s for MNIST's 55 MB).

Layout, in the dataset's user cache folder::

    decoded/<file>.npy    the IDX file's pixels or labels, shape as in its header
    decoded/source.json   which source files the copy was decoded from

Never a silent wrong dataset:

- Every load hashes each cached array, behind the IDX header it came with, and
  compares with the SHA-256 of the canonical decompressed file (the digests the
  source files are verified against). A damaged, truncated or hand-edited copy
  is therefore never used: the caller decodes the sources again.
- source.json keys the copy by the source files (path, size, modification time,
  inode): a source that changed, or another folder, is decoded and verified
  again, so a damaged source still raises its error rather than being hidden.
- Files are written to a temporary name and renamed, so a reader sees a whole
  file or none. They are not fsynced: a file torn by a crash fails its hash.

The cache is an optimisation only: when its folder cannot be created or written
(read-only, no home), loads decode the sources every time and nothing fails.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import NamedTuple

import numpy as np

# Bump when the layout or the meaning of source.json changes: an older copy is rebuilt.
FORMAT = 1
KEY_FILE = "source.json"


class Expected(NamedTuple):
    """What one decoded file must be: its IDX header (magic and dimensions, which
    the digest covers), its array shape, and the SHA-256 of header + data."""
    header: bytes
    shape: tuple[int, ...]
    sha256: str


def source_key(sources: dict[str, Path]) -> dict:
    """What identifies the source files: a change to any of them gives another key.
    Taken before they are decoded, so a file changed meanwhile is decoded again."""
    files = {}
    for base, path in sorted(sources.items()):
        stat = os.stat(path)
        files[base] = [str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino]
    return {"format": FORMAT, "files": files}


def load(folder: Path, key: dict, expected: dict[str, Expected]):
    """{file: uint8 array (read-only memory map)} from the copy in folder, or None
    when there is no copy with this source key or any part of it fails its check."""
    try:
        if json.loads((folder / KEY_FILE).read_text()) != key:
            return None
        arrays = {base: np.load(folder / f"{base}.npy", mmap_mode="r") for base in expected}
    except (OSError, ValueError, EOFError):  # missing, unreadable, not JSON, not an .npy
        return None
    if all(_matches(arrays[base], want) for base, want in expected.items()):
        return arrays
    return None


def _matches(array: np.ndarray, want: Expected) -> bool:
    if array.dtype != np.uint8 or array.shape != want.shape or not array.flags.c_contiguous:
        return False
    digest = hashlib.sha256(want.header)
    digest.update(array)
    return digest.hexdigest() == want.sha256


def store(folder: Path, key: dict, arrays: dict[str, np.ndarray]) -> bool:
    """Write the copy of arrays (verified decodes of the sources key names) into
    folder; False, and no file left behind, when it cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for base, array in arrays.items():
            _replace(folder / f"{base}.npy", lambda f, array=array: np.save(f, array))
        # Last, so a crash before it leaves the old key: the arrays pass only their hash,
        # and another source's key sends the next load back to the sources.
        _replace(folder / KEY_FILE, lambda f: f.write(json.dumps(key).encode()))
    except OSError:
        return False
    return True


def _replace(path: Path, write) -> None:
    """Run write(file) on a temporary file beside path, then rename it over path."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
