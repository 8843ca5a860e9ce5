"""Benchmarks: scratchnet side by side with NumPy and PyTorch, in one process.

Three tables: SGEMM speed (GFLOPS, each scratchnet result checked against a
float64 product); MNIST MLP training time per epoch plus inference speed,
each network written three ways with the same initial weights and data order;
and the MNIST CNN of issue 8 (scratchnet and PyTorch from the same weights),
training time per epoch extrapolated from timed steps, and batch-1 inference.

Every competitor is warmed up first; then all the rows of a table and all
three competitors take turns, round after round, each turn starting with a
moment of untimed calls, and each reports the median of its timed calls. On
a shared machine a slow spell then hits only a few of each one's rounds, and
a table says when other processes were busy while it was timed. NumPy and
PyTorch are only comparisons; PyTorch is skipped (with a note) when it
cannot be imported.

Used by benchmarks/bench_gemm.py, bench_mlp.py, bench_cnn.py and `scratchnet bench`.
"""
import argparse
import contextlib
import datetime
import itertools
import json
import math
import os
import platform
import statistics
import sys
import time
from collections import namedtuple

import numpy as np

from . import _core, datasets
from ._version import __version__
from ._random import manual_seed
from .layers import Dense, Flatten, ReLU
from .layers_conv import Conv2D
from .layers_pool import MaxPool2D
from .losses import CrossEntropy
from .model import Sequential
from .optimizers import SGD, Adam

SEED = 0
# Seconds of untimed calls before each turn. On a 2-core machine the threads
# the previous library leaves spinning slow the next one down (measured here:
# for up to ~0.1 s, calls up to 10x slower), whichever library it is.
SETTLE = 0.1
OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


# ---- timing ----

def run_for(fn, seconds):
    """Call fn until `seconds` have passed (at least once); returns each call's seconds."""
    durations = []
    end = time.perf_counter() + seconds
    while True:
        start = time.perf_counter()
        fn()
        now = time.perf_counter()
        durations.append(now - start)
        if now >= end:
            return durations


def interleaved(fns, rounds, block=0.0, settle=SETTLE, calls=None):
    """Time the callables in fns ({key: callable}) side by side.

    In each of `rounds` rounds each in turn first runs untimed for `settle`
    seconds (at least one call; the first time, this is its warm-up: fresh
    memory, caches, thread pools), then a block of timed calls: `calls` of
    them when given, else as many as fill `block` seconds, at least one.
    Returns {key: median seconds per call}."""
    counts = {}
    times = {key: [] for key in fns}
    for _ in range(rounds):
        for key, fn in fns.items():
            untimed = run_for(fn, settle)
            counts.setdefault(key, calls or max(1, math.ceil(block / statistics.median(untimed))))
            for _ in range(counts[key]):
                start = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - start)
    return {key: statistics.median(t) for key, t in times.items()}


# ---- environment ----

def import_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


@contextlib.contextmanager
def configured(threads, isa, torch):
    """Give all three libraries `threads` threads (and scratchnet the kernel
    `isa`, when given) until the block ends; yields notes on what could not
    be set."""
    notes = []
    with contextlib.ExitStack() as stack:
        stack.callback(_core.set_num_threads, _core.get_num_threads())
        _core.set_num_threads(threads)
        if isa:
            stack.callback(_core.set_isa, _core.get_isa())
            _core.set_isa(isa)
        if torch is not None:
            stack.callback(torch.set_num_threads, torch.get_num_threads())
            torch.set_num_threads(threads)
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            notes.append("threadpoolctl is not installed: NumPy's BLAS uses its default thread "
                         "count (OPENBLAS_NUM_THREADS / OMP_NUM_THREADS, else all cores)")
        else:
            stack.enter_context(threadpool_limits(limits=threads, user_api="blas"))
        yield notes


