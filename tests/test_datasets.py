"""Tests of scratchnet.datasets: parsing, verification, search order and downloads.

Downloads are tested against a real HTTP server on 127.0.0.1; an autouse fixture
points every mirror at a closed local port so no test can reach the internet.
"""

import gzip
import http.server
import os
import pickle
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from scratchnet import datasets

FILES = datasets.FILES
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """Keep every test away from real mirrors, the user's cache and proxies."""
    # Nothing listens on the discard port: a stray download is refused at once.
    monkeypatch.setenv("SCRATCHNET_MIRROR", "http://127.0.0.1:9/")
    monkeypatch.setattr(datasets, "MIRRORS", {"mnist": [], "fashion-mnist": []})
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def nowhere(monkeypatch, tmp_path):
    """An empty search path: no SCRATCHNET_DATA, empty cache, system and bundled folders."""
    monkeypatch.delenv("SCRATCHNET_DATA", raising=False)
    monkeypatch.setattr(datasets, "SYSTEM_DIR", tmp_path / "system")
    monkeypatch.setattr(datasets, "BUNDLED_DIR", tmp_path / "bundled")
    return tmp_path


@pytest.fixture(scope="session")
def mnist_found(mnist):
    """The bytes of the four MNIST files as found (raw or gzip) through the search path."""
    folder = datasets.find("mnist")
    found = {}
    for base in FILES:
        path = folder / base if (folder / base).is_file() else folder / f"{base}.gz"
        found[base] = path.read_bytes()
    return found


def is_gzip(data: bytes) -> bool:
    return data[:2] == b"\x1f\x8b"


@pytest.fixture(scope="session")
def mnist_raw(mnist_found):
    return {b: gzip.decompress(d) if is_gzip(d) else d for b, d in mnist_found.items()}


@pytest.fixture(scope="session")
def mnist_gz(mnist_found):
    # Level 1 where compression is needed at all: level 9 takes seconds on 47 MB.
    return {b: d if is_gzip(d) else gzip.compress(d, compresslevel=1) for b, d in mnist_found.items()}


