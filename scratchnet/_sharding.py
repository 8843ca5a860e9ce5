"""What Sequential.fit(..., distributed=True) does on each rank (see
scratchnet.distributed for the API and the set-up).

The math: every rank walks the same shuffled order (the shared seed) in
global batches of batch_size rows. Rank r of R holds rows [r B // R,
(r + 1) B // R) of a batch of B rows (shares differ by at most one row; in
a last batch with fewer rows than ranks some hold none). Its loss is its
rows' sum over B, not its own rows' mean, so the ranks' gradients sum
(one allreduce) to the gradient of the global batch's mean: the row-weighted
average of the ranks' means. Every rank then takes the same optimizer step
from the same weights, and stays equal to a one-process run with the same
global batch up to float32 rounding (sums in another order). Dropout and
augmentation draws are keyed by the row of the global batch, not of the
share, so the masks do not depend on the number of ranks.

BatchNorm normalises each rank's share with that share's statistics (as
PyTorch's DistributedDataParallel does without SyncBatchNorm), so a model
with BatchNorm does depend on the number of ranks; its running statistics
are averaged over the ranks at the end of every epoch, so all ranks evaluate
and save the same model."""
import numpy as np

from . import _core, distributed
from .layers import RandomStream


def share(rows, rank, size):
    """[lo, hi): rank's contiguous share of a batch of rows rows."""
    return rank * rows // size, (rank + 1) * rows // size


class Shard:
    """This rank's part in one data-parallel fit of model."""

    def __init__(self, model):
        self.comm = distributed.init()
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.main = self.rank == 0
        self.model = model
        self.flat = distributed.flat_gradients(model.parameters())
        self._mpi = distributed._mpi()

    def check(self, where, **settings):
        """ValueError on every rank unless every rank passed equal settings."""
        distributed._check_same_everywhere(self.comm, "the settings " + ", ".join(settings),
                                           tuple(settings.values()), where)

    def shared_seed(self, seed):
        """seed, or (None: each rank would draw its own) rank 0's fresh one."""
        if seed is not None:
            return seed
        return self.comm.bcast(int(np.random.SeedSequence().entropy) % 2**63
                               if self.main else None, root=0)

    # ---- the layer-by-layer path: one global batch at a time ----

    def rows_of(self, idx):
        """(this rank's rows of the global batch idx, its first row there)."""
        lo, hi = share(len(idx), self.rank, self.size)
        return idx[lo:hi], lo

    def no_rows(self):
        """This rank holds none of the batch: its gradient is 0, and the
        random layers advance as the ranks that ran a forward pass did."""
        self.flat[...] = 0.0
        for layer in self.model.layers:
            if isinstance(layer, RandomStream):
                layer.skip_call()

    def reduce(self, batch=None, ok=True):
        """Sum the ranks' gradients in place, in one allreduce of the flat
        buffer (the C trainer's hook, which then checks the sum is finite).
        ok False: this rank's gradients are not valid (its outputs or loss
        were not finite); a NaN makes the sum fail on every rank, so all
        stop at the same step. batch: unused (the C trainer passes it)."""
        if not ok:
            self.flat[0] = np.nan
        self.comm.Allreduce(self._mpi.IN_PLACE, self.flat, op=self._mpi.SUM)

    def reduce_finite(self, ok=True):
        """reduce(), then whether the sum is finite (the same on every rank)."""
        self.reduce(ok=ok)
        return _core.all_finite(self.flat)

    # ---- the fused C trainer: whole runs of global batches ----

    def plan(self, order, batch_size):
        """For a run of global batches (order, batch_size rows each but the
        last): (this rank's rows in run order, and per batch its row count,
        its first row in the global batch and the global batch's rows)."""
        n = len(order)
        starts = np.arange(0, n, batch_size, dtype=np.int64)
        rows = np.minimum(batch_size, n - starts)
        first = self.rank * rows // self.size
        mine = (self.rank + 1) * rows // self.size - first
        position = np.arange(n, dtype=np.int64) - np.repeat(starts, rows)
        batch_of = np.repeat(np.arange(len(starts)), rows)
        keep = (position >= first[batch_of]) & (position < (first + mine)[batch_of])
        return np.ascontiguousarray(order[keep]), mine, first, rows

    # ---- after each epoch ----

    def sums(self, *values):
        """The sums over the ranks of a few numbers, as Python floats (summed
        in float64; history and evaluate() hold plain numbers, as in one
        process)."""
        buf = np.array(values, np.float64)
        self.comm.Allreduce(self._mpi.IN_PLACE, buf, op=self._mpi.SUM)
        return buf.tolist()

    def reduce_tally(self, tally):
        """The epoch's loss and accuracy sums over every rank's rows."""
        tally.total, right, decisions, samples = self.sums(tally.total, tally.right,
                                                           tally.decisions, tally.samples)
        tally.right, tally.decisions, tally.samples = int(right), int(decisions), int(samples)

    def average_buffers(self):
        """BatchNorm's running statistics: the mean over the ranks (each
        rank's came from its own shares)."""
        buffers = [a for _, a in self.model.named_buffers()]
        if not buffers:
            return
        flat = np.concatenate([a.reshape(-1) for a in buffers]).astype(np.float32, copy=False)
        self.comm.Allreduce(self._mpi.IN_PLACE, flat, op=self._mpi.SUM)
        _core.scale(flat, 1.0 / self.size)
        offset = 0
        for a in buffers:
            a[...] = flat[offset:offset + a.size].reshape(a.shape)
            offset += a.size

    def evaluate(self, Xv, yv, loss):
        """evaluate() over the ranks' shares of the validation rows, summed:
        the same result on every rank."""
        lo, hi = share(Xv.shape[0], self.rank, self.size)
        loss_sum, right, decisions = 0.0, 0, 0
        if hi > lo:
            outputs = self.model._outputs(Xv[lo:hi])
            loss = loss.fresh()
            loss_sum = loss.forward(outputs, yv[lo:hi]) * (hi - lo)
            right, decisions = loss.correct(outputs, yv[lo:hi]) or (0, 0)
        loss_sum, right, decisions = self.sums(loss_sum, right, decisions)
        result = {"loss": loss_sum / Xv.shape[0]}
        if decisions:
            result["accuracy"] = right / decisions
        return result


class SharedInterrupts:
    """Ctrl-C seen by any rank stops every rank at the same step: each
    reading of requested is one small allreduce (MAX) over the ranks; fit
    reads it at the same points on every rank."""

    def __init__(self, interrupts, shard):
        self.interrupts, self.shard = interrupts, shard

    @property
    def requested(self):
        flag = np.array([self.interrupts.requested], np.int32)
        self.shard.comm.Allreduce(self.shard._mpi.IN_PLACE, flag, op=self.shard._mpi.MAX)
        return bool(flag[0])