def environment_notes(torch):
    notes = []
    set_vars = [f"{name}={os.environ[name]}" for name in OPENBLAS_VARS if name in os.environ]
    if set_vars:
        notes.append(f"WARNING: {' '.join(set_vars)} is set, which can slow NumPy's OpenBLAS. "
                     f"For a fair comparison run with them unset: "
                     f"env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python ...")
    if torch is None:
        notes.append("PyTorch is not importable: its columns are skipped")
    return notes


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_sample():
    """(wall seconds, CPU seconds the whole machine used, CPU seconds this process
    used), or None where /proc/stat is missing."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]
    except OSError:
        return None
    busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # not idle, iowait
    own = os.times()
    return time.perf_counter(), busy, own.user + own.system


def others_share(start):
    """The share of all CPUs that other processes (or the hypervisor) used since
    `start`, a cpu_sample(): high values mean the timings were disturbed."""
    end = cpu_sample()
    if start is None or end is None:
        return None
    others = (end[1] - start[1]) - (end[2] - start[2])
    return round(max(0.0, others / ((end[0] - start[0]) * os.cpu_count())), 3)


def describe(threads, torch):
    return {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "cpu": cpu_name(), "cores": os.cpu_count(), "threads": threads,
            "scratchnet": __version__, "isa": _core.get_isa(), "numpy": np.__version__,
            "torch": torch.__version__ if torch is not None else None}


def positive_int(text):
    """An argparse type: a positive integer."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def speedup(seconds, other):
    """How many times faster scratchnet is than `other` (None when it did not run)."""
    return seconds[other] / seconds["scratchnet"] if other in seconds else None


def print_busy_note(share, file):
    """A warning when other processes took a noticeable share of the CPUs."""
    if share is not None and share >= 0.1:
        print(f"note: other processes used {100 * share:.0f}% of the CPUs while this table was "
              f"timed: its numbers are disturbed", file=file)


def cell(value, spec, width):
    return f"{'-' if value is None else format(value, spec):>{width}}"


def ratio(value):
    return cell(value, ".2f", 7) + ("x" if value is not None else " ")


# ---- GEMM ----

# C (m x n) = op(A) (m x k) @ op(B) (k x n); op is a transpose when trans_* is set
Shape = namedtuple("Shape", "label m k n trans_a trans_b", defaults=(False, False))


def square(*sizes):
    return [Shape(f"square {s}", s, s, s) for s in sizes]


MLP_SHAPES = [
    Shape("first layer forward X@W", 128, 784, 128),
    Shape("weight gradient X^T@dY", 784, 128, 128, trans_a=True),
    Shape("input gradient dY@W^T", 128, 128, 784, trans_b=True),
    Shape("batch 32 forward", 32, 784, 128),
    Shape("wide layer forward", 128, 784, 512),
    Shape("10000-image forward", 10000, 784, 128),
]
GEMM_SETTINGS = {
    "full": dict(shapes=square(256, 512, 1024, 2048) + MLP_SHAPES, repeat=7, block=0.1),
    "short": dict(shapes=square(512, 1024) + MLP_SHAPES[:3], repeat=5, block=0.05),
    "quick": dict(shapes=square(256) + MLP_SHAPES[:3], repeat=3, block=0.02),
}
# max |C - C64| / max |C64| for a correct float32 product of these sizes stays
# far below this; a wrong tile or index gives errors of order 1.
GEMM_TOLERANCE = 1e-4


def parse_shapes(text):
    """--sizes: '256,512,128x784x512' -> Shapes; N is N x N x N, MxKxN is (MxK) @ (KxN)."""
    shapes = []
    for item in text.replace(" ", "").split(","):
        dims = item.lower().split("x")
        if not item or len(dims) not in (1, 3) or not all(d.isdigit() and int(d) > 0
                                                          for d in dims):
            raise argparse.ArgumentTypeError(
                f"bad size {item!r}: give N or MxKxN with positive integers")
        if len(dims) == 1:
            shapes += square(int(dims[0]))
        else:
            shapes.append(Shape(item, *map(int, dims)))
    return shapes


