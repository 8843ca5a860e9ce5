"""The decoded copy of a dataset (scratchnet._decoded_cache): used by the second
load, identical to decoding the IDX files, and never trusted when it or its
sources changed; a cache folder that cannot be written only makes loads slower.

Each test loads MNIST from its own folder into its own cache folder. The first
test loads the real files; the others, which damage and reload the copy several
times, load the first SMALL_TRAIN / SMALL_TEST images of them, with the counts
and SHA-256 digests the loader expects patched to match (the same code runs,
on 1% of the bytes)."""
import builtins
import gzip
import hashlib
import json
import os
import struct

import numpy as np
import pytest

from scratchnet import _decoded_cache, datasets

FILES = datasets.FILES
TRAIN_IMAGES = "train-images-idx3-ubyte"
SMALL_TRAIN, SMALL_TEST = 600, 100


@pytest.fixture(scope="session")
def mnist_idx(mnist):
    """The four decompressed MNIST IDX files, as bytes."""
    folder = datasets.find("mnist")
    found = {}
    for base in FILES:
        raw = folder / base
        found[base] = (raw.read_bytes() if raw.is_file()
                       else gzip.decompress((folder / f"{base}.gz").read_bytes()))
    return found


def first_images(idx, count):
    """An IDX file cut to its first `count` items, its header saying so."""
    dims = idx[3]
    header = struct.unpack(f">{dims}I", idx[4:4 + 4 * dims])
    item = int(np.prod(header[1:], dtype=np.int64))
    start = 4 + 4 * dims
    return idx[:4] + struct.pack(f">{dims}I", count, *header[1:]) + idx[start:start + count * item]


def decoded_here(idx_files, counts):
    """What loading must give, decoded here without scratchnet: pixels / 255 as float32."""
    arrays = {base: np.frombuffer(data, np.uint8) for base, data in idx_files.items()}
    split = {}
    for part, count in counts.items():
        images = arrays[f"{part}-images-idx3-ubyte"][16:].reshape(count, 784).astype(np.float32)
        split[part] = (images / np.float32(255), arrays[f"{part}-labels-idx1-ubyte"][8:].astype(np.int64))
    return split["train"], split["t10k"]


@pytest.fixture(scope="session")
def full_files(mnist_idx):
    return {base: gzip.compress(data, compresslevel=1) for base, data in mnist_idx.items()}, \
        decoded_here(mnist_idx, {"train": 60000, "t10k": 10000})


@pytest.fixture(scope="session")
def small_files(mnist_idx):
    counts = {"train": SMALL_TRAIN, "t10k": SMALL_TEST}
    idx = {base: first_images(data, counts[base.split("-")[0]]) for base, data in mnist_idx.items()}
    return {base: gzip.compress(data) for base, data in idx.items()}, decoded_here(idx, counts), \
        {base: hashlib.sha256(data).hexdigest() for base, data in idx.items()}


@pytest.fixture
def test_files(request, monkeypatch, small_files):
    """(the four gzip files the test loads, what loading them must give): the
    small ones, the loader's expected counts and digests patched to match,
    unless the test is marked `full_mnist`."""
    if request.node.get_closest_marker("full_mnist"):
        return request.getfixturevalue("full_files")
    files, expected, digests = small_files
    monkeypatch.setattr(datasets, "_COUNTS", {"train": SMALL_TRAIN, "t10k": SMALL_TEST})
    monkeypatch.setitem(datasets.SHA256, "mnist", digests)
    return files, expected


@pytest.fixture
def mnist_gz(test_files):
    return test_files[0]


@pytest.fixture
def reference(test_files):
    return test_files[1]


