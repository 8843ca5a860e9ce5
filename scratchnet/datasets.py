"""MNIST and Fashion-MNIST: find, verify, download and parse the IDX files.

Each dataset is four IDX files (raw or gzip-compressed) in one folder. Without an
explicit ``root`` the folder is searched for in this order:

1. ``$SCRATCHNET_DATA/<name>/``
2. the user cache, ``$XDG_CACHE_HOME/scratchnet/<name>/`` (default ``~/.cache/...``)
3. ``/usr/share/datasets/<name>/`` (Debian's dataset packages install there)
4. the copy bundled with the package (MNIST only)
5. a download from the public mirrors into the user cache

Every file is checked against the SHA-256 of its decompressed bytes, so a file is
accepted only if it is byte-for-byte the canonical release. The verified decode is
kept in the user cache (``<name>/decoded/``, see scratchnet._decoded_cache) and
memory-mapped by later loads, checked against the same digests every time.

``image_to_mnist`` prepares a picture of a digit (a PNG, a JPEG or an array) the
way MNIST's images were prepared.

This module needs only the standard library, NumPy and tqdm: it must work before
(and without) the compiled extension. Reading image files (not arrays) needs
Pillow, from the ``plot`` extra.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

from . import _decoded_cache
from ._validate import boolean

# http.client, urllib.request, tempfile and tqdm are imported where a download
# needs them: they added 35 ms to every `import scratchnet` (of about 200 ms).

__all__ = [
    "DATASETS",
    "FILES",
    "MIRRORS",
    "SHA256",
    "MNIST_CLASSES",
    "FASHION_MNIST_CLASSES",
    "DatasetError",
    "DatasetNotFoundError",
    "DownloadError",
    "cache_dir",
    "class_names",
    "download",
    "find",
    "image_to_mnist",
    "image_to_fashion_mnist",
    "load",
    "load_fashion_mnist",
    "load_mnist",
    "search_path",
]

DATASETS = ("mnist", "fashion-mnist")

FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

# SHA-256 of the decompressed IDX files (shared/datasets/SHA256SUMS).
SHA256 = {
    "mnist": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}

# Base URLs holding the ``<file>.gz`` files, tried in order. $SCRATCHNET_MIRROR, when
# set, replaces them (a "{name}" in it is replaced by the dataset name).
MIRRORS = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ],
    "fashion-mnist": [
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ],
}

MNIST_CLASSES = tuple(str(digit) for digit in range(10))
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_CLASSES = {"mnist": MNIST_CLASSES, "fashion-mnist": FASHION_MNIST_CLASSES}

SYSTEM_DIR = Path("/usr/share/datasets")
BUNDLED_DIR = Path(__file__).resolve().parent / "data"

# Seconds to wait for a connection or for the next bytes: an offline machine fails fast.
TIMEOUT = 10

_IMAGES_MAGIC = 0x00000803
_LABELS_MAGIC = 0x00000801
_SIDE = 28
_COUNTS = {"train": 60000, "t10k": 10000}
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 16


class DatasetError(RuntimeError):
    """A dataset file is unreadable, corrupt, truncated or not the expected one."""


class DatasetNotFoundError(DatasetError):
    """No folder holds the dataset's four files (and no download succeeded).

    The message speaks Python (``root=``, ``download=``). The facts behind it are
    attributes, so that another front end (the command line) can word its own:

    - ``name``: the dataset, "mnist" or "fashion-mnist"
    - ``files``: the four file names a folder must hold (each raw or ``.gz``)
    - ``places``: the folders searched, in order, as (label, folder); the label of an
      explicit root is "root"
    - ``root_given``: whether an explicit root was the only place looked at
    - ``missing``: {folder: the file names absent from it}, for each folder searched
    - ``nested``: ``root/<name>`` when that holds the files (a likely mistake), else None
    - ``env_holds_files``: ``$SCRATCHNET_DATA`` when it holds the files themselves
      instead of ``<name>/`` (a likely mistake), else None
    - ``download_tried``: whether a download was attempted
    - ``download_error``: why it failed (the exception), or None
    """

    def __init__(self, name: str, places, root_given: bool = False,
                 download_tried: bool = False, download_error: BaseException | None = None):
        self.name = name
        self.files = FILES
        self.places = [(label, Path(folder)) for label, folder in places]
        self.root_given = root_given
        self.missing = {
            folder: [base for base in FILES if _file_in(folder, base) is None]
            for _, folder in self.places
        }
        nested = self.places[0][1] / name if root_given else None
        self.nested = nested if nested is not None and _files_in(nested) is not None else None
        label, first = self.places[0] if self.places else (None, None)
        self.env_holds_files = (first.parent if label == "$SCRATCHNET_DATA"
                                and _files_in(first.parent) is not None else None)
        self.download_tried = download_tried
        self.download_error = download_error
        super().__init__(self._python_message())

    def __reduce__(self):
        # Rebuilt from the facts (the default would call __init__ with the message alone);
        # the state keeps what was found on disk then, not what is there when unpickled.
        args = (self.name, self.places, self.root_given, self.download_tried, self.download_error)
        return type(self), args, self.__dict__

    def _python_message(self) -> str:
        lines = [f"{self.name} not found. Looked in:"]
        lines += [f"  {folder}  ({label})" for label, folder in self.places]
        if not self.root_given and self.places[0][0] != "$SCRATCHNET_DATA":
            lines.append("  ($SCRATCHNET_DATA is not set)")
        lines.append(
            "A folder counts only if it holds all four files: "
            + ", ".join(self.files) + " (each raw or .gz)."
        )
        if self.download_tried:
            lines.append(f"The download failed: {self.download_error}")
        elif self.nested is None:  # with the files one level down, none was tried
            lines.append("Downloading is disabled (download=False).")
        if self.nested is not None:
            lines.append(f"Hint: they are in {self.nested}; pass that folder as root.")
        if self.env_holds_files is not None:
            lines.append(f"Hint: $SCRATCHNET_DATA ({self.env_holds_files}) holds the files "
                         "themselves; set it to the folder above, which holds "
                         f"{self.places[0][1].name}/.")
        remedies = (
            f"To supply them: set SCRATCHNET_DATA to a folder containing {self.name}/, "
            "pass root= (the folder holding the files)"
        )
        # After a failed download, running one again is no remedy.
        remedies += "." if self.download_tried else f", or run `scratchnet download {self.name}`."
        lines.append(remedies)
        return "\n".join(lines)


class DownloadError(DatasetError):
    """A file could not be fetched and verified from any mirror."""


# ---------------------------------------------------------------- names and places


def _canonical(name: str) -> str:
    key = str(name).strip().lower().replace("_", "-")
    if key not in DATASETS:
        raise ValueError(
            f"unknown dataset {name!r}; valid names: mnist, fashion-mnist (or fashion_mnist)"
        )
    return key


def class_names(name: str) -> tuple[str, ...]:
    """The ten class names of ``name``, indexed by label."""
    return _CLASSES[_canonical(name)]


def user_cache_root() -> Path:
    """scratchnet's user cache folder: ``$XDG_CACHE_HOME/scratchnet`` (default
    ``~/.cache/scratchnet``)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says a relative value is invalid and must be ignored.
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "scratchnet"