def gemm_case(shape, torch):
    """Each competitor's call for one shape (each writes its own C), and a
    function giving the max relative error of scratchnet's C against float64."""
    rng = np.random.default_rng(SEED)
    ta, tb = shape.trans_a, shape.trans_b
    A = rng.standard_normal((shape.k, shape.m) if ta else (shape.m, shape.k), dtype=np.float32)
    B = rng.standard_normal((shape.n, shape.k) if tb else (shape.k, shape.n), dtype=np.float32)
    opA, opB = (A.T if ta else A), (B.T if tb else B)
    C = {name: np.empty((shape.m, shape.n), np.float32) for name in ("scratchnet", "numpy")}
    fns = {"scratchnet": lambda: _core.gemm(A, B, C["scratchnet"], trans_a=ta, trans_b=tb),
           "numpy": lambda: np.matmul(opA, opB, out=C["numpy"])}
    if torch is not None:
        tA, tB = torch.from_numpy(A), torch.from_numpy(B)
        tA, tB = (tA.T if ta else tA), (tB.T if tb else tB)
        tC = torch.empty(shape.m, shape.n)
        fns["torch"] = lambda: torch.mm(tA, tB, out=tC)

    def error():
        exact = opA.astype(np.float64) @ opB.astype(np.float64)
        return float(np.abs(C["scratchnet"] - exact).max() / np.abs(exact).max())
    return fns, error


def gemm_table(shapes, repeat, block, torch):
    """{"rows": one per shape, "other_cpu": the share of the CPUs other
    processes used meanwhile}. scratchnet's result of its last timed call is
    the one checked."""
    start = cpu_sample()
    cases = [gemm_case(shape, torch) for shape in shapes]
    seconds = interleaved({(i, name): fn for i, (fns, _) in enumerate(cases)
                           for name, fn in fns.items()}, repeat, block)
    rows = []
    for i, (shape, (fns, max_rel_error)) in enumerate(zip(shapes, cases)):
        error = max_rel_error()
        times = {name: seconds[i, name] for name in fns}
        rows.append({"shape": shape.label, "m": shape.m, "k": shape.k, "n": shape.n,
                     "trans_a": shape.trans_a, "trans_b": shape.trans_b,
                     "gflops": {name: 2.0 * shape.m * shape.n * shape.k / t / 1e9
                                for name, t in times.items()},
                     "speedup_vs_numpy": speedup(times, "numpy"),
                     "speedup_vs_torch": speedup(times, "torch"),
                     "max_rel_err": error, "ok": error <= GEMM_TOLERANCE})
    return {"rows": rows, "other_cpu": others_share(start)}


def print_gemm_table(table, repeat, file):
    print(f"\nSGEMM in GFLOPS (higher is better), median call over {repeat} rounds; "
          f"scratchnet's result checked against float64", file=file)
    print(f"{'shape':<27} {'M x K x N':>15} {'scratchnet':>10} {'numpy':>8} {'torch':>8} "
          f"{'vs numpy':>8} {'vs torch':>8} {'max rel err':>11}", file=file)
    for row in table["rows"]:
        g = row["gflops"]
        mkn = f"{row['m']}x{row['k']}x{row['n']}"
        print(f"{row['shape']:<27} {mkn:>15} {cell(g['scratchnet'], '.1f', 10)} "
              f"{cell(g['numpy'], '.1f', 8)} {cell(g.get('torch'), '.1f', 8)} "
              f"{ratio(row['speedup_vs_numpy'])} {ratio(row['speedup_vs_torch'])} "
              f"{row['max_rel_err']:>11.1e} {'ok' if row['ok'] else 'WRONG'}", file=file)
    print_busy_note(table["other_cpu"], file)


# ---- MNIST MLP ----

MlpRow = namedtuple("MlpRow", "label hidden batch optimizer")  # optimizer None: inference
MLP_ROWS = {
    "sgd-b128": MlpRow("784-128-10 batch 128 SGD momentum", (128,), 128, "sgd"),
    "sgd-b32": MlpRow("784-128-10 batch 32 SGD momentum", (128,), 32, "sgd"),
    "adam-b128": MlpRow("784-128-10 batch 128 Adam", (128,), 128, "adam"),
    "deep-sgd-b128": MlpRow("784-512-256-10 batch 128 SGD momentum", (512, 256), 128, "sgd"),
    "infer-b1": MlpRow("784-128-10 inference, batch 1", (128,), 1, None),
    "infer-b10000": MlpRow("784-128-10 inference, batch 10000", (128,), 10000, None),
}
OPTIMIZER_ARGS = {"sgd": dict(lr=0.1, momentum=0.9), "adam": dict(lr=1e-3)}
MLP_SETTINGS = {
    "full": dict(rows=tuple(MLP_ROWS), epochs=3, train_size=None, rounds=10),
    "quick": dict(rows=("sgd-b128", "infer-b1"), epochs=1, train_size=10_000, rounds=3),
}
INFERENCE_BLOCK = 0.02  # seconds of inference calls per competitor and row in a round


