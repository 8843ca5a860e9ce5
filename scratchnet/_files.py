"""The files scratchnet writes, model (Sequential.save) and checkpoint
(fit(checkpoint=...)) alike: one .npz of named numeric arrays, with JSON
records stored as uint8 arrays (the architecture; in a checkpoint also the
training state). One writer and one reader serve both.

Writing: to a temporary file beside the target, flushed to the disk (fsync),
then renamed over the target (and the folder synced), so the target is at any
moment the old file or the new one, complete, never half of one.

Reading never runs code and never allocates more than the file holds: every
member must be an uncompressed .npy of a numeric dtype whose header fits the
member's size (so no pickle, no object array, no decompression bomb), and a
file that is truncated, corrupt (CRC), or not such an archive is refused with
a ModelFileError naming the file and the problem."""
import json
import os
import secrets
import stat
import tempfile
import zipfile

import numpy as np


class ModelFileError(ValueError):
    """A model or checkpoint file that is damaged, hand-edited into
    something invalid, or not a scratchnet file."""


def write_npz(path, arrays, records, what):
    """Write arrays (name -> array) and records (name -> JSON-able value) to
    path atomically; what ("save", "checkpoint") starts error messages."""
    arrays = dict(arrays)
    for name, value in records.items():
        text = json.dumps(value, allow_nan=False, default=_json_default)
        arrays[name] = np.frombuffer(text.encode(), dtype=np.uint8)
    # (np.savez adds .npz to a name without it)
    write_atomically(path, lambda tmp: np.savez(tmp, **arrays), what, ".tmp.npz")


def write_bytes(path, data, what):
    """Write data (bytes) to path atomically (an ONNX export)."""
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)
    write_atomically(path, write, what, ".tmp")


def written_path(path):
    """The file a write of path replaces: a symlink's target (the link stays
    a link), else path itself."""
    path = os.fspath(path)
    return os.path.realpath(path) if os.path.islink(path) else path


def checked_target(path, what, example="model.npz", probe=False):
    """The file a write of path replaces (written_path), after refusing an
    empty path, a folder, a folder that does not exist (else the error would
    name the temporary file) and, with probe, one no file can be made in (for
    checks made before work that ends in the write); errors start with what."""
    path = os.fspath(path)
    if not path:
        raise ValueError(f"{what}: an empty path; give a file name, e.g. {example}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{what}: {path} is a folder; give a file name, e.g. "
                                f"{os.path.join(path, example)}")
    target = written_path(path)
    folder = os.path.dirname(target) or "."
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{what}: {path}: the folder {folder} does not exist")
    if probe:
        try:
            probe_folder(target)
        except OSError as exc:
            raise OSError(exc.errno, f"{what}: cannot write in the folder {folder} "
                          f"({exc.strerror})", path) from None
    return target


def probe_folder(path):
    """Raise OSError unless a file can be made in the folder a write of path
    goes to (permissions, a read-only mount, ACLs: the only sure test is to
    write one); for checks made before work that ends in such a write."""
    folder = os.path.dirname(written_path(path)) or "."
    fd, probe = tempfile.mkstemp(dir=folder, prefix=".scratchnet-", suffix=".probe")
    os.close(fd)
    os.unlink(probe)


def write_atomically(path, write, what, suffix):
    """write(tmp) makes the file in a temporary file beside path, which is
    then synced and renamed over path: path is at any moment the old file or
    the new one, whole. A symlink at path stays a link (the file it names is
    replaced), a file replaced keeps its permissions, and an error names path."""
    path = checked_target(path, what)
    folder = os.path.dirname(path) or "."
    # beside the target (a rename across file systems is not atomic), unique,
    # made with the user's umask as the target would be
    tmp = f"{path}.{os.getpid()}-{secrets.token_hex(4)}{suffix}"
    try:
        write(tmp)
        with open(tmp, "rb+") as f:  # (Windows syncs only a handle open for writing)
            os.fsync(f.fileno())
        if os.path.exists(path):  # a file replaced keeps its permissions (a private one private);
            # after the sync: a read-only mode would have refused the reopen
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):  # a disk that filled up keeps no partial file
            os.remove(tmp)
        if isinstance(exc, OSError) and exc.errno is not None:
            # named by the file asked for, not the temporary one
            raise OSError(exc.errno, f"{what}: {exc.strerror}", path) from None
        raise
    _sync_folder(folder)