def cache_dir(name: str) -> Path:
    """The user cache folder of ``name``: where downloads go by default."""
    return user_cache_root() / _canonical(name)


def search_path(name: str) -> list[tuple[str, Path]]:
    """The folders searched for ``name`` when no root is given, as (label, folder)."""
    name = _canonical(name)
    places = []
    env = os.environ.get("SCRATCHNET_DATA")
    if env:
        places.append(("$SCRATCHNET_DATA", Path(env).expanduser() / name))
    places.append(("user cache", cache_dir(name)))
    places.append(("system", SYSTEM_DIR / name))
    bundled = BUNDLED_DIR / name
    if bundled.is_dir():
        places.append(("bundled with scratchnet", bundled))
    return places


def _file_in(folder: Path, base: str) -> Path | None:
    # Raw first: it needs no decompression. Either form is detected by its content.
    for path in (folder / base, folder / f"{base}.gz"):
        if path.is_file():
            return path
    return None


def _files_in(folder: Path) -> dict[str, Path] | None:
    """The four files in ``folder``, or None unless all four are there."""
    files = {base: _file_in(folder, base) for base in FILES}
    if any(path is None for path in files.values()):
        return None
    return files


def find(name: str, root: str | os.PathLike | None = None) -> Path | None:
    """The folder that ``load(name, root)`` would read, or None if there is none.

    Only checks that the four files exist; they are verified when loaded.
    """
    _canonical(name)
    places = [Path(root)] if root is not None else [path for _, path in search_path(name)]
    for folder in places:
        if _files_in(folder) is not None:
            return folder
    return None