def parse_rows(text):
    """--rows: 'sgd-b128,infer-b1' -> keys of MLP_ROWS."""
    rows = [key for key in text.replace(" ", "").split(",") if key]
    unknown = [key for key in rows if key not in MLP_ROWS]
    if unknown or not rows:
        raise argparse.ArgumentTypeError(f"unknown rows {unknown}; choose from "
                                         f"{', '.join(MLP_ROWS)}")
    return rows


def initial_weights(sizes):
    """He-initialised float32 (weight (in, out), zero bias) pairs, the same for all three."""
    rng = np.random.default_rng(SEED)
    return [((rng.standard_normal((a, b)) * np.sqrt(2.0 / a)).astype(np.float32),
             np.zeros(b, np.float32)) for a, b in zip(sizes, sizes[1:])]


def epoch_order(n):
    """The shuffle of one epoch: what fit(seed=SEED) draws for a network without dropout."""
    return np.random.default_rng(SEED).permutation(n)


class ScratchnetMLP:
    def __init__(self, weights, optimizer, batch_size):
        layers = []
        for w, b in weights:
            dense = Dense(*w.shape)
            dense.weight.data[...] = w
            dense.bias.data[...] = b
            layers += [dense, ReLU()]
        self.model = Sequential(*layers[:-1])
        if optimizer:
            self.optimizer = {"sgd": SGD, "adam": Adam}[optimizer](
                self.model.parameters(), **OPTIMIZER_ARGS[optimizer])
        self.batch_size = batch_size

    def epoch(self, X, y):
        self.model.fit(X, y, optimizer=self.optimizer, epochs=1, batch_size=self.batch_size,
                       seed=SEED, verbose=0)

    def predict_proba(self, x):
        return self.model.predict_proba(x)

    def accuracy(self, X, y):
        return self.model.evaluate(X, y)["accuracy"]


def softmax_(z):
    """Row-wise softmax of z, in place."""
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


class NumpySGD:
    """torch.optim.SGD's rule with momentum: buf = momentum * buf + g; p -= lr * buf."""

    def __init__(self, params, lr, momentum):
        self.params, self.lr, self.momentum = params, lr, momentum
        self.buffers = None

    def step(self, grads):
        if self.buffers is None:
            self.buffers = [g.copy() for g in grads]
        else:
            for buf, g in zip(self.buffers, grads):
                buf *= self.momentum
                buf += g
        for p, buf in zip(self.params, self.buffers):
            p -= self.lr * buf


class NumpyAdam:
    """torch.optim.Adam's rule (bias-corrected moments, eps outside the root)."""

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8):
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, grads):
        self.t += 1
        b1, b2 = self.betas
        step_size = self.lr / (1 - b1 ** self.t)
        root_correction = math.sqrt(1 - b2 ** self.t)
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p -= step_size * m / (np.sqrt(v) / root_correction + self.eps)


class NumpyMLP:
    """A plain NumPy MLP: ReLU hidden layers, softmax cross-entropy, backprop."""

    def __init__(self, weights, optimizer, batch_size):
        self.layers = [(w.copy(), b.copy()) for w, b in weights]
        params = [p for layer in self.layers for p in layer]
        if optimizer:
            self.optimizer = {"sgd": NumpySGD, "adam": NumpyAdam}[optimizer](
                params, **OPTIMIZER_ARGS[optimizer])
        self.batch_size = batch_size

    def forward(self, x):
        """The input and every layer's output (logits last)."""
        outputs = [x]
        for i, (w, b) in enumerate(self.layers):
            z = outputs[-1] @ w
            z += b
            if i < len(self.layers) - 1:
                np.maximum(z, 0, out=z)
            outputs.append(z)
        return outputs

    def train_step(self, x, labels):
        outputs = self.forward(x)
        grad = softmax_(outputs[-1])  # d(mean loss)/d(logits) = (softmax - onehot) / batch
        grad[np.arange(len(labels)), labels] -= 1
        grad /= len(labels)
        grads = []
        for i in range(len(self.layers) - 1, -1, -1):
            grads[:0] = [outputs[i].T @ grad, grad.sum(axis=0)]
            if i > 0:
                grad = grad @ self.layers[i][0].T
                grad *= outputs[i] > 0
        self.optimizer.step(grads)

    def epoch(self, X, y):
        order = epoch_order(len(X))
        for start in range(0, len(X), self.batch_size):
            idx = order[start:start + self.batch_size]
            self.train_step(X[idx], y[idx])

    def predict_proba(self, x):
        return softmax_(self.forward(x)[-1])

    def accuracy(self, X, y):
        return float((self.predict_proba(X).argmax(axis=1) == y).mean())


