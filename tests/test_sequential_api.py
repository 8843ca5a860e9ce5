"""Sequential as a container: summary, len / indexing / slicing / iteration,
named_parameters, state_dict and load_state_dict."""
from collections import OrderedDict

import numpy as np
import pytest

import scratchnet as sn
from test_model import blobs, small_model

# every test here runs on both paths: the fused C network and layer by layer
pytestmark = pytest.mark.usefixtures("training_path")


def mnist_mlp():
    return sn.Sequential(sn.Dense(784, 256, seed=0), sn.ReLU(), sn.Dense(256, 10, seed=1))


def test_summary_prints_and_returns_a_table(capsys):
    text = mnist_mlp().summary()
    assert capsys.readouterr().out.strip() == text.strip()
    rows = text.splitlines()
    dense0 = next(r for r in rows if "Dense(784, 256" in r)
    assert "(None, 256)" in dense0 and "200,960" in dense0
    relu = next(r for r in rows if "ReLU" in r)
    assert "(None, 256)" in relu and relu.rstrip().endswith(" 0")
    dense1 = next(r for r in rows if "Dense(256, 10" in r)
    assert "(None, 10)" in dense1 and "2,570" in dense1
    assert "Total params: 203,530" in text and "Trainable params: 203,530" in text
    assert all(len(r) <= 80 for r in rows)


def test_summary_shows_unknown_shapes_as_question_marks():
    # no Dense: the input width is unknown, and so is every identity layer's output
    text = sn.Sequential(sn.ReLU(), sn.Dropout(0.5)).summary(print_fn=None)
    rows = [r for r in text.splitlines() if "ReLU" in r or "Dropout" in r]
    assert len(rows) == 2 and all("(None, ?)" in r for r in rows)
    assert "Total params: 0" in text


def test_len_indexing_slicing_iteration():
    model = small_model(dropout=0.1)
    assert len(model) == 4
    assert model[0] is model.layers[0] and model[-1] is model.layers[-1]
    assert list(model) == model.layers
    head = model[:2]
    assert isinstance(head, sn.Sequential) and head.layers == model.layers[:2]
    assert head[0] is model[0]  # shared, not copied
    with pytest.raises(IndexError):
        model[4]
    with pytest.raises(TypeError, match="str"):
        model["0"]


def test_slicing_leaves_the_original_models_parameter_names_alone(tmp_path):
    model = small_model()
    tail = model[2:]
    assert [n for n, _ in tail.named_parameters()] == ["0.weight", "0.bias"]
    assert [n for n, _ in model.named_parameters()][2:] == ["2.weight", "2.bias"]
    model.save(tmp_path / "m.npz")
    X, _ = blobs(n=20)
    np.testing.assert_array_equal(sn.load(tmp_path / "m.npz").predict_logits(X),
                                  model.predict_logits(X))


def test_named_parameters():
    model = small_model()
    pairs = model.named_parameters()
    assert [n for n, _ in pairs] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert [p for _, p in pairs] == model.parameters()
    assert pairs[0][1] is model.layers[0].weight


def test_state_dict_is_an_ordered_copy():
    model = small_model()
    state = model.state_dict()
    assert isinstance(state, OrderedDict)
    assert list(state) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    np.testing.assert_array_equal(state["0.weight"], model.layers[0].weight.data)
    state["0.weight"][...] = 7.0
    assert not (model.layers[0].weight.data == 7.0).any()


def test_load_state_dict_copies_in_place():
    X, y = blobs(n=100)
    source, target = small_model(seed=0), small_model(seed=10)
    arrays = [p.data for p in target.parameters()]
    opt = sn.Adam(target.parameters(), lr=1e-2)
    target.predict_logits(X)  # builds the compiled network, which points at the arrays
    target.load_state_dict(source.state_dict())
    assert [p.data for p in target.parameters()] == arrays  # same buffers, new values
    for a, b in zip(arrays, source.parameters()):
        assert a is not b.data
        np.testing.assert_array_equal(a, b.data)
    np.testing.assert_array_equal(target.predict_logits(X), source.predict_logits(X))
    target.fit(X, y, optimizer=opt, epochs=1, verbose=0)  # the optimizer still drives them
    assert not np.array_equal(target.layers[0].weight.data, source.layers[0].weight.data)


def test_load_state_dict_strict_false_and_a_list_of_pairs():
    """strict=False (PyTorch's) copies the names present and passes over the
    others; both forms return (missing_keys, unexpected_keys). A list of
    (name, array) pairs was refused with "unhashable type: 'numpy.ndarray'"."""
    model, other = small_model(), small_model()
    other.layers[0].weight[...] = 0.5
    state = {k: v for k, v in other.state_dict().items() if k.startswith("0.")}
    state["9.weight"] = np.zeros(1, np.float32)
    kept = model.state_dict()
    result = model.load_state_dict(state, strict=False)
    assert result.missing_keys == [k for k in kept if not k.startswith("0.")]
    assert result.unexpected_keys == ["9.weight"]
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, state[name] if name in state else kept[name])
    assert model.load_state_dict(other.state_dict()) == ([], [])
    with pytest.raises(TypeError, match="expected a dict of name -> array"):
        model.load_state_dict(list(other.state_dict().items()))


def test_load_state_dict_refuses_bad_keys_and_shapes():
    model = small_model()
    before = model.state_dict()
    state = model.state_dict()
    del state["2.bias"]
    state["3.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"missing.*2\.bias.*unexpected.*3\.weight"):
        model.load_state_dict(state)
    state = model.state_dict()
    state["0.weight"] = np.ones((8, 16), np.float32)
    state["2.weight"] = np.zeros((3, 16), np.float32)
    with pytest.raises(ValueError, match=r"2\.weight.*shape \(3, 16\).*\(16, 3\)"):
        model.load_state_dict(state)
    # nothing was copied, not even the valid 0.weight
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name])