# ---------------------------------------------------------------- reading and checking


def _expected_shape(base: str) -> tuple[int, ...]:
    count = _COUNTS[base.split("-")[0]]
    return (count, _SIDE, _SIDE) if "-images-" in base else (count,)


def _expected_size(base: str) -> int:
    """The bytes of the (decompressed) IDX file ``base``: header and data."""
    shape = _expected_shape(base)
    return 4 * (1 + len(shape)) + int(np.prod(shape))


def _contents(f, base: str, label: str) -> bytes:
    """The IDX bytes of the open file ``f``, gunzipped as a stream when it is gzip
    (detected by the magic bytes, not the suffix: a renamed file still loads).

    Never more than the expected size and one byte is read or decompressed: a file
    that would give more (a wrong file, or a gzip bomb) is refused as soon as it does,
    with its header's complaint if the header is wrong."""
    cap = _expected_size(base) + 1
    head = f.read(2)
    if head != _GZIP_MAGIC:
        return head + f.read(cap - len(head))
    data, chunk = bytearray(), head
    try:
        while chunk:  # a gzip member, and any after it (as gzip reads them)
            inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
            while not inflate.eof:
                if not chunk:
                    raise DatasetError(f"{label}: corrupt or truncated gzip data (the stream "
                                       "ends early)")
                data += inflate.decompress(chunk, cap - len(data))
                if len(data) >= cap:
                    _parse_header(bytes(data), base, label)
                    raise DatasetError(f"{label}: decompresses to more than the "
                                       f"{cap - 1} bytes a {base} file holds: not that file "
                                       "(damaged, or a gzip bomb)")
                chunk = inflate.unconsumed_tail or f.read(_CHUNK)
            chunk = inflate.unused_data or f.read(_CHUNK)
            if chunk and not _GZIP_MAGIC.startswith(chunk[:2]):
                raise DatasetError(f"{label}: trailing bytes after the gzip data")
    except zlib.error as exc:
        raise DatasetError(f"{label}: corrupt or truncated gzip data ({exc})") from exc
    return bytes(data)


def _magic(shape: tuple[int, ...]) -> int:
    return _IMAGES_MAGIC if len(shape) == 3 else _LABELS_MAGIC


def _idx_header(base: str) -> bytes:
    """The header a valid ``base`` file starts with: magic number, then dimensions."""
    shape = _expected_shape(base)
    return struct.pack(f">{1 + len(shape)}I", _magic(shape), *shape)


def _parse_header(data: bytes, base: str, label: str) -> int:
    """Check the IDX header against what ``base`` must hold; return its size."""
    shape = _expected_shape(base)
    magic = _magic(shape)
    header_size = 4 * (1 + len(shape))
    if len(data) < header_size:
        raise DatasetError(f"{label}: truncated: {len(data)} bytes, shorter than an IDX header")
    found_magic, *dims = struct.unpack(f">{1 + len(shape)}I", data[:header_size])
    if found_magic != magic:
        raise DatasetError(
            f"{label}: not an IDX {'image' if len(shape) == 3 else 'label'} file "
            f"(magic 0x{found_magic:08x}, expected 0x{magic:08x})"
        )
    if tuple(dims) != shape:
        raise DatasetError(f"{label}: header gives shape {tuple(dims)}, expected {shape}")
    return header_size


def _parse_idx(data: bytes, base: str, label: str) -> np.ndarray:
    """Check the IDX header and size against what ``base`` must hold; return a uint8 view."""
    header_size = _parse_header(data, base, label)
    size = _expected_size(base)
    if len(data) != size:
        problem = "truncated" if len(data) < size else "trailing bytes"
        raise DatasetError(f"{label}: {problem}: {len(data)} bytes, the header implies {size}")
    shape = _expected_shape(base)
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)