class TorchMLP:
    """The idiomatic PyTorch loop."""

    def __init__(self, weights, optimizer, batch_size):
        import torch
        layers = []
        for w, b in weights:
            linear = torch.nn.Linear(*w.shape)
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(w.T))
                linear.bias.copy_(torch.from_numpy(b))
            layers += [linear, torch.nn.ReLU()]
        self.setup(torch, torch.nn.Sequential(*layers[:-1]), optimizer, batch_size)

    def setup(self, torch, model, optimizer, batch_size):
        self.torch = torch
        self.model = model.eval()  # epoch() and step() switch to train()
        self.loss_fn = torch.nn.CrossEntropyLoss()
        if optimizer:
            self.optimizer = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[optimizer](
                self.model.parameters(), **OPTIMIZER_ARGS[optimizer])
        self.batch_size = batch_size

    def epoch(self, X, y):
        X, y = self.torch.from_numpy(X), self.torch.from_numpy(y)
        order = self.torch.from_numpy(epoch_order(len(X)))
        self.model.train()
        for start in range(0, len(X), self.batch_size):
            idx = order[start:start + self.batch_size]
            self.optimizer.zero_grad()
            loss = self.loss_fn(self.model(X[idx]), y[idx])
            loss.backward()
            self.optimizer.step()

    def predict_proba(self, x):
        with self.torch.inference_mode():
            return self.torch.softmax(self.model(self.torch.from_numpy(x)), dim=1).numpy()

    def accuracy(self, X, y):
        self.model.eval()
        return float((self.predict_proba(X).argmax(axis=1) == y).mean())


def mlp_table(rows, epochs, train_size, rounds, torch):
    """{"rows": one per key in rows, "other_cpu": the share of the CPUs other
    processes used meanwhile}. The training rows' epochs take turns, then the
    inference rows' calls do."""
    start = cpu_sample()
    (X, y), (Xt, yt) = datasets.load_mnist()
    X, y = X[:train_size], y[:train_size]
    classes = {"scratchnet": ScratchnetMLP, "numpy": NumpyMLP}
    if torch is not None:
        classes["torch"] = TorchMLP
    nets = {}
    for key in rows:
        spec = MLP_ROWS[key]
        weights = initial_weights((X.shape[1], *spec.hidden, 10))
        for name, cls in classes.items():
            nets[key, name] = cls(weights, spec.optimizer, spec.batch)
    training = {k: net for k, net in nets.items() if MLP_ROWS[k[0]].optimizer}
    # one untimed epoch before each timed one: the same number for all, so they learn alike
    seconds = interleaved({k: (lambda net=net: net.epoch(X, y)) for k, net in training.items()},
                          rounds=epochs, settle=0.0)
    inference = {k: net for k, net in nets.items() if k not in training}
    seconds.update(interleaved({k: (lambda net=net, x=X[:MLP_ROWS[k[0]].batch]:
                                    net.predict_proba(x)) for k, net in inference.items()},
                               rounds=rounds, block=INFERENCE_BLOCK))
    return {"rows": [mlp_row(key, seconds, nets, (Xt, yt), list(classes)) for key in rows],
            "other_cpu": others_share(start)}


def mlp_row(key, seconds, nets, test, names):
    spec = MLP_ROWS[key]
    times = {name: seconds[key, name] for name in names}
    if spec.optimizer:
        unit, values = "s/epoch", times
        accuracy = {name: nets[key, name].accuracy(*test) for name in names}
    elif spec.batch == 1:
        unit, values, accuracy = "us/call", {n: t * 1e6 for n, t in times.items()}, None
    else:
        unit, values, accuracy = "images/s", {n: spec.batch / t for n, t in times.items()}, None
    row = {"row": key, "label": spec.label, "unit": unit}
    row.update({name: values.get(name) for name in ("scratchnet", "numpy", "torch")})
    row.update(speedup_vs_numpy=speedup(times, "numpy"), speedup_vs_torch=speedup(times, "torch"),
               accuracy=accuracy)
    return row