@pytest.fixture
def source(tmp_path, monkeypatch, mnist_gz):
    """A folder with the four gzip files, and a cache folder of this test's own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "mnist"
    folder.mkdir()
    for base, data in mnist_gz.items():
        (folder / f"{base}.gz").write_bytes(data)
    return folder


@pytest.fixture
def decodes(monkeypatch):
    """Counts the IDX files read from their source (gunzipped and verified)."""
    calls = []
    original = datasets._read_idx

    def counting(path, *args):
        calls.append(path)
        return original(path, *args)

    monkeypatch.setattr(datasets, "_read_idx", counting)
    return calls


def cached(name):
    return datasets.cache_dir("mnist") / "decoded" / name


def assert_same(loaded, expected):
    for (x, y), (x_want, y_want) in zip(loaded, expected):
        assert x.dtype == np.float32 and x.flags.c_contiguous and x.flags.writeable
        np.testing.assert_array_equal(x, x_want)
        np.testing.assert_array_equal(y, y_want)
        assert y.dtype == np.int64


@pytest.mark.full_mnist
def test_second_load_reads_the_decoded_copy_not_the_gzip_files(source, decodes, reference):
    assert_same(datasets.load_mnist(root=source), reference)
    assert len(decodes) == 4
    assert {p.name for p in cached("").iterdir()} == {f"{b}.npy" for b in FILES} | {"source.json"}
    assert_same(datasets.load_mnist(root=source), reference)
    assert len(decodes) == 4  # nothing decoded again


def test_images_from_the_copy_keep_their_layout(source, reference):
    datasets.load_mnist(root=source)
    (X, _), (Xt, _) = datasets.load_mnist(root=source, flatten=False)
    assert X.shape == (SMALL_TRAIN, 1, 28, 28) and Xt.shape == (SMALL_TEST, 1, 28, 28)
    np.testing.assert_array_equal(X.reshape(SMALL_TRAIN, 784), reference[0][0])


def damage_flip_a_pixel(path):
    data = bytearray(path.read_bytes())
    data[-1000] ^= 0x01
    path.write_bytes(bytes(data))


def damage_truncate(path):
    path.write_bytes(path.read_bytes()[:-784])


def damage_empty(path):
    path.write_bytes(b"")


def damage_other_shape(path):
    np.save(path, np.zeros((SMALL_TRAIN - 1, 28, 28), np.uint8))


def damage_same_bytes_other_shape(path):
    np.save(path, np.load(path).reshape(-1, 28))  # the digest alone would not see it


def damage_pickled(path):
    np.save(path, np.array([{"not": "pixels"}], dtype=object), allow_pickle=True)


def damage_delete(path):
    path.unlink()


@pytest.mark.parametrize("damage", [damage_flip_a_pixel, damage_truncate, damage_empty,
                                    damage_other_shape, damage_same_bytes_other_shape,
                                    damage_pickled, damage_delete])
def test_a_damaged_copy_is_decoded_again_and_rebuilt(source, decodes, reference, damage):
    datasets.load_mnist(root=source)
    damage(cached(f"{TRAIN_IMAGES}.npy"))
    assert_same(datasets.load_mnist(root=source), reference)
    assert len(decodes) == 8
    assert_same(datasets.load_mnist(root=source), reference)
    assert len(decodes) == 8  # the rebuilt copy serves the third load


@pytest.mark.parametrize("key", ["", "{not json", "[]", '{"format": 0}'])
def test_an_unreadable_or_foreign_key_is_decoded_again(source, decodes, reference, key):
    datasets.load_mnist(root=source)
    cached("source.json").write_text(key)
    assert_same(datasets.load_mnist(root=source), reference)
    assert len(decodes) == 8


def test_a_changed_source_is_decoded_and_verified_again(source, decodes, reference):
    datasets.load_mnist(root=source)
    label_file = source / "train-labels-idx1-ubyte.gz"
    os.utime(label_file, ns=(0, 0))  # same bytes, another modification time
    assert_same(datasets.load_mnist(root=source), reference)
    assert len(decodes) == 8


def test_a_damaged_source_raises_even_with_a_good_copy(source, mnist_gz):
    datasets.load_mnist(root=source)
    raw = bytearray(gzip.decompress(mnist_gz["train-labels-idx1-ubyte"]))
    raw[100] = (raw[100] + 1) % 10  # a wrong label, still in range
    (source / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(datasets.DatasetError, match="SHA-256 mismatch"):
        datasets.load_mnist(root=source)


def test_another_source_folder_is_decoded_again(source, tmp_path, decodes, reference):
    datasets.load_mnist(root=source)
    other = source.rename(tmp_path / "moved")
    assert_same(datasets.load_mnist(root=other), reference)
    assert len(decodes) == 8
    key = json.loads(cached("source.json").read_text())
    assert all(path.startswith(str(other)) for path, *_ in key["files"].values())


def test_a_cache_folder_that_cannot_be_made_still_loads(source, tmp_path, monkeypatch, decodes,
                                                       reference):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # its cache folder lies under a file
    assert_same(datasets.load_mnist(root=source), reference)
    assert_same(datasets.load_mnist(root=source), reference)
    assert len(decodes) == 8


def test_a_read_only_cache_folder_still_loads(source, monkeypatch, decodes, reference):
    folder = cached("")
    folder.mkdir(parents=True)
    folder.chmod(0o555)
    real_open = builtins.open

    def read_only(file, mode="r", *args, **kwargs):  # root ignores the mode bits
        if any(c in mode for c in "wax+") and str(file).startswith(str(folder)):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", read_only)
    assert_same(datasets.load_mnist(root=source), reference)
    assert_same(datasets.load_mnist(root=source), reference)
    assert len(decodes) == 8
    folder.chmod(0o755)
    assert list(folder.iterdir()) == []


def test_a_write_cut_short_leaves_no_partial_file(source, monkeypatch, decodes, reference):
    def disk_full(file, array):
        file.write(b"\x93NUMPY partial")
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(_decoded_cache.np, "save", disk_full)
        assert_same(datasets.load_mnist(root=source), reference)
    assert list(cached("").iterdir()) == []
    assert_same(datasets.load_mnist(root=source), reference)  # the copy is written now
    assert len(list(cached("").iterdir())) == 5
    assert_same(datasets.load_mnist(root=source), reference)
    assert len(decodes) == 8
