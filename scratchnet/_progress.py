"""What fit shows while it trains, under the history's names (loss,
accuracy, val_loss, val_accuracy).

On a terminal: a progress bar per epoch, at most 80 columns wide, with the
running loss and accuracy, and a second line with the validation figures.
Elsewhere (a log file, CI), or with verbose=2: one plain line per epoch,
written when it ends, with no carriage-return redraws:
    epoch 3/10  loss 0.1234  accuracy 0.9612  val_loss 0.1301  val_accuracy 0.9598  1.2s
"""
import shutil
import sys

MAX_COLUMNS = 80
_TRAIN_KEYS = ("loss", "accuracy")
_VAL_KEYS = ("val_loss", "val_accuracy")
# the bar's layout: no rate or sample counts, so the figures fit in 80 columns
_BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar}| {elapsed}<{remaining}{postfix}"


def start_epoch(n, epoch, epochs, verbose):
    """The display of one epoch of n samples; verbose 0 shows nothing."""
    return EpochDisplay(n, f"epoch {epoch}/{epochs}", verbose, sys.stderr)


def _fields(logs, keys):
    """'loss 0.1234  accuracy 0.9612' for the keys that have a value."""
    return "  ".join(f"{k} {logs[k]:.4f}" for k in keys if logs.get(k) is not None)


def _is_terminal(stream):
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class EpochDisplay:
    def __init__(self, n, label, verbose, stream):
        self.label = label
        self.stream = stream if verbose else None
        self.bar = None
        if self.stream is not None and verbose != 2 and _is_terminal(stream):
            from tqdm import tqdm
            columns = min(shutil.get_terminal_size().columns, MAX_COLUMNS)
            self.bar = tqdm(total=n, desc=label, file=stream, ncols=columns, leave=True,
                            bar_format=_BAR_FORMAT, mininterval=0.2)

    def advance(self, count, seen, total, right, decisions):
        """count more samples done: seen so far, with summed loss total and
        right of decisions correct."""
        if self.bar is None:
            return
        logs = {"loss": total / seen if seen else None,
                "accuracy": right / decisions if decisions else None}
        self.bar.set_postfix_str(_fields(logs, _TRAIN_KEYS), refresh=False)
        self.bar.update(count)

    def close(self):
        """End the display of an epoch cut short (its figures are not shown)."""
        if self.bar is not None:
            self.bar.close()

    def end(self, history):
        """Show the epoch's figures, the last entries of history."""
        if self.stream is None:
            return
        logs = {k: v[-1] for k, v in history.items()}
        if self.bar is None:
            line = "  ".join(filter(None, (self.label, _fields(logs, _TRAIN_KEYS + _VAL_KEYS),
                                           f"{logs['time']:.1f}s")))
            print(line, file=self.stream, flush=True)
            return
        self.bar.set_postfix_str(_fields(logs, _TRAIN_KEYS), refresh=True)
        self.bar.close()
        validation = _fields(logs, _VAL_KEYS)
        if validation:
            line = " " * (len(self.label) + 1) + validation  # under the bar's figures
            if len(line) > self.bar.ncols:
                line = validation
            print(line, file=self.stream, flush=True)