UNIT_FORMAT = {"s/epoch": ".3f", "us/call": ".1f", "images/s": ".0f"}


def percents(fractions, names, digits):
    """'98.12% / - / 97.90%': each name's fraction (- where it has none); '' for None."""
    if not fractions:
        return ""
    return " / ".join("-" if fractions.get(name) is None else f"{100 * fractions[name]:.{digits}f}%"
                      for name in names)


def print_mlp_table(table, epochs, train_size, file):
    images = train_size or 60_000
    print(f"\nMNIST MLP: training on {images} images, median of {epochs} timed epoch(s), each "
          f"after an untimed one (test accuracy after all {2 * epochs}); inference: median "
          f"call. vs > 1: scratchnet is faster", file=file)
    print(f"{'row':<38} {'unit':>8} {'scratchnet':>10} {'numpy':>9} {'torch':>9} "
          f"{'vs numpy':>8} {'vs torch':>8}  test accuracy sn / numpy / torch", file=file)
    for row in table["rows"]:
        spec = UNIT_FORMAT[row["unit"]]
        accuracy = percents(row["accuracy"], ("scratchnet", "numpy", "torch"), 2)
        print(f"{row['label']:<38} {row['unit']:>8} {cell(row['scratchnet'], spec, 10)} "
              f"{cell(row['numpy'], spec, 9)} {cell(row['torch'], spec, 9)} "
              f"{ratio(row['speedup_vs_numpy'])} {ratio(row['speedup_vs_torch'])}  {accuracy}",
              file=file)
    print_busy_note(table["other_cpu"], file)


# ---- MNIST CNN ----

CNN_LABEL = "conv5x5x32-pool-conv5x5x64-pool-128-10"
CNN_BATCH = 128
EPOCH_IMAGES = 60_000
CNN_SETTINGS = {  # timed training steps per library: rounds x calls
    "full": dict(rounds=8, calls=6, infer_rounds=10),
    "quick": dict(rounds=2, calls=2, infer_rounds=3),
}
CNN_FEED = 16  # distinct real batches the timed steps cycle through


def benchmark_cnn(seed=SEED):
    """Issue 8's benchmark network for (N, 1, 28, 28) images, He-initialised
    from seed: conv5x5x32 - ReLU - maxpool2 - conv5x5x64 - ReLU - maxpool2 -
    dense 1024->128 - ReLU - dense 10."""
    manual_seed(seed)
    return Sequential(Conv2D(1, 32, 5), ReLU(), MaxPool2D(2), Conv2D(32, 64, 5), ReLU(),
                      MaxPool2D(2), Flatten(), Dense(1024, 128), ReLU(), Dense(128, 10))


def training_flops(model, in_shape):
    """FLOPs of one training step per image, from the layer shapes: 2 per
    multiply-add of the convolutions' and dense layers' forward products,
    backward twice the forward (weight and input gradients) but only the
    weight gradient for the lowest layer with weights. Biases, pooling,
    activations, the loss and the optimizer are left out."""
    macs, lowest = 0, True
    for layer, out_shape in zip(model.layers, model._shapes(in_shape)):
        if isinstance(layer, Conv2D):
            forward = math.prod(out_shape) * layer.in_channels * math.prod(layer.kernel_size)
        elif isinstance(layer, Dense):
            forward = layer.in_features * layer.out_features
        else:
            continue
        macs += forward * (2 if lowest else 3)
        lowest = False
    return 2 * macs


class ScratchnetCNN:
    """What fit does for each batch: forward, loss, backward, Adam step."""

    def __init__(self, model):
        self.model = model
        self.optimizer = Adam(model.parameters(), **OPTIMIZER_ARGS["adam"])
        self.loss = CrossEntropy()

    def step(self, x, y):
        self.loss.forward(self.model.forward(x, training=True), y)
        self.model.backward(self.loss.backward())
        self.optimizer.step()

    def predict_proba(self, x):
        return self.model.predict_proba(x)