def _sync_folder(folder):
    """Make the rename itself durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _json_default(value):
    if isinstance(value, np.generic):  # a NumPy number in the history or metadata
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def read_npz(path, what="scratchnet file"):
    """{name: array} of an .npz as write_npz writes it; ModelFileError naming
    path otherwise. A missing or unreadable file raises the OSError."""
    path = os.fspath(path)
    with open(path, "rb") as f:  # OSError (missing, a folder, no permission) as it is
        if f.read(6) == b"\x93NUMPY":
            raise ModelFileError(f"{path}: a single array (.npy), not a {what} (.npz)")
        try:
            with zipfile.ZipFile(f) as archive:
                return _members(archive, path, what)
        except ModelFileError:
            raise
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError,
                NotImplementedError) as exc:
            raise ModelFileError(f"{path}: not a readable {what} (a damaged or truncated "
                                 f".npz: {exc})") from None


def _members(archive, path, what):
    arrays = {}
    for info in archive.infolist():
        name = info.filename
        if not name.endswith(".npy") or name[:-4] in arrays:
            raise ModelFileError(f"{path}: not a {what}: unexpected member {name!r}")
        key = name[:-4]
        if info.compress_type != zipfile.ZIP_STORED:
            raise ModelFileError(f"{path}: array {key!r} is compressed; a {what} is written "
                                 "uncompressed (np.savez), so it is not one")
        with archive.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ModelFileError(f"{path}: array {key!r} has .npy format version "
                                     f"{version}, which scratchnet does not write")
            if dtype.hasobject or dtype.kind not in "biuf":
                raise ModelFileError(f"{path}: array {key!r} holds {dtype} values (Python "
                                     "objects, a pickle?); a scratchnet file holds numbers "
                                     "only, and loading never runs code")
            count = int(np.prod(shape, dtype=np.int64))
            if count * dtype.itemsize > info.file_size - f.tell():
                raise ModelFileError(f"{path}: array {key!r} claims shape {shape}, more "
                                     "than the file holds (truncated or edited)")
        with archive.open(info) as f:  # the zip's CRC is checked as the data is read
            arrays[key] = np.lib.format.read_array(f, allow_pickle=False)
    return arrays


def read_record(arrays, name, path, what):
    """The JSON record name (removed from arrays), or ModelFileError."""
    if name not in arrays:
        raise ModelFileError(f"{path}: no {name.strip('_')} record; not a {what}")
    raw = arrays.pop(name)
    try:
        if raw.dtype != np.uint8 or raw.ndim != 1:
            raise ValueError(f"stored as {raw.dtype} of shape {raw.shape}")
        return json.loads(raw.tobytes().decode(), parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise ModelFileError(f"{path}: unreadable {name.strip('_')} record ({exc})") from None


def _no_constant(name):
    raise ValueError(f"{name} is not a number a scratchnet file holds")


def split_arrays(value, prefix, arrays):
    """value (nested dicts and lists) with each ndarray replaced by
    {"__array__": name}, the array stored as arrays[name]; names start with
    prefix and follow the keys."""
    if isinstance(value, np.ndarray):
        arrays[prefix] = value
        return {"__array__": prefix}
    if isinstance(value, dict):
        return {str(k): split_arrays(v, f"{prefix}.{k}", arrays) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [split_arrays(v, f"{prefix}.{i}", arrays) for i, v in enumerate(value)]
    return value


def join_arrays(value, arrays, used):
    """The inverse of split_arrays: each {"__array__": name} replaced by
    arrays[name] (KeyError if absent); the names taken are added to used."""
    if isinstance(value, dict):
        if set(value) == {"__array__"}:
            name = value["__array__"]
            if not isinstance(name, str) or name not in arrays:
                raise KeyError(f"the array {name!r} it names is not in the file")
            used.add(name)
            return arrays[name]
        return {k: join_arrays(v, arrays, used) for k, v in value.items()}
    if isinstance(value, list):
        return [join_arrays(v, arrays, used) for v in value]
    return value