def _check_idx(data: bytes, name: str, base: str, label: str) -> np.ndarray:
    """Parse and verify one file's IDX bytes; ``label`` names it in errors."""
    array = _parse_idx(data, base, label)
    if array.ndim == 1 and array.max() >= len(_CLASSES[name]):
        raise DatasetError(f"{label}: label {int(array.max())} is outside 0..9")
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256[name][base]:
        # the other dataset's file of the same name (they share file names)
        other = next((o for o in SHA256 if o != name and SHA256[o].get(base) == digest), None)
        hint = (f"; it is {other}'s {base}: put {other}'s files in a folder named {other}"
                if other else "")
        raise DatasetError(
            f"{label}: SHA-256 mismatch: the decompressed data hashes to {digest}, "
            f"expected {SHA256[name][base]} ({name} {base}){hint}"
        )
    return array


def _read_idx(path: Path, name: str, base: str, label: str | None = None) -> np.ndarray:
    label = label or str(path)
    try:
        with open(path, "rb") as f:
            data = _contents(f, base, label)
    except OSError as exc:
        raise DatasetError(f"{label}: cannot read: {exc}") from exc
    return _check_idx(data, name, base, label)


def _new_floats(shape: tuple[int, ...]) -> np.ndarray:
    """A new (zeroed) float32 array whose memory is mapped in one system call.

    Filling a fresh 188 MB array costs its page faults more than its arithmetic.
    NumPy asks for transparent huge pages, which on the project's 2-core VM are slow
    to get on first touch (probably the host backing each 2 MB page): a load of MNIST from
    the decoded copy took 0.10 to 0.80 s, median 0.63 s, in 10 fresh processes, and
    0.19 to 0.23 s, median 0.21 s, with ordinary pages all mapped up front by
    MAP_POPULATE (Linux). Elsewhere, or if the mapping fails: np.empty."""
    populate = getattr(mmap, "MAP_POPULATE", None)
    size = int(np.prod(shape)) * 4
    if populate is None or size == 0:
        return np.empty(shape, np.float32)
    try:
        memory = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | populate)
    except OSError:
        return np.empty(shape, np.float32)
    return np.frombuffer(memory, np.float32).reshape(shape)


def _images(raw: np.ndarray, flatten: bool) -> np.ndarray:
    shape = (len(raw), _SIDE * _SIDE) if flatten else (len(raw), 1, _SIDE, _SIDE)
    images = _new_floats(shape)
    # One pass, bytes in and floats out (astype then /= reads and writes the floats
    # twice); dtype makes NumPy divide in float32 whatever its casting rules.
    np.divide(raw.reshape(shape), np.float32(255), out=images, dtype=np.float32)
    return images


def _decoded(name: str, files: dict[str, Path]) -> dict[str, np.ndarray]:
    """The uint8 arrays of the four files: the cached decode when it is of these
    files and intact, else decoded and verified here (and cached, when possible)."""
    folder = cache_dir(name) / "decoded"
    key = _decoded_cache.source_key(files)
    expected = {
        base: _decoded_cache.Expected(_idx_header(base), _expected_shape(base), SHA256[name][base])
        for base in FILES
    }
    arrays = _decoded_cache.load(folder, key, expected)
    if arrays is None:
        arrays = {base: _read_idx(path, name, base) for base, path in files.items()}
        _decoded_cache.store(folder, key, arrays)
    return arrays


def _load_files(name: str, files: dict[str, Path], flatten: bool = True):
    arrays = _decoded(name, files)
    return tuple(
        (
            _images(arrays[f"{split}-images-idx3-ubyte"], flatten),
            arrays[f"{split}-labels-idx1-ubyte"].astype(np.int64),
        )
        for split in ("train", "t10k")
    )


# ---------------------------------------------------------------- downloading


def _mirrors(name: str) -> list[str]:
    override = os.environ.get("SCRATCHNET_MIRROR")
    if override:
        return [override.replace("{name}", name)]
    return list(MIRRORS[name])