class TorchCNN(TorchMLP):
    """The same network in PyTorch, starting from a scratchnet model's weights."""

    def __init__(self, model, torch):
        nn = torch.nn
        layers = []
        for layer in model.layers:
            if isinstance(layer, Conv2D):
                t = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                              layer.stride, layer.padding)
                weight = layer.weight.data
            elif isinstance(layer, Dense):
                t = nn.Linear(layer.in_features, layer.out_features)
                weight = layer.weight.data.T  # scratchnet keeps (in, out)
            else:  # no weights
                layers.append(nn.MaxPool2d(layer.kernel_size, layer.stride)
                              if isinstance(layer, MaxPool2D)
                              else {ReLU: nn.ReLU, Flatten: nn.Flatten}[type(layer)]())
                continue
            with torch.no_grad():
                t.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
                t.bias.copy_(torch.from_numpy(layer.bias.data))
            layers.append(t)
        self.setup(torch, nn.Sequential(*layers), "adam", CNN_BATCH)

    def step(self, x, y):
        self.model.train()
        self.optimizer.zero_grad()
        self.loss_fn(self.model(x), y).backward()
        self.optimizer.step()


def numpy_sgemm_gflops(size=1024, rounds=3):
    """This machine's NumPy SGEMM rate for size^3, in GFLOPS (median call)."""
    fns, _ = gemm_case(square(size)[0], None)
    seconds = interleaved({"numpy": fns["numpy"]}, rounds, block=0.1)["numpy"]
    return 2.0 * size ** 3 / seconds / 1e9


def cnn_table(rounds, calls, infer_rounds, torch):
    """The benchmark network (benchmark_cnn), scratchnet and PyTorch from the
    same initial weights, trained with Adam on the same real MNIST batches:
    {"rows": training (s/epoch, extrapolated from rounds x calls timed steps)
    and batch-1 inference (us/call), "flops_per_image", "sgemm_gflops" (NumPy
    1024^3, measured here), "initial_max_diff" (the two networks' largest
    probability difference before training), "other_cpu"}."""
    start = cpu_sample()
    (X, y), _ = datasets.load_mnist(flatten=False)
    order = epoch_order(len(X))
    feed = [(X[idx], y[idx]) for idx in np.split(order[:CNN_FEED * CNN_BATCH], CNN_FEED)]
    model = benchmark_cnn()
    nets = {"scratchnet": ScratchnetCNN(model)}
    feeds = {"scratchnet": feed}
    if torch is not None:
        nets["torch"] = TorchCNN(model, torch)
        feeds["torch"] = [(torch.from_numpy(x), torch.from_numpy(t)) for x, t in feed]
    probe = feed[0][0][:32]
    first = {name: net.predict_proba(probe) for name, net in nets.items()}
    initial_max_diff = (float(np.abs(first["scratchnet"] - first["torch"]).max())
                        if "torch" in first else None)

    def trainer(name):
        batches = itertools.cycle(feeds[name])
        return lambda: nets[name].step(*next(batches))

    sgemm = numpy_sgemm_gflops()
    train = interleaved({name: trainer(name) for name in nets}, rounds, calls=calls)
    one = feed[0][0][:1]
    infer = interleaved({name: (lambda net=net: net.predict_proba(one))
                         for name, net in nets.items()}, infer_rounds, block=INFERENCE_BLOCK)
    flops = training_flops(model, (1, 28, 28))
    epoch = {name: t * EPOCH_IMAGES / CNN_BATCH for name, t in train.items()}
    rows = [
        {"row": "cnn-adam-b128", "label": f"training, batch {CNN_BATCH}, Adam",
         "unit": "s/epoch", **{name: epoch.get(name) for name in ("scratchnet", "torch")},
         "speedup_vs_torch": speedup(train, "torch"),
         "sgemm_share": {name: flops * EPOCH_IMAGES / t / 1e9 / sgemm
                         for name, t in epoch.items()}},
        {"row": "cnn-infer-b1", "label": "inference, batch 1", "unit": "us/call",
         **{name: infer[name] * 1e6 if name in infer else None
            for name in ("scratchnet", "torch")},
         "speedup_vs_torch": speedup(infer, "torch"), "sgemm_share": None},
    ]
    return {"rows": rows, "steps_timed": rounds * calls, "flops_per_image": flops,
            "sgemm_gflops": sgemm, "initial_max_diff": initial_max_diff,
            "other_cpu": others_share(start)}


