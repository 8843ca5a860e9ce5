"""The data-parallel training cases of test_distributed.py: each builds a
model, its data and fit's options; run as a script under mpiexec, every rank
trains each case named on the command line with distributed=True and saves
its state in OUT/<case>_<rank>.npz, which the test compares with the same
case trained in one process.

    mpiexec -n 2 python tests/mpi_cases.py OUT mlp cnn ..."""
import json
import os
import sys
import warnings

import numpy as np

import scratchnet as sn
from scratchnet import _fused
from scratchnet import distributed as dist

STEPS = 20  # optimizer steps of every case: 19 full batches and one of 1 row


def _data(rows, shape, classes, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, *shape)).astype(np.float32)
    return X, rng.integers(0, classes, rows)


def build(case, init_seed):
    """(model, optimizer, X, y, fit options) of a case; init_seed sets the
    initial weights (each rank passes its own: fit must send rank 0's)."""
    sn.manual_seed(init_seed)
    if case in ("mlp", "mlp_layers", "manual", "diverge", "diverge_layers"):
        batch = 32
        X, y = _data((STEPS - 1) * batch + 1, (12,), 4, 1)
        # the manual loop's shares draw no dropout masks of the global rows
        drop = (lambda p: []) if case == "manual" else (lambda p: [sn.Dropout(p)])
        model = sn.Sequential(sn.Dense(12, 32), sn.ReLU(), *drop(0.25), sn.Dense(32, 16),
                              sn.Tanh(), *drop(0.1), sn.Dense(16, 4))
        # SGD: its step (unlike Adam's) shows a gradient off by a factor,
        # e.g. shares not weighted by their rows or a sum not averaged
        opt = sn.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=case == "manual")
        validation = _data(37, (12,), 4, 2)
    elif case in ("cnn", "bn"):
        batch = 8
        X, y = _data((STEPS - 1) * batch + 1, (1, 8, 8), 3, 3)
        middle = [sn.BatchNorm2d(4)] if case == "bn" else []
        model = sn.Sequential(sn.RandomShift(1), sn.RandomFlip(), sn.Conv2D(1, 4, 3, padding=1),
                              *middle, sn.ReLU(), sn.MaxPool2D(2), sn.Flatten(),
                              sn.Dropout(0.2), sn.Dense(64, 3))
        opt = sn.SGD(model.parameters(), lr=0.05, momentum=0.9)
        validation = _data(11, (1, 8, 8), 3, 4)
    else:
        raise ValueError(f"unknown case {case!r}")
    options = dict(epochs=1, batch_size=batch, seed=7, verbose=0, validation=validation)
    return model, opt, X, y, options


def fused(case):
    """Whether the case trains through the C trainer (the others: layer by layer)."""
    return case == "mlp"