def _content_length(response) -> int | None:
    value = response.headers.get("Content-Length")
    return int(value) if value and value.isdigit() else None


def _copy_with_progress(response, out, total: int | None, desc: str, verbose: bool) -> int:
    """Copy the response body to ``out``; return the number of bytes copied."""
    # A progress bar only helps a person watching a terminal; it would litter logs.
    show = verbose and sys.stderr.isatty()
    from tqdm import tqdm
    received = 0
    with tqdm(
        total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
        disable=not show, leave=False,
    ) as bar:
        while chunk := response.read(_CHUNK):
            out.write(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    return received


def _fetch(url: str, dest: Path, name: str, base: str, verbose: bool) -> None:
    """Download ``url`` to ``dest``, which appears only once its content is verified."""
    import http.client
    import tempfile
    import urllib.request
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        try:
            # A fresh opener reads the proxy settings of the environment as it is now.
            opener = urllib.request.build_opener()
            with os.fdopen(fd, "wb") as out, opener.open(url, timeout=TIMEOUT) as response:
                total = _content_length(response)
                received = _copy_with_progress(response, out, total, base, verbose)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise DownloadError(f"{url}: {exc}") from exc
        # http.client returns a short body without complaint when the server hangs up.
        if total is not None and received != total:
            raise DownloadError(f"{url}: connection closed after {received} of {total} bytes")
        _read_idx(tmp, name, base, url)
        os.replace(tmp, dest)
    except BaseException:
        # Also on Ctrl-C: a half-written file must never be left behind.
        tmp.unlink(missing_ok=True)
        raise


def _download_file(name: str, base: str, folder: Path, verbose: bool) -> Path:
    dest = folder / f"{base}.gz"
    failures = []
    for mirror in _mirrors(name):
        url = f"{mirror.rstrip('/')}/{base}.gz"
        if verbose:
            print(f"downloading {url}", file=sys.stderr)
        try:
            _fetch(url, dest, name, base, verbose)
            return dest
        except DatasetError as exc:
            failures.append(str(exc))
            if verbose:
                print(f"  failed: {exc}", file=sys.stderr)
    raise DownloadError(
        f"could not download {dest} from any mirror:\n" + "\n".join(f"  {f}" for f in failures)
    )


def _is_valid(path: Path, name: str, base: str) -> bool:
    try:
        _read_idx(path, name, base)
    except DatasetError:
        return False
    return True


def download(name: str, root: str | os.PathLike | None = None, verbose: bool = True) -> Path:
    """Fetch the four files of ``name`` into ``root`` (default: the user cache).

    Files already there and valid are kept; others are downloaded and verified.
    Returns the folder. Raises DownloadError if a file cannot be fetched.
    """
    name = _canonical(name)
    folder = Path(root) if root is not None else cache_dir(name)
    folder.mkdir(parents=True, exist_ok=True)
    for base in FILES:
        existing = _file_in(folder, base)
        if existing is not None and _is_valid(existing, name, base):
            continue
        fetched = _download_file(name, base, folder, verbose)
        if existing is not None and existing != fetched:
            # A bad raw file would shadow the good .gz, as raw files are read first.
            existing.unlink()
    if verbose:
        print(f"{name}: all files verified in {folder}", file=sys.stderr)
    return folder


# ---------------------------------------------------------------- loading


def _locate(name: str, root, allow_download: bool) -> dict[str, Path]:
    explicit = root is not None
    places = [("root", Path(root))] if explicit else search_path(name)
    for _, folder in places:
        files = _files_in(folder)
        if files is not None:
            return files
    if not allow_download or (explicit and _files_in(Path(root) / name) is not None):
        # root/<name> holds the files: root was meant to be that folder (its
        # hint says so), not a place to download another copy into
        raise DatasetNotFoundError(name, places, explicit)
    try:
        folder = download(name, root)
    except (DownloadError, OSError) as exc:
        raise DatasetNotFoundError(name, places, explicit, True, exc) from exc
    return _files_in(folder)


def load(name: str, root: str | os.PathLike | None = None, download: bool = True,
         flatten: bool = True):
    """Load ``name`` ("mnist" or "fashion-mnist") as ``(X_train, y_train), (X_test, y_test)``.

    X is float32 in [0, 1], C-contiguous, with shape (N, 784), or (N, 1, 28, 28)
    (images, NCHW, for convolutional networks) with ``flatten=False``; y is int64
    with shape (N,). With ``root`` only that folder is used (and downloaded into,
    if ``download``); otherwise the search path applies (see the module docstring).
    """
    name = _canonical(name)
    download, flatten = boolean(download, "load: download"), boolean(flatten, "load: flatten")
    return _load_files(name, _locate(name, root, download), flatten)


def load_mnist(root: str | os.PathLike | None = None, download: bool = True,
               flatten: bool = True):
    """MNIST handwritten digits: 60000 training and 10000 test images."""
    return load("mnist", root, download, flatten)


def load_fashion_mnist(root: str | os.PathLike | None = None, download: bool = True,
                       flatten: bool = True):
    """Fashion-MNIST (Zalando): 60000 training and 10000 test images of clothing."""
    return load("fashion-mnist", root, download, flatten)


# ---------------------------------------------------------------- pictures as MNIST images

_BOX = 20  # MNIST fits each digit into 20x20 pixels (keeping its aspect ratio) ...
_INK = 0.1  # ... of ink: the share of the full ink level below which a pixel is background
_PILLOW_HINT = "reading image files needs Pillow: pip install 'scratchnet[plot]'"


def image_to_mnist(image) -> np.ndarray:
    """A picture of a digit as a 28x28 MNIST image: float32 in [0, 1], light
    ink on a black background, prepared the way MNIST was (for a piece of
    clothing, see image_to_fashion_mnist).

    ``image`` is a file name (PNG, JPEG or any format Pillow reads: any size,
    colour or grey, with or without transparency) or an array: (H, W) grey,
    (H, W, 3) RGB or (H, W, 4) RGBA, as integers 0..255 or floats 0..1. Steps:

    1. grey levels (luminance; transparent parts count as white paper);
    2. inverted when the background (the median of the border pixels) is light,
       so the ink is light on dark as in MNIST; the background level is
       subtracted and the ink scaled to a full level of 1, and anything under
       10% of it counts as background;
    3. cropped to the ink's bounding box;
    4. resized (area-weighted, anti-aliased) so its longer side is 20 pixels,
       keeping the aspect ratio;
    5. placed in a 28x28 field so that its centre of mass lies on the field's
       centre (pixel 14, 14), kept whole inside the field.

    Raises ValueError for an image with no ink (all one level)."""
    ink = _cropped_ink(image, "image_to_mnist", full_level=True)
    small = _resized(ink, _BOX)
    small /= small.max()  # a thin pen stroke keeps the full ink level
    total = small.sum()
    height, width = small.shape
    centre_y = small.sum(axis=1) @ np.arange(height) / total
    centre_x = small.sum(axis=0) @ np.arange(width) / total
    top = min(max(round(_SIDE / 2 - centre_y), 0), _SIDE - height)
    left = min(max(round(_SIDE / 2 - centre_x), 0), _SIDE - width)
    out = np.zeros((_SIDE, _SIDE), np.float32)
    out[top:top + height, left:left + width] = small
    return out


def image_to_fashion_mnist(image) -> np.ndarray:
    """A picture of a piece of clothing as a 28x28 Fashion-MNIST image:
    float32 in [0, 1], the article light on a black background, prepared the
    way Fashion-MNIST's were (its README: trimmed, the longer side resized
    to 28, centred, negated). ``image`` as for image_to_mnist. Steps 1-3 are
    image_to_mnist's, keeping the grey levels (no scaling to a full level)
    and cropping to any level above the background; then the longer side is
    resized to 28 pixels and the article centred in the field by its
    bounding box. A Fashion-MNIST image itself comes back
    as it was (the digit recipe, fitting 20 pixels by the centre of mass,
    made them unrecognisable: 84% right on 500 test images became 41%).

    Raises ValueError for an image with no article (all one level)."""
    small = np.clip(_resized(_cropped_ink(image, "image_to_fashion_mnist", full_level=False),
                             _SIDE), 0.0, 1.0)
    height, width = small.shape
    # an odd margin puts its extra pixel before the article, as the dataset does
    top, left = (_SIDE - height + 1) // 2, (_SIDE - width + 1) // 2
    out = np.zeros((_SIDE, _SIDE), np.float32)
    out[top:top + height, left:left + width] = small
    return out


def _cropped_ink(image, name, full_level):
    """Steps 1-3 of image_to_mnist: the picture's grey levels, light on dark,
    less the background, cropped to what is above 10% of the peak; scaled
    to a full level of 1 (and the 10% subtracted) when full_level."""
    grey = _grey_levels(image)
    if grey.ndim != 2 or grey.size == 0:
        raise ValueError(f"{name}: expected a 2-D picture, got shape {grey.shape}")
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    background = float(np.median(border))
    if background > 0.5:  # dark ink on light paper: the datasets' ink is light on black
        grey, background = 1.0 - grey, 1.0 - background
    ink = np.clip(grey - background, 0.0, None)
    peak = float(ink.max())
    if not peak > 1e-3:
        raise ValueError(f"{name}: no ink found (the picture is all one level)")
    if full_level:
        ink = np.clip((ink / peak - _INK) / (1 - _INK), 0.0, 1.0)
        above = ink > 0
    else:  # any level a byte can hold: a Fashion-MNIST image keeps its faintest pixels
        above = ink > 0.5 / 255
    rows, cols = np.flatnonzero(above.any(axis=1)), np.flatnonzero(above.any(axis=0))
    return ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _resized(ink, side):
    """ink resized (area-weighted) so that its longer side is `side` pixels."""
    height, width = ink.shape
    scale = side / max(height, width)
    height, width = max(1, round(height * scale)), max(1, round(width * scale))
    return _resample_matrix(ink.shape[0], height) @ ink @ _resample_matrix(ink.shape[1], width).T


def _grey_levels(image) -> np.ndarray:
    """The picture as float64 grey levels in [0, 1] (1 white)."""
    if isinstance(image, (str, os.PathLike)):
        return _read_picture(image)
    pixels = np.asarray(image)
    kind = pixels.dtype.kind
    if kind not in "buif":
        raise ValueError(f"image_to_mnist: pixels of type {pixels.dtype}; give numbers")
    pixels = pixels.astype(np.float64)
    if not np.isfinite(pixels).all():
        raise ValueError("image_to_mnist: the picture holds NaN or infinite values")
    if pixels.size and (kind in "ui" or pixels.max() > 1.0):
        pixels = pixels / 255.0  # integer (or 0..255 float) pixels
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim == 3 and pixels.shape[2] in (3, 4):
        if pixels.shape[2] == 4:  # transparent parts show white paper
            alpha = pixels[:, :, 3:]
            pixels = pixels[:, :, :3] * alpha + (1.0 - alpha)
        pixels = pixels @ np.array([0.299, 0.587, 0.114])  # luminance (ITU-R 601, as Pillow)
    return pixels


def _read_picture(path) -> np.ndarray:
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise ImportError(_PILLOW_HINT) from None
    with Image.open(path) as picture:
        picture = ImageOps.exif_transpose(picture)  # a phone photo stands upright
        if picture.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
            pixels = np.asarray(picture, dtype=np.float64)
            return pixels / (65535.0 if pixels.max() > 255 else 255.0)
        if "A" in picture.getbands() or "transparency" in picture.info:
            paper = Image.new("RGBA", picture.size, "white")
            picture = Image.alpha_composite(paper, picture.convert("RGBA"))
        return np.asarray(picture.convert("L"), dtype=np.float64) / 255.0


def _resample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights that resize a line of n_in pixels to n_out: a tent
    filter as wide as an output pixel when shrinking (anti-aliased, as Pillow's
    bilinear resize), linear interpolation when enlarging."""
    step = n_in / n_out
    centres = (np.arange(n_out) + 0.5) * step - 0.5
    radius = max(step, 1.0)
    weights = np.maximum(0.0, 1.0 - np.abs(np.arange(n_in)[None, :] - centres[:, None]) / radius)
    return weights / weights.sum(axis=1, keepdims=True)