def print_cnn_table(table, file):
    print(f"\nMNIST CNN {CNN_LABEL}, same initial weights and real batches: training time per "
          f"{EPOCH_IMAGES:,}-image epoch EXTRAPOLATED from the median of "
          f"{table['steps_timed']} timed steps of batch {CNN_BATCH} (x {EPOCH_IMAGES}/"
          f"{CNN_BATCH}); inference: median call. vs torch > 1: scratchnet is faster",
          file=file)
    print(f"{'row':<26} {'unit':>8} {'scratchnet':>10} {'torch':>9} {'vs torch':>8}  "
          f"share of NumPy SGEMM sn / torch", file=file)
    for row in table["rows"]:
        spec = UNIT_FORMAT[row["unit"]]
        share = percents(row["sgemm_share"], ("scratchnet", "torch"), 0)
        print(f"{row['label']:<26} {row['unit']:>8} {cell(row['scratchnet'], spec, 10)} "
              f"{cell(row['torch'], spec, 9)} {ratio(row['speedup_vs_torch'])}  {share}",
              file=file)
    diff = table["initial_max_diff"]
    print(f"training: {table['flops_per_image'] / 1e6:.1f} MFLOP per image (forward convolution "
          f"and dense multiply-adds x 2, backward 2x forward, no input gradient for the first "
          f"layer); NumPy SGEMM 1024^3 here: {table['sgemm_gflops']:.1f} GFLOPS"
          + ("" if diff is None else f"; initial outputs differ by at most {diff:.1e}"),
          file=file)
    print_busy_note(table["other_cpu"], file)


# ---- the driver ----

def run(gemm=None, mlp=None, cnn=None, threads=2, isa=None, as_json=False, file=None):
    """Run the GEMM table (settings as in GEMM_SETTINGS), the MLP table (as in
    MLP_SETTINGS) and the CNN table (as in CNN_SETTINGS), those given, and
    print them to file (default stdout), as text or as one JSON object.
    Returns 0, or 1 when a scratchnet GEMM result was wrong."""
    file = file or sys.stdout
    torch = import_torch()
    with configured(threads, isa, torch) as thread_notes:
        notes = environment_notes(torch) + thread_notes
        result = {"config": describe(threads, torch), "notes": notes}
        if as_json:
            for note in notes:
                print(f"note: {note}", file=sys.stderr)
        else:
            print_header(result, file)
        if gemm:
            result["gemm"] = gemm_table(torch=torch, **gemm)
            if not as_json:
                print_gemm_table(result["gemm"], gemm["repeat"], file)
        if mlp:
            result["mlp"] = mlp_table(torch=torch, **mlp)
            if not as_json:
                print_mlp_table(result["mlp"], mlp["epochs"], mlp["train_size"], file)
        if cnn:
            result["cnn"] = cnn_table(torch=torch, **cnn)
            if not as_json:
                print_cnn_table(result["cnn"], file)
    if as_json:
        print(json.dumps(result, indent=1), file=file)
    wrong = [row["shape"] for row in result.get("gemm", {"rows": []})["rows"] if not row["ok"]]
    if wrong:
        print(f"scratchnet GEMM gave WRONG results for: {', '.join(wrong)}", file=sys.stderr)
    return 1 if wrong else 0


def print_header(result, file):
    c = result["config"]
    print(f"scratchnet {c['scratchnet']} benchmark, {c['date']}, {c['cpu']} ({c['cores']} cores):"
          f" {c['threads']} threads, kernel {c['isa']}; numpy {c['numpy']}, "
          f"torch {c['torch'] or '(none)'}", file=file)
    for note in result["notes"]:
        print(f"note: {note}", file=file, flush=True)


def cli(quick=False, as_json=False, threads=2):
    """`scratchnet bench`: a few GEMM shapes and the quick MLP and CNN settings."""
    return run(gemm=GEMM_SETTINGS["quick" if quick else "short"], mlp=MLP_SETTINGS["quick"],
               cnn=CNN_SETTINGS["quick"], threads=threads, as_json=as_json)
