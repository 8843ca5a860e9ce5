"""Damaged, hand-edited and hostile model files and checkpoints are refused
with an error naming the file and the problem (one reader serves both:
scratchnet._files). Loading never runs code. (Dataset files, a gzip bomb
included: tests/test_datasets.py.)"""
import io
import json
import zipfile

import numpy as np
import pytest

import scratchnet as sn


def small_model():
    sn.manual_seed(0)
    return sn.Sequential(sn.Dense(4, 5), sn.ReLU(), sn.Dropout(0.2), sn.Dense(5, 3))


@pytest.fixture
def files(tmp_path):
    """A model file and a checkpoint of the same small model."""
    model = small_model()
    model.save(tmp_path / "model.npz")
    rng = np.random.default_rng(0)
    X, y = rng.random((20, 4), dtype=np.float32), rng.integers(0, 3, 20)
    opt = sn.Adam(model.parameters(), lr=1e-2)
    model.fit(X, y, opt, epochs=1, batch_size=8, seed=0, verbose=0,
              checkpoint=tmp_path / "run.ckpt")
    return {"model": tmp_path / "model.npz", "checkpoint": tmp_path / "run.ckpt",
            "data": (X, y)}


def arrays_of(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def record(arrays, name):
    return json.loads(arrays[name].tobytes().decode())


def with_record(arrays, name, value):
    arrays = dict(arrays)
    arrays[name] = np.frombuffer(json.dumps(value).encode(), np.uint8)
    return arrays


def edit_architecture(arrays, change):
    arch = record(arrays, "__architecture__")
    change(arch)
    return with_record(arrays, "__architecture__", arch)


def edit_training(arrays, change):
    training = record(arrays, "__training__")
    change(training)
    return with_record(arrays, "__training__", training)


def set_item(key, value):
    def change(arrays):
        arrays = dict(arrays)
        arrays[key] = value
        return arrays
    return change


def drop(key):
    def change(arrays):
        return {k: v for k, v in arrays.items() if k != key}
    return change


# Each case: a change of the file's arrays, and what the error must say.
EDITS = {
    "wrong shape": (set_item("0.weight", np.zeros((4, 6), np.float32)), r"0\.weight.*shape"),
    "missing array": (drop("3.bias"), r"missing keys \['3\.bias'\]"),
    "extra array": (set_item("9.weight", np.zeros(3, np.float32)), r"unexpected keys"),
    "NaN weights": (set_item("0.bias", np.full(5, np.nan, np.float32)), "non-finite"),
    "object array": (set_item("0.bias", np.array([object()] * 5, dtype=object)),
                     "Python objects"),
    "future version": (lambda a: edit_architecture(a, lambda r: r.update(version=2)),
                       "format version 2"),
    "foreign layer": (lambda a: edit_architecture(
        a, lambda r: r["layers"][1].update(type="os.system")), "unknown layer type 'os.system'"),
    "bad layer config": (lambda a: edit_architecture(
        a, lambda r: r["layers"][0]["config"].update(in_features=-4)), "in_features"),
    "no architecture": (drop("__architecture__"), "no architecture record"),
    "unreadable record": (set_item("__architecture__", np.frombuffer(b"{not json", np.uint8)),
                          "unreadable architecture record"),
}

CHECKPOINT_EDITS = {
    "future checkpoint version": (lambda a: edit_training(a, lambda r: r.update(version=7)),
                                  "checkpoint format version 7"),
    "NaN in the optimizer's moments": (
        set_item("__optimizer__.state.0.exp_avg", np.full((4, 5), np.nan, np.float32)),
        "non-finite"),
    "optimizer array missing": (drop("__optimizer__.state.1.exp_avg_sq"),
                                "'__optimizer__.state.1.exp_avg_sq'.*not in the file"),
    "extra optimizer array": (set_item("__optimizer__.extra", np.zeros(2, np.float32)),
                              r"unexpected arrays \['__optimizer__.extra'\]"),
    "history edited": (lambda a: edit_training(a, lambda r: r["history"]["loss"].append(1.0)),
                       "history"),
    "step count edited": (lambda a: edit_training(
        a, lambda r: r["optimizer"]["state"]["0"].update(step=-3)), "step"),
    "hyper-parameter edited": (lambda a: edit_training(
        a, lambda r: r["optimizer"]["param_groups"][0].update(lr="fast")), "lr"),
    "random stream edited": (lambda a: edit_training(
        a, lambda r: r["random_layers"]["2"].update(seed="x")), "random state"),
}


def resume_from(path, files):
    model = small_model()
    opt = sn.Adam(model.parameters(), lr=1e-2)
    X, y = files["data"]
    before = model.state_dict()
    try:
        model.fit(X, y, opt, epochs=2, batch_size=8, seed=0, verbose=0, resume=path)
    finally:  # refused: nothing was changed
        for (name, a), b in zip(model.state_dict().items(), before.values()):
            np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.parametrize("kind", ["model", "checkpoint"])
@pytest.mark.parametrize("case", sorted(EDITS))
def test_hand_edited_files_are_refused(tmp_path, files, kind, case):
    change, message = EDITS[case]
    bad = tmp_path / f"edited-{kind}.npz"
    np.savez(bad, **change(arrays_of(files[kind])))
    with pytest.raises(sn.ModelFileError, match=message) as info:
        sn.load(bad)
    assert str(bad) in str(info.value)
    if kind == "checkpoint":  # an edited architecture is another one
        with pytest.raises(ValueError, match=f"{message}|another architecture"):
            resume_from(bad, files)


@pytest.mark.parametrize("case", sorted(CHECKPOINT_EDITS))
def test_hand_edited_checkpoints_are_refused(tmp_path, files, case):
    change, message = CHECKPOINT_EDITS[case]
    bad = tmp_path / "edited-ckpt.npz"
    np.savez(bad, **change(arrays_of(files["checkpoint"])))
    with pytest.raises(sn.ModelFileError, match=message) as info:
        resume_from(bad, files)
    assert str(bad) in str(info.value)


@pytest.mark.parametrize("kind", ["model", "checkpoint"])
def test_truncated_and_corrupted_files_are_refused(tmp_path, files, kind):
    data = files[kind].read_bytes()
    for cut in (10, len(data) // 2, len(data) - 1):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(data[:cut])
        with pytest.raises(sn.ModelFileError, match=f"cut{cut}.npz: not a readable"):
            sn.load(bad)
    # one byte changed inside an array's data: the zip's CRC tells
    weights = arrays_of(files[kind])["0.weight"].tobytes()
    flipped = bytearray(data)
    flipped[data.index(weights) + len(weights) // 2] ^= 0x40
    bad = tmp_path / "flipped.npz"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(sn.ModelFileError, match="flipped.npz: .*CRC"):
        sn.load(bad)


def with_member(path, new, member, data):
    """A copy of the .npz at path (as new) with member's bytes replaced by data."""
    with zipfile.ZipFile(path) as z, zipfile.ZipFile(new, "w") as out:
        for name in z.namelist():
            out.writestr(name, data if name == member else z.read(name))
    return new


def test_a_pickle_is_never_run(tmp_path, files):
    """A .npy member holding a pickle whose unpickling would run code."""
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('code ran')",))

    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.array([Boom()], dtype=object), allow_pickle=True)
    bad = with_member(files["model"], tmp_path / "pickled.npz", "0.bias.npy", buffer.getvalue())
    with pytest.raises(sn.ModelFileError, match="0.bias.*Python objects"):
        sn.load(bad)


def test_a_member_claiming_more_than_the_file_holds_is_refused(tmp_path, files):
    """A .npy header promising a huge array (a memory bomb) is refused
    before anything is allocated; so is a compressed member."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": "<f4", "fortran_order": False, "shape": (1 << 40,)})
    bad = with_member(files["model"], tmp_path / "huge.npz", "0.bias.npy", buffer.getvalue())
    with pytest.raises(sn.ModelFileError, match="0.bias.*claims shape"):
        sn.load(bad)
    squeezed = tmp_path / "squeezed.npz"
    np.savez_compressed(squeezed, **arrays_of(files["model"]))
    with pytest.raises(sn.ModelFileError, match="compressed"):
        sn.load(squeezed)


def test_a_model_file_is_not_a_checkpoint(files):
    with pytest.raises(sn.ModelFileError, match="model.npz: a model file, not a checkpoint"):
        resume_from(files["model"], files)
    assert repr(sn.load(files["checkpoint"])) == repr(small_model())  # the reverse works