def manual_loop(model, opt, X, y, batch, ranks, rank):
    """The loop of a user of DistributedOptimizer: each rank its equal share
    of every batch (ranks must divide batch), local mean loss, the gradients
    averaged before the step. In one process (ranks 1) the plain loop."""
    loss = sn.CrossEntropy()
    for start in range(0, (len(X) // batch) * batch, batch):
        lo = start + rank * batch // ranks
        xb, yb = X[lo:lo + batch // ranks], y[lo:lo + batch // ranks]
        loss.forward(model.forward(xb, training=True), yb)
        model.backward(loss.backward())
        opt.step()


def run(case, out):
    rank = dist.rank()
    model, opt, X, y, options = build(case, init_seed=100 + rank)
    _fused.ENABLED = fused(case)
    history = {}
    if case == "manual":
        dist.broadcast_parameters(model)
        manual_loop(model, dist.DistributedOptimizer(opt), X, y, options["batch_size"],
                    dist.size(), rank)
    else:
        history = model.fit(X, y, opt, distributed=True, **options)
    state = model.state_dict()
    np.savez(os.path.join(out, f"{case}_{rank}.npz"), **state)
    kept = {k: v for k, v in history.items() if k != "time"}
    # the Python types of the values (np.float64 is a float that json takes too)
    kept["types"] = sorted({type(x).__name__ for v in kept.values() for x in v})
    with open(os.path.join(out, f"{case}_{rank}.json"), "w") as f:
        json.dump(kept, f)


def refusals(out):
    """The errors every rank must raise, the same on each, without a hang."""
    rank = dist.rank()
    messages = []
    model, opt, X, y, options = build("mlp", 0)
    try:
        model.fit(X, y, opt, **{**options, "batch_size": 1}, distributed=True)
    except ValueError as exc:
        messages.append(str(exc))
    # a model of another shape on rank 1
    other = sn.Sequential(sn.Dense(12, 32 + rank), sn.ReLU(), sn.Dense(32 + rank, 4))
    try:
        other.fit(X, y, sn.SGD(other.parameters(), lr=0.1), batch_size=32, distributed=True)
    except ValueError as exc:
        messages.append(str(exc))
    # the manual loop's allreduce over models of other sizes (it would read
    # and write past the smaller buffer), then of one size in other shapes
    # (12 values each: Dense(5, 2) and Dense(3, 3))
    for layer in (sn.Dense(12, 8 + rank), sn.Dense(5, 2) if rank == 0 else sn.Dense(3, 3)):
        try:
            dist.allreduce_gradients(sn.Sequential(layer))
        except ValueError as exc:
            messages.append(str(exc))
    # BatchNorm over a last batch of 3 rows: shares of 1 and 2, refused before any step
    norm = sn.Sequential(sn.Dense(12, 8), sn.BatchNorm1d(8), sn.ReLU(), sn.Dense(8, 4))
    before = norm[0].weight.data.copy()
    try:
        norm.fit(X[:67], y[:67], sn.SGD(norm.parameters(), lr=0.1), batch_size=64,
                 distributed=True, verbose=0)
    except ValueError as exc:
        messages.append(str(exc) if np.array_equal(norm[0].weight.data, before) else "moved")
    with open(os.path.join(out, f"refusals_{rank}.json"), "w") as f:
        json.dump(messages, f)


def diverge(case, out):
    """A row of batch 3 (unshuffled) that only rank 1 holds makes its outputs
    overflow: every rank must stop at that step, with the weights of step 2."""
    rank = dist.rank()
    model, opt, X, y, options = build(case, 0)
    _fused.ENABLED = case == "diverge"
    # overflows the first layer: row 20 of batch 3, in rank 1's share (rows 16..31)
    X[2 * 32 + 20] = 3e38
    where = None
    try:
        model.fit(X, y, opt, **{**options, "shuffle": False}, distributed=True)
    except sn.TrainingDivergedError as exc:
        where = [exc.epoch, exc.step]
    np.savez(os.path.join(out, f"{case}_{rank}.npz"), **model.state_dict())
    with open(os.path.join(out, f"{case}_{rank}.json"), "w") as f:
        json.dump(where, f)
    # the other two responses: the warnings they give, on each rank
    said = {}
    for mode in ("warn", "skip_batch"):
        model, opt, X, y, options = build(case, 0)
        X[2 * 32 + 20] = 3e38
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(X, y, opt, **{**options, "shuffle": False}, distributed=True,
                      on_nonfinite=mode)
        said[mode] = sum(issubclass(w.category, RuntimeWarning) for w in caught)
    with open(os.path.join(out, f"{case}_warnings_{rank}.json"), "w") as f:
        json.dump(said, f)


def resume(out):
    """One epoch with a checkpoint (rank 0 writes it), then a model with other
    weights resumed from it for the second epoch, on every rank."""
    rank = dist.rank()
    path = os.path.join(out, "run.ckpt")
    model, opt, X, y, options = build("mlp", 100 + rank)
    model.fit(X, y, opt, **options, checkpoint=path, distributed=True)
    model, opt, X, y, options = build("mlp", 200 + rank)
    model.fit(X, y, opt, **{**options, "epochs": 2}, resume=path, distributed=True)
    np.savez(os.path.join(out, f"resume_{rank}.npz"), **model.state_dict())


def raise_on_rank_1():
    """Rank 1 raises after the first epoch while rank 0 goes on training: the
    job must end with the error shown, not wait for rank 1 forever."""
    model, opt, X, y, options = build("mlp", 0)

    def callback(epoch, logs):
        if dist.rank() == 1:
            raise RuntimeError("boom on rank 1")

    model.fit(X, y, opt, **{**options, "epochs": 50}, callback=callback, distributed=True)


if __name__ == "__main__":
    out_dir, *cases = sys.argv[1:]
    for name in cases:
        if name == "refusals":
            refusals(out_dir)
        elif name == "raise":
            raise_on_rank_1()
        elif name == "resume":
            resume(out_dir)
        elif name.startswith("diverge"):
            diverge(name, out_dir)
        else:
            run(name, out_dir)
