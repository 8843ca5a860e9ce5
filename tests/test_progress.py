"""What fit shows while it trains: a progress bar that fits 80 columns on a
terminal, one plain line per epoch elsewhere (log files, CI)."""
import io
import re
import sys

import numpy as np
import pytest

import scratchnet as sn
from test_model import blobs, small_model

# every test here runs on both paths: the fused C network and layer by layer
pytestmark = pytest.mark.usefixtures("training_path")

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def screen_lines(text):
    """Every state a terminal line goes through: the pieces between \\r and \\n."""
    return [ANSI.sub("", piece) for piece in re.split(r"[\r\n]", text)]


def fit_blobs(verbose, epochs=3, loss=None, validate=False):
    X, y = blobs(n=120)
    model = small_model()
    if loss is not None:  # a regression: one-hot targets under MSE, no accuracy
        y = np.eye(3, dtype=np.float32)[y]
    return model.fit(X, y, optimizer=sn.Adam(model.parameters()), epochs=epochs,
                     batch_size=16, verbose=verbose, loss=loss,
                     validation=(X[90:], y[90:]) if validate else None)


def test_not_a_terminal_one_plain_line_per_epoch(capfd):
    history = fit_blobs(verbose=1, validate=True)
    out, err = capfd.readouterr()
    assert out == "" and "\r" not in err
    lines = err.splitlines()
    assert len(lines) == 3
    for i, line in enumerate(lines):
        assert line.startswith(f"epoch {i + 1}/3  ")
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert f"  {key} {history[key][i]:.4f}" in line, key
        assert re.search(r"  \d+\.\ds$", line)


def test_plain_lines_leave_out_what_there_is_not(capfd):
    fit_blobs(verbose=1, epochs=2, loss=sn.MSE())
    lines = capfd.readouterr().err.splitlines()
    assert len(lines) == 2
    assert all(" loss " in line and "accuracy" not in line and "val_" not in line
               for line in lines)


def test_verbose_2_gives_plain_lines_even_on_a_terminal(monkeypatch):
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    fit_blobs(verbose=2, epochs=2)
    text = terminal.getvalue()
    assert "\r" not in text and len(text.splitlines()) == 2


def test_on_a_terminal_the_bar_fits_80_columns_and_uses_the_history_names(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # a wide terminal: the bar still keeps to 80
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    history = fit_blobs(verbose=1, epochs=2, validate=True)
    lines = screen_lines(terminal.getvalue())
    assert max(len(line) for line in lines) <= 80
    for i in range(2):
        bar = [line for line in lines if line.startswith(f"epoch {i + 1}/2 100%")][-1]
        assert f" loss {history['loss'][i]:.4f}" in bar
        assert f"  accuracy {history['accuracy'][i]:.4f}" in bar
    val_lines = [line for line in lines if "val_loss" in line]
    assert len(val_lines) == 2
    for i, line in enumerate(val_lines):
        assert f"val_loss {history['val_loss'][i]:.4f}" in line
        assert f"val_accuracy {history['val_accuracy'][i]:.4f}" in line


@pytest.mark.parametrize("columns", [200, 60])
def test_a_long_epoch_label_and_large_losses_still_fit(monkeypatch, columns):
    from scratchnet import _progress

    monkeypatch.setenv("COLUMNS", str(columns))
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    display = _progress.start_epoch(60000, 100, 100, verbose=1)
    display.advance(30000, 30000, 123.4567 * 30000, 29000, 30000)
    display.advance(30000, 60000, 123.4567 * 60000, 58000, 60000)
    history = {"loss": [123.4567], "accuracy": [58000 / 60000], "val_loss": [99.9],
               "val_accuracy": [0.5], "lr": [1e-3], "time": [1.0]}
    display.end(history)
    lines = screen_lines(terminal.getvalue())
    assert max(len(line) for line in lines) <= min(columns, 80)
    last_bar = [line for line in lines if line.startswith("epoch 100/100")][-1]
    if columns >= 80:
        assert last_bar.endswith(" loss 123.4567  accuracy 0.9667")
    val_line = [line for line in lines if "val_loss" in line]
    assert val_line and val_line[0].endswith("val_loss 99.9000  val_accuracy 0.5000")