def write_files(folder: Path, files: dict, suffix: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for base, data in files.items():
        (folder / f"{base}{suffix}").write_bytes(data)
    return folder


def touch_all(folder: Path) -> Path:
    """Empty stand-ins for the four files: enough for find(), which does not read them."""
    return write_files(folder, {base: b"" for base in FILES})


def relabel(raw_labels: bytes, index: int, value: int) -> bytes:
    """The label file with label ``index`` set to ``value`` (the header is 8 bytes)."""
    data = bytearray(raw_labels)
    data[8 + index] = value
    return bytes(data)


def assert_same(loaded, expected):
    for (x, y), (xe, ye) in zip(loaded, expected):
        np.testing.assert_array_equal(x, xe)
        np.testing.assert_array_equal(y, ye)


# ---------------------------------------------------------------- the real data


def check_split(x, y, count):
    assert x.shape == (count, 784) and y.shape == (count,)
    assert x.dtype == np.float32 and y.dtype == np.int64
    assert x.flags.c_contiguous
    assert x.min() == 0.0 and x.max() == 1.0
    # Pixels are bytes divided by 255: scaling back gives integers.
    np.testing.assert_allclose(x[:100] * 255, np.round(x[:100] * 255), atol=1e-4)
    assert set(np.unique(y)) == set(range(10))


def test_mnist_shapes_dtypes_and_values(mnist):
    (x, y), (xt, yt) = mnist
    check_split(x, y, 60000)
    check_split(xt, yt, 10000)
    assert y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert yt[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert 0.12 < x.mean() < 0.15  # ink covers about 13% of an MNIST digit


def test_fashion_mnist_shapes_dtypes_and_values(fashion_mnist):
    (x, y), (xt, yt) = fashion_mnist
    check_split(x, y, 60000)
    check_split(xt, yt, 10000)
    assert y[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert yt[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    # Fashion-MNIST is exactly balanced.
    assert np.bincount(y).tolist() == [6000] * 10
    assert np.bincount(yt).tolist() == [1000] * 10


def test_class_names():
    assert datasets.class_names("mnist") == tuple("0123456789") == datasets.MNIST_CLASSES
    names = datasets.class_names("fashion_mnist")
    assert names == datasets.FASHION_MNIST_CLASSES
    assert len(names) == 10 and names[0] == "T-shirt/top" and names[9] == "Ankle boot"


@pytest.mark.parametrize("call", [datasets.class_names, datasets.load, datasets.download])
def test_unknown_name_lists_valid_names(call):
    with pytest.raises(ValueError, match="mnist, fashion-mnist"):
        call("cifar10")


# ---------------------------------------------------------------- file formats


def test_raw_files_load_the_same_as_gzip(tmp_path, mnist, mnist_raw):
    root = write_files(tmp_path / "raw", mnist_raw)
    assert_same(datasets.load("mnist", root=root, download=False), mnist)


def test_gzip_is_detected_by_content_not_suffix(tmp_path, mnist, mnist_raw, mnist_gz):
    # gzip data under the raw name, raw data under the .gz name: both must load.
    root = tmp_path / "swapped"
    write_files(root, {b: mnist_gz[b] for b in FILES[:2]})
    write_files(root, {b: mnist_raw[b] for b in FILES[2:]}, suffix=".gz")
    assert_same(datasets.load_mnist(root=root, download=False), mnist)


def test_raw_file_is_preferred_when_both_exist(tmp_path, mnist_raw, mnist_gz):
    root = write_files(tmp_path / "both", mnist_gz, suffix=".gz")
    write_files(root, {"t10k-labels-idx1-ubyte": relabel(mnist_raw["t10k-labels-idx1-ubyte"], 0, 3)})
    with pytest.raises(datasets.DatasetError, match=r"t10k-labels-idx1-ubyte: SHA-256"):
        datasets.load("mnist", root=root, download=False)


# ---------------------------------------------------------------- verification


def load_with(tmp_path, mnist_gz, base, data, suffix=".gz"):
    """Load MNIST from a copy in which ``base`` holds ``data``."""
    files = {b: d for b, d in mnist_gz.items() if b != base}
    root = write_files(tmp_path / "bad", files, suffix=".gz")
    (root / f"{base}{suffix}").write_bytes(data)
    return datasets.load("mnist", root=root, download=False)


def test_corrupted_byte_fails_the_checksum(tmp_path, mnist_raw, mnist_gz):
    # A valid label changed into another valid label: only the checksum can tell.
    base = "t10k-labels-idx1-ubyte"
    bad = gzip.compress(relabel(mnist_raw[base], 5, 3))
    with pytest.raises(datasets.DatasetError) as info:
        load_with(tmp_path, mnist_gz, base, bad)
    message = str(info.value)
    assert str(tmp_path / "bad" / f"{base}.gz") in message
    assert "SHA-256 mismatch" in message and datasets.SHA256["mnist"][base] in message


def test_the_other_datasets_file_is_named_as_such(tmp_path, mnist_gz):
    """Fashion-MNIST's file in an MNIST folder was only a SHA-256 mismatch
    (the two share file names; a reviewer's note)."""
    folder = datasets.find("fashion-mnist")
    if folder is None:
        pytest.skip("fashion-mnist not found (set SCRATCHNET_DATA)")
    base = "t10k-labels-idx1-ubyte"
    path = next(p for p in folder.iterdir() if p.name.startswith(base))
    with pytest.raises(datasets.DatasetError, match=f"SHA-256 mismatch: .*; it is fashion-mnist's "
                                                    f"{base}: put fashion-mnist's files in a folder "
                                                    "named fashion-mnist"):
        load_with(tmp_path, mnist_gz, base, path.read_bytes(), suffix=path.suffix)


def test_corrupted_image_pixel_fails_the_checksum(tmp_path, mnist_raw, mnist_gz):
    base = "train-images-idx3-ubyte"
    data = bytearray(mnist_raw[base])
    data[16 + 784 * 7 + 400] ^= 0xFF
    with pytest.raises(datasets.DatasetError, match=f"{base}.gz: SHA-256 mismatch"):
        load_with(tmp_path, mnist_gz, base, gzip.compress(bytes(data), compresslevel=1))


def test_truncated_gzip_is_reported(tmp_path, mnist_gz):
    base = "train-labels-idx1-ubyte"
    truncated = mnist_gz[base][: len(mnist_gz[base]) // 2]
    with pytest.raises(datasets.DatasetError, match=f"{base}.gz: corrupt or truncated gzip"):
        load_with(tmp_path, mnist_gz, base, truncated)


def test_truncated_raw_file_is_reported(tmp_path, mnist_raw, mnist_gz):
    base = "t10k-labels-idx1-ubyte"
    with pytest.raises(datasets.DatasetError, match=r"truncated: 5008 bytes, the header implies 10008"):
        load_with(tmp_path, mnist_gz, base, mnist_raw[base][:5008], suffix="")


def test_file_shorter_than_a_header_is_reported(tmp_path, mnist_gz):
    base = "t10k-labels-idx1-ubyte"
    with pytest.raises(datasets.DatasetError, match=f"{base}: truncated: 3 bytes"):
        load_with(tmp_path, mnist_gz, base, b"\x00\x00\x08", suffix="")


def test_swapped_files_fail_on_the_magic_number(tmp_path, mnist_gz):
    # A label file under an image file's name.
    base = "t10k-images-idx3-ubyte"
    with pytest.raises(datasets.DatasetError, match=r"not an IDX image file \(magic 0x00000801"):
        load_with(tmp_path, mnist_gz, base, mnist_gz["t10k-labels-idx1-ubyte"])


def test_wrong_count_in_header_is_reported(tmp_path, mnist_raw, mnist_gz):
    # The training labels under the test labels' name: a valid file of the wrong size.
    base = "t10k-labels-idx1-ubyte"
    with pytest.raises(datasets.DatasetError, match=r"shape \(60000,\), expected \(10000,\)"):
        load_with(tmp_path, mnist_gz, base, mnist_raw["train-labels-idx1-ubyte"], suffix="")


def test_label_out_of_range_is_reported(tmp_path, mnist_raw, mnist_gz):
    base = "t10k-labels-idx1-ubyte"
    bad = relabel(mnist_raw[base], 17, 10)
    with pytest.raises(datasets.DatasetError, match=f"{base}: label 10 is outside 0..9"):
        load_with(tmp_path, mnist_gz, base, bad, suffix="")


def test_a_gzip_bomb_is_refused_within_a_second(tmp_path):
    """A label file's header, then 1 GiB of zeros in 100 gzip members: the
    stream stops one byte past the 60008 bytes the file must have."""
    header = (2049).to_bytes(4, "big") + (60000).to_bytes(4, "big")
    member = gzip.compress(b"\0" * (10 << 20), compresslevel=1)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    with open(path, "wb") as f:
        f.write(gzip.compress(header))
        for _ in range(100):
            f.write(member)
    started = time.perf_counter()
    with pytest.raises(datasets.DatasetError, match="decompresses to more than the 60008 bytes"):
        datasets._read_idx(path, "mnist", "train-labels-idx1-ubyte")
    assert time.perf_counter() - started < 1.0


def test_a_long_file_with_a_wrong_header_says_so(tmp_path):
    """A file far too long but with another header gets the header's complaint."""
    idx = (2049).to_bytes(4, "big") + (60000).to_bytes(4, "big") + bytes(60000)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx))
    with pytest.raises(datasets.DatasetError, match=r"header gives shape \(60000,\)"):
        datasets._read_idx(path, "mnist", "t10k-labels-idx1-ubyte")


def test_trailing_data_after_the_gzip_stream_is_refused(tmp_path):
    idx = (2049).to_bytes(4, "big") + (10000).to_bytes(4, "big") + bytes(10000)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx) + b"more")
    with pytest.raises(datasets.DatasetError, match="trailing bytes after the gzip data"):
        datasets._read_idx(path, "mnist", "t10k-labels-idx1-ubyte")


# ---------------------------------------------------------------- where files are found


def test_explicit_root_is_the_only_place_looked_at(tmp_path, monkeypatch, nowhere):
    # Valid-looking folders elsewhere must be ignored when root is given.
    monkeypatch.setenv("SCRATCHNET_DATA", str(touch_all(tmp_path / "env" / "mnist").parent))
    touch_all(datasets.cache_dir("mnist"))
    root = tmp_path / "empty-root"
    root.mkdir()
    assert datasets.find("mnist", root=root) is None
    with pytest.raises(datasets.DatasetNotFoundError) as info:
        datasets.load("mnist", root=root, download=False)
    message = str(info.value)
    assert f"  {root}  (root)" in message
    assert str(tmp_path / "env") not in message
    assert str(datasets.cache_dir("mnist")) not in message


def test_root_holding_a_dataset_subfolder_gets_a_hint(tmp_path, mnist_gz):
    parent = tmp_path / "datasets"
    write_files(parent / "mnist", mnist_gz, suffix=".gz")
    with pytest.raises(datasets.DatasetNotFoundError, match="pass that folder as root"):
        datasets.load("mnist", root=parent, download=False)


def test_scratchnet_data_holding_the_files_themselves_gets_a_hint(tmp_path, monkeypatch,
                                                                 nowhere, mnist_gz):
    """SCRATCHNET_DATA names the folder that holds <name>/; pointed at the
    dataset's own folder, the error said "not found" with no hint."""
    own = tmp_path / "data" / "mnist"
    write_files(own, mnist_gz, suffix=".gz")
    monkeypatch.setenv("SCRATCHNET_DATA", str(own))
    with pytest.raises(datasets.DatasetNotFoundError) as info:
        datasets.load("mnist", download=False)
    assert info.value.env_holds_files == own
    assert f"$SCRATCHNET_DATA ({own}) holds the files themselves" in str(info.value)
    monkeypatch.setenv("SCRATCHNET_DATA", str(own.parent))
    assert datasets.find("mnist") == own


def test_search_order(tmp_path, monkeypatch, nowhere):
    env = touch_all(tmp_path / "env" / "fashion-mnist")
    cache = touch_all(datasets.cache_dir("fashion-mnist"))
    system = touch_all(tmp_path / "system" / "fashion-mnist")
    bundled = touch_all(tmp_path / "bundled" / "fashion-mnist")
    monkeypatch.setenv("SCRATCHNET_DATA", str(env.parent))
    assert [path for _, path in datasets.search_path("fashion_mnist")] == [env, cache, system, bundled]

    for expected, remove in [(env, None), (cache, env), (system, cache), (bundled, system)]:
        if remove is not None:
            (remove / FILES[0]).unlink()  # an incomplete folder does not count
        assert datasets.find("fashion-mnist") == expected
    (bundled / FILES[3]).unlink()
    assert datasets.find("fashion-mnist") is None


def test_cache_honours_xdg_and_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert datasets.cache_dir("fashion_mnist") == tmp_path / "xdg" / "scratchnet" / "fashion-mnist"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for value in ("", "relative/path"):  # the XDG spec says to ignore a relative value
        monkeypatch.setenv("XDG_CACHE_HOME", value)
        assert datasets.cache_dir("mnist") == tmp_path / "home" / ".cache" / "scratchnet" / "mnist"


def test_bundled_mnist_is_found_last(monkeypatch, tmp_path):
    # The real bundled folder, with nothing ahead of it in the search path.
    monkeypatch.delenv("SCRATCHNET_DATA", raising=False)
    monkeypatch.setattr(datasets, "SYSTEM_DIR", tmp_path / "system")
    bundled = Path(datasets.__file__).parent / "data" / "mnist"
    assert datasets.find("mnist") == bundled
    assert (bundled / "NOTICE").is_file()
    assert datasets.find("fashion-mnist") is None  # only MNIST is bundled


def test_not_found_error_lists_every_place_and_the_remedies(tmp_path, monkeypatch, nowhere):
    monkeypatch.setenv("SCRATCHNET_DATA", str(tmp_path / "env"))
    touch_all(tmp_path / "bundled" / "fashion-mnist")
    (tmp_path / "bundled" / "fashion-mnist" / FILES[1]).unlink()
    with pytest.raises(datasets.DatasetNotFoundError) as info:
        datasets.load_fashion_mnist(download=False)
    message = str(info.value)
    for label, folder in datasets.search_path("fashion-mnist"):
        assert f"  {folder}  ({label})" in message
    assert str(tmp_path / "bundled" / "fashion-mnist") in message
    assert "download=False" in message
    assert "SCRATCHNET_DATA" in message and "root=" in message
    assert "scratchnet download fashion-mnist" in message


def test_not_found_error_carries_the_facts(tmp_path, monkeypatch, nowhere):
    # The command line words its own message from these, so they must be complete.
    monkeypatch.setenv("SCRATCHNET_DATA", str(tmp_path / "env"))
    partial = touch_all(tmp_path / "env" / "mnist")
    (partial / FILES[3]).unlink()
    with pytest.raises(datasets.DatasetNotFoundError) as info:
        datasets.load("mnist", download=False)
    exc = info.value
    assert exc.name == "mnist" and exc.files == FILES
    assert exc.places == datasets.search_path("mnist")
    assert not exc.root_given and exc.nested is None
    assert exc.missing[partial] == [FILES[3]]
    assert exc.missing[datasets.cache_dir("mnist")] == list(FILES)
    assert not exc.download_tried and exc.download_error is None

    # An explicit root holding <name>/: refused before any download (it tried
    # one, which would have put a second copy in the parent; a reviewer's note).
    parent = tmp_path / "parent"
    touch_all(parent / "mnist")
    with pytest.raises(datasets.DatasetNotFoundError) as info:
        datasets.load("mnist", root=parent)
    exc = info.value
    assert exc.places == [("root", parent)] and exc.root_given
    assert exc.nested == parent / "mnist"
    assert not exc.download_tried and list(parent.iterdir()) == [parent / "mnist"]
    assert "Downloading is disabled" not in str(exc)  # it was not: the hint says why

    # An explicit root holding nothing, and a download that failed.
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(datasets.DatasetNotFoundError) as info:
        datasets.load("mnist", root=empty)
    exc = info.value
    assert exc.nested is None
    assert exc.download_tried and isinstance(exc.download_error, datasets.DownloadError)
    assert "127.0.0.1:9" in str(exc.download_error)
    # Another download is no remedy for a failed one.
    assert "scratchnet download" not in str(exc)

    copy = pickle.loads(pickle.dumps(exc))
    assert str(copy) == str(exc) and copy.nested == exc.nested and copy.missing == exc.missing


# ---------------------------------------------------------------- downloads


class MirrorHandler(http.server.SimpleHTTPRequestHandler):
    """Serves server.folder; files named in server.cut are sent only half, then cut."""

    def __init__(self, request, client_address, server):
        super().__init__(request, client_address, server, directory=str(server.folder))

    def do_GET(self):
        self.server.requests.append(self.path)
        name = self.path.rsplit("/", 1)[-1]
        if name not in self.server.cut:
            return super().do_GET()
        data = (self.server.folder / name).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.close_connection = True

    def log_message(self, format, *args):
        pass  # keep the test output clean


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A real HTTP server on 127.0.0.1 serving a folder; SCRATCHNET_MIRROR points at it."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), MirrorHandler)
    server.folder = tmp_path / "www"
    server.folder.mkdir()
    server.requests = []
    server.cut = set()
    # A short poll interval: shutdown() waits for one, 0.5 s by default.
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/"
    monkeypatch.setenv("SCRATCHNET_MIRROR", url)
    yield SimpleNamespace(folder=server.folder, url=url, requests=server.requests, cut=server.cut)
    server.shutdown()
    server.server_close()
    thread.join()


def serve(mirror, mnist_gz, subfolder="", **replaced):
    files = {**mnist_gz, **replaced}
    write_files(mirror.folder / subfolder, files, suffix=".gz")


def leftovers(folder: Path) -> list:
    """Hidden or partial files: what an interrupted download could leave behind."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".part")


def test_download_fetches_and_verifies(tmp_path, mnist, mnist_gz, mirror):
    serve(mirror, mnist_gz)
    root = tmp_path / "downloaded"
    assert datasets.download("mnist", root=root, verbose=False) == root
    assert sorted(p.name for p in root.iterdir()) == sorted(f"{b}.gz" for b in FILES)
    assert sorted(mirror.requests) == sorted(f"/{b}.gz" for b in FILES)
    assert_same(datasets.load("mnist", root=root, download=False), mnist)

    # Files present and valid are not fetched again.
    datasets.download("mnist", root=root, verbose=False)
    assert len(mirror.requests) == len(FILES)


def test_load_downloads_into_the_cache_when_nothing_is_found(
    monkeypatch, mnist, mnist_gz, mirror, nowhere
):
    # "{name}" in the mirror URL lets one server host both datasets.
    serve(mirror, mnist_gz, subfolder="mnist")
    monkeypatch.setenv("SCRATCHNET_MIRROR", mirror.url + "{name}/")
    assert datasets.find("mnist") is None
    assert_same(datasets.load("mnist"), mnist)
    assert datasets.find("mnist") == datasets.cache_dir("mnist")
    assert mirror.requests[0] == "/mnist/train-images-idx3-ubyte.gz"


def test_download_repairs_a_corrupt_file(tmp_path, mnist_raw, mnist_gz, mirror):
    serve(mirror, mnist_gz)
    root = write_files(tmp_path / "repair", mnist_gz, suffix=".gz")
    base = "t10k-labels-idx1-ubyte"
    write_files(root, {base: relabel(mnist_raw[base], 0, 1)})  # a bad raw copy shadows the .gz
    datasets.download("mnist", root=root, verbose=False)
    assert mirror.requests == [f"/{base}.gz"]
    assert not (root / base).exists()
    datasets.load("mnist", root=root, download=False)


def test_download_rejects_a_corrupted_file(tmp_path, mnist_raw, mnist_gz, mirror):
    base = "train-labels-idx1-ubyte"
    serve(mirror, mnist_gz, **{base: gzip.compress(relabel(mnist_raw[base], 0, 3))})
    root = tmp_path / "downloaded"
    with pytest.raises(datasets.DownloadError) as info:
        datasets.download("mnist", root=root, verbose=False)
    message = str(info.value)
    assert f"{mirror.url}{base}.gz: SHA-256 mismatch" in message
    assert str(root / f"{base}.gz") in message
    assert not (root / f"{base}.gz").exists()
    assert leftovers(root) == []


def test_download_rejects_a_truncated_file(tmp_path, mnist_gz, mirror):
    base = "train-labels-idx1-ubyte"
    serve(mirror, mnist_gz, **{base: mnist_gz[base][:1000]})
    root = tmp_path / "downloaded"
    with pytest.raises(datasets.DownloadError, match=f"{base}.gz: corrupt or truncated gzip"):
        datasets.download("mnist", root=root, verbose=False)
    assert not (root / f"{base}.gz").exists()
    assert leftovers(root) == []


def test_download_cut_off_mid_transfer_leaves_nothing(tmp_path, mnist_gz, mirror):
    base = "train-images-idx3-ubyte"
    serve(mirror, mnist_gz)
    mirror.cut.add(f"{base}.gz")
    size = len(mnist_gz[base])
    root = tmp_path / "downloaded"
    message = f"{base}.gz: connection closed after {size // 2} of {size} bytes"
    with pytest.raises(datasets.DownloadError, match=message):
        datasets.download("mnist", root=root, verbose=False)
    assert list(root.iterdir()) == []


def test_download_404_is_a_clear_error(tmp_path, mnist_gz, mirror):
    serve(mirror, mnist_gz)
    os.remove(mirror.folder / "train-images-idx3-ubyte.gz")
    root = tmp_path / "downloaded"
    with pytest.raises(datasets.DownloadError, match="train-images-idx3-ubyte.gz: HTTP Error 404"):
        datasets.download("mnist", root=root, verbose=False)
    assert list(root.iterdir()) == []

    # Through load, the same failure becomes "not found", with the reason and the places.
    with pytest.raises(datasets.DatasetNotFoundError) as info:
        datasets.load("mnist", root=root)
    message = str(info.value)
    assert "The download failed" in message and "HTTP Error 404" in message
    assert f"  {root}  (root)" in message


def test_next_mirror_is_tried_after_a_failure(tmp_path, monkeypatch, mnist_gz, mirror):
    serve(mirror, mnist_gz, subfolder="good")
    monkeypatch.delenv("SCRATCHNET_MIRROR")
    monkeypatch.setitem(datasets.MIRRORS, "mnist", [mirror.url + "missing/", mirror.url + "good/"])
    root = datasets.download("mnist", root=tmp_path / "downloaded", verbose=False)
    assert mirror.requests[:2] == ["/missing/train-images-idx3-ubyte.gz", "/good/train-images-idx3-ubyte.gz"]
    assert len(mirror.requests) == 2 * len(FILES)
    assert leftovers(root) == []


def test_offline_download_fails_fast(tmp_path):
    # The autouse fixture points the mirror at a closed local port.
    with pytest.raises(datasets.DownloadError, match="127.0.0.1:9/train-images-idx3-ubyte.gz"):
        datasets.download("fashion-mnist", root=tmp_path / "offline", verbose=False)
    assert list((tmp_path / "offline").iterdir()) == []


def test_images_for_convolutional_networks(mnist):
    (X, y), (Xt, yt) = mnist
    (Xi, yi), (Xti, yti) = datasets.load("mnist", download=False, flatten=False)
    assert Xi.shape == (60000, 1, 28, 28) and Xti.shape == (10000, 1, 28, 28)
    assert Xi.dtype == np.float32 and Xi.flags.c_contiguous
    np.testing.assert_array_equal(Xi.reshape(60000, -1), X)
    np.testing.assert_array_equal(yi, y)


def test_load_switches_must_be_booleans():
    # flatten="no" was taken as True (a reviewer's note)
    for kwargs in ({"flatten": "no"}, {"download": 0}):
        with pytest.raises(TypeError, match="must be True or False"):
            datasets.load("mnist", **kwargs)
