"""What fit does when training goes wrong or is stopped: Ctrl-C (SIGINT),
and a loss or gradient that is not finite (see Sequential.fit)."""
import math
import signal
import threading

import numpy as np

NONFINITE_MODES = ("raise", "warn", "skip_batch")


class TrainingDivergedError(FloatingPointError):
    """fit met a loss or a gradient that is NaN or infinite (on_nonfinite="raise").
    The step that met it was not applied. .epoch and .step (both from 1) say where."""

    def __init__(self, message, epoch, step):
        super().__init__(message)
        self.epoch, self.step = epoch, step


class Interrupts:
    """Ctrl-C during fit, as a context: the first SIGINT is only noted
    (requested), so fit stops at the next step boundary with nothing done
    half-way; a second one raises KeyboardInterrupt at once. Only where
    Python's default handler is in place, in the main thread: a handler of
    the user's own (or SIGINT ignored) is left alone."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


class EpochTally:
    """One epoch's sums, and why it ended early if it did: failed is the step
    (from 1) whose loss or gradient was not finite, interrupted a Ctrl-C."""

    def __init__(self):
        self.total, self.right, self.decisions, self.samples = 0.0, 0, 0, 0
        self.skipped = []  # steps not applied (on_nonfinite="skip_batch")
        self.failed, self.problem, self.interrupted = None, None, False

    def add(self, total, right, decisions, samples):
        self.total += total
        self.right += right
        self.decisions += decisions
        self.samples += samples

    def add_onto(self, total, right, decisions, samples):
        """As add, but total is the loss sum itself, made by adding the new
        losses onto this tally's (the C trainer's runs): an epoch's sum is
        then the same bits however the epoch was cut into runs."""
        self.add(0.0, right, decisions, samples)
        self.total = total

    def nonfinite(self, step, problem, skip):
        """Step met a non-finite value; returns whether the epoch goes on."""
        if skip:
            self.skipped.append(step)
            return True
        self.failed, self.problem = step, problem
        return False


def nonfinite_problem(gradients):
    """What was not finite, for a step whose loss or gradient was not: the
    first named gradient that is not, else the loss."""
    for name, grad in gradients:
        if not np.isfinite(grad).all():
            return f"the gradient of {name} is not finite (NaN or inf)"
    return "the loss is not finite (NaN or inf)"


def divergence_message(epoch, step, steps, problem, lr, X, saved, unfinite_weight=None):
    """The error of a diverged fit: where, what, what was kept, the likely
    causes. unfinite_weight: the name of a weight that is not finite (an
    earlier update overflowed though its gradient was finite), else None."""
    low, high = float(np.min(X)), float(np.max(X))
    scale = (f"inputs not scaled (X ranges over {low:g} to {high:g}: scale it to about "
             f"[0, 1] or standardise it)" if max(abs(low), abs(high)) > 10 else
             "inputs not scaled (scale X to about [0, 1] or standardise it)")
    rate = f"lr {lr:g} now" if math.isfinite(lr) else "lr"
    kept = f"; {saved[0]} holds epoch {saved[1]}" if saved and saved[1] else ""
    weights = (": the weights are those of the last finite step" if unfinite_weight is None
               else f", but an earlier step's update had already made {unfinite_weight} not "
               "finite (NaN or inf)")
    return (f"fit: training diverged in epoch {epoch}, step {step} of {steps}: {problem}. "
            f"That step was not applied{weights}{kept}. Likely causes: a learning rate too "
            f"high ({rate}: try a tenth) or {scale}")


def skipped_message(epoch, steps, skipped):
    shown = ", ".join(map(str, skipped[:10])) + (" ..." if len(skipped) > 10 else "")
    return (f"fit: epoch {epoch}: skipped {len(skipped)} of {steps} steps whose loss or "
            f"gradient was not finite (steps {shown}); a learning rate too high or unscaled "
            f"inputs are the likely causes")


def interrupted_message(epoch, epochs, saved, partway=True):
    """The one line fit prints when Ctrl-C stopped it in epoch (of epochs);
    epoch = epochs + 1: after the last one was complete; partway: epoch had
    taken steps (a Ctrl-C in a callback at the end of the epoch before
    stops it before any)."""
    if epoch > epochs:
        where = f"fit: interrupted after the last epoch ({epochs} of {epochs}) was complete"
    elif not partway:
        where = f"fit: interrupted after epoch {epoch - 1} of {epochs} was complete"
    else:
        where = f"fit: interrupted in epoch {epoch} of {epochs}"
    # the steps of the epoch under way stay in the model: say so
    steps = (f" (the model in memory holds epoch {epoch}'s steps so far)"
             if epoch <= epochs and partway else "")
    if saved is None:
        return (f"{where}; nothing was saved (checkpoint=PATH keeps the last complete epoch; "
                f"scratchnet train --checkpoint PATH){steps}")
    path, done = saved
    return (f"{where}; {path} holds epoch {done}: to continue, pass resume={str(path)!r} to "
            f"fit{steps}")
