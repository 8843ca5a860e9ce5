# A whole MLP as one C object: Sequential.fit hands it runs of batches and
# predict hands it inputs, one C call each. It points into the parameter,
# gradient and optimizer-state arrays it was built from and keeps them alive.
#
# Threads: predict may be called from several threads at once. It runs in
# the object's own inference workspace when that is free, and in a workspace
# of its own for the call when another thread holds it (the test-and-set of
# `busy` happens with the GIL held, so it is atomic). train is not for
# concurrent use (Sequential.fit holds the model's lock).

from libc.stdlib cimport calloc, free
from libc.string cimport memset

ACTIVATIONS = {"none": SN_ACT_NONE, "relu": SN_ACT_RELU, "leaky_relu": SN_ACT_LEAKY_RELU,
               "sigmoid": SN_ACT_SIGMOID, "tanh": SN_ACT_TANH}
OPTIMIZER_KINDS = {"sgd": SN_OPT_SGD, "adagrad": SN_OPT_ADAGRAD, "rmsprop": SN_OPT_RMSPROP,
                   "adam": SN_OPT_ADAM, "adamw": SN_OPT_ADAMW}


cdef float *_fptr(a, str name, Py_ssize_t n) except? NULL:
    """Pointer to a C-contiguous float32 array of n elements (None -> NULL)."""
    if a is None:
        return NULL
    cdef float[::1] v = _flat(a, "MLP", name, True)
    _same_size("MLP", n, v.shape[0], name)
    return &v[0]


from scratchnet._lines import empty_on_lines as _empty_on_lines  # why: see there
from scratchnet._lines import zeros_on_lines as _zeros_on_lines


cdef int _mlp_rows(const void *net, float *out, const float *X, int64_t n, int softmax,
                   float *work, int64_t rows) noexcept nogil:
    return sn_mlp_forward_f32(<const sn_mlp *>net, out, X, n, softmax, work, rows)


cdef class TeamChoice:
    """Whether the C trainer's steps run on the threads or alone, as its
    timing left it (sn_team_choice, sn_mlp.c). An MLP makes its own, or
    carries on one given: a model trained by fit after fit (the same layers
    and batch size) keeps its choice and its timing's schedule, instead of
    timing 8 steps alone again at every fit."""
    cdef sn_team_choice team

    def __cinit__(self):
        memset(&self.team, 0, sizeof(self.team))

    @property
    def count(self):
        """Full steps since the last timing began."""
        return self.team.count

    @property
    def keep(self):
        """Steps the last choice is kept (0: none made yet)."""
        return self.team.keep


cdef class MLP:
    """layers: a list of (W, b, dW, db, activation, act_param, dropout) with
    W of shape (in, out); max_batch: the most rows one training batch or one
    inference chunk has. train=False builds an inference-only network (no
    training workspaces; dW, db may be None). team: the TeamChoice its
    training carries on (default: a new one)."""
    cdef sn_mlp net
    cdef readonly TeamChoice team  # training on the threads or alone (sn_mlp.c)
    cdef sn_optim_cfg opt
    cdef list keep          # every array the C struct points into (but the optimizer's)
    cdef list state_keep    # the optimizer state arrays it points into, of the last set_optimizer
    cdef readonly int64_t max_batch
    cdef readonly tuple sizes
    cdef int64_t row_macs   # multiply-adds of one sample's forward pass
    cdef readonly bint trainable
    cdef readonly dict step_buffers  # the training step's own buffers by name ("xb", "y0", ...)
    cdef readonly object work  # the inference workspace of predict (two halves, on lines)
    cdef bint busy          # a predict call is using work
    cdef sn_mlp_shard shard # data-parallel training: this process's share of the batches
    cdef object shard_keep  # (rows, first, global, reduce) the shard points into / calls
    cdef object reduce_error  # what the reduce callback raised, re-raised by train

    def __cinit__(self):
        self.net.layers = NULL
        self.net.params = NULL
        self.net.shard = NULL
        self.net.last_shares = NULL
        self.net.team = NULL

    def __init__(self, list layers, int64_t max_batch, bint train=True, TeamChoice team=None):
        if not layers or max_batch < 1:
            raise ValueError("MLP: needs at least one layer and max_batch >= 1")
        self.team = team if team is not None else TeamChoice()
        self.net.team = &self.team.team
        cdef sn_mlp_layer *L
        cdef int64_t fan_in, fan_out
        self.keep = []
        self.step_buffers = {}
        self.max_batch = max_batch
        self.trainable = train
        n = len(layers)
        self.net.layers = <sn_mlp_layer *>calloc(n, sizeof(sn_mlp_layer))
        self.net.params = <sn_param *>calloc(2 * n, sizeof(sn_param))
        if self.net.layers == NULL or self.net.params == NULL:
            raise MemoryError("MLP: out of memory")
        self.net.n_layers = n
        self.net.max_batch = max_batch
        sizes = []
        for i, (W, b, dW, db, act, act_param, dropout) in enumerate(layers):
            _array(W, "MLP", "W", np.float32, True)
            if W.ndim != 2:
                raise ValueError(f"MLP: layer {i} weight must be 2-D, got {W.shape}")
            fan_in, fan_out = W.shape
            if fan_in < 1 or fan_out < 1:
                raise ValueError(f"MLP: layer {i} weight has shape {W.shape}: every layer needs "
                                 "at least one input and one output")
            if sizes and sizes[len(sizes) - 1] != fan_in:
                raise ValueError(f"MLP: layer {i} takes {fan_in} features, the layer before "
                                 f"gives {sizes[len(sizes) - 1]}")
            if act not in ACTIVATIONS:
                raise ValueError(f"MLP: unknown activation {act!r}")
            if not (0.0 <= dropout < 1.0) or act_param < 0:
                raise ValueError(f"MLP: layer {i}: bad dropout {dropout} or slope {act_param}")
            if train and (dW is None or db is None):
                raise ValueError(f"MLP: layer {i}: a network built for training needs dW and db")
            if train and i == n - 1 and (act != "none" or dropout > 0):
                raise ValueError(f"MLP: the last layer of a network built for training gives "
                                 f"the logits the loss's softmax takes: activation 'none' and "
                                 f"no dropout, got {act!r} and dropout {dropout}")
            if i == 0:
                sizes.append(fan_in)
            sizes.append(fan_out)
            keys = ("y", "dz", "y_drop", "mask") if dropout > 0 else ("y", "dz")
            ws = {key: _zeros_on_lines((max_batch, fan_out)) for key in keys} if train else {}
            self.keep += [W, b, dW, db, *ws.values()]
            self.step_buffers.update({f"{key}{i}": a for key, a in ws.items()})
            L = &self.net.layers[i]
            L.in_, L.out = fan_in, fan_out
            L.W = _fptr(W, "W", fan_in * fan_out)
            L.b = _fptr(b, "b", fan_out)
            L.dW = _fptr(dW, "dW", fan_in * fan_out)
            L.db = _fptr(db, "db", fan_out)
            L.act, L.act_param, L.dropout = ACTIVATIONS[act], act_param, dropout
            L.y = _fptr(ws.get("y"), "y", max_batch * fan_out)
            L.dz = _fptr(ws.get("dz"), "dz", max_batch * fan_out)
            L.y_drop = _fptr(ws.get("y_drop"), "y_drop", max_batch * fan_out)
            L.mask = _fptr(ws.get("mask"), "mask", max_batch * fan_out)
            for k, (p, g, size) in enumerate(((W, dW, fan_in * fan_out), (b, db, fan_out))):
                self.net.params[2 * i + k].p = _fptr(p, "param", size)
                self.net.params[2 * i + k].g = _fptr(g, "grad", size)
                self.net.params[2 * i + k].n = size
        self.sizes = tuple(sizes)
        self.row_macs = sum(a * b for a, b in zip(sizes, sizes[1:]))
        self.opt.kind = -1
        # on lines: one image's layer, split by columns between this thread
        # and the helper (sn_helper.c), shared a line of its output when the
        # workspace started 16 bytes past one: 784-128-10 paired 2.5 us a
        # call instead of 2.0 (AMD EPYC Zen 5)
        self.work = _empty_on_lines((sn_mlp_forward_workspace(&self.net, max_batch),))
        self.busy = False
        if not train:
            return
        # the gathered batch: each part of the step's columns on lines of their own
        xb = _zeros_on_lines((max_batch, sn_mlp_batch_width(sizes[0])))
        yb = np.zeros(max_batch, np.int64)
        self.keep += [xb, yb]
        self.step_buffers["xb"] = xb
        self.net.xb = _fptr(xb, "xb", max_batch * sn_mlp_batch_width(sizes[0]))
        cdef int64_t[::1] ybv = yb
        self.net.yb = &ybv[0]
        cdef int64_t shares = sn_mlp_last_shares_size(&self.net)
        if shares:  # each part's share of the last layer's gradient (sn_mlp_step.c)
            last_shares = _zeros_on_lines((shares,))
            self.keep.append(last_shares)
            self.step_buffers["last_shares"] = last_shares
            self.net.last_shares = _fptr(last_shares, "last_shares", shares)

    def set_dropout_seeds(self, seeds):
        """One seed per layer: batch b of the next train() call draws layer
        l's dropout mask with seed seeds[l] + b (layers without dropout
        ignore theirs)."""
        if len(seeds) != self.net.n_layers:
            raise ValueError(f"MLP: {len(seeds)} dropout seeds for {self.net.n_layers} layers")
        for l, seed in enumerate(seeds):
            self.net.layers[l].dropout_seed = <uint64_t>(int(seed) & 0xFFFFFFFFFFFFFFFF)

    def set_shard(self, rows=None, first=None, global_rows=None, reduce=None):
        """Data-parallel training: the next train() calls run len(rows)
        batches; batch b holds rows[b] rows (0 allowed) of a global batch of
        global_rows[b] rows, from its row first[b] (int64 arrays). The loss is
        the global batch's mean and dropout draws follow the global row;
        reduce(b, ok) must sum the gradients of all processes in place
        between the backward pass and the step (ok False: this process's
        outputs were not finite; the sum must then be made non-finite). An
        exception it raises ends the run and train() raises it. No
        arguments: back to one process."""
        if rows is None:
            self.net.shard = NULL
            self.shard_keep = None
            return
        arrays = [_array(a, "MLP.set_shard", name, np.int64, False)
                  for a, name in ((rows, "rows"), (first, "first"), (global_rows, "global_rows"))]
        if any(a.ndim != 1 or a.shape[0] != arrays[0].shape[0] for a in arrays):
            raise ValueError("MLP.set_shard: rows, first and global_rows must be 1-D arrays "
                             "of one length")
        if not callable(reduce):
            raise TypeError("MLP.set_shard: reduce must be callable")
        cdef const int64_t[::1] rv = arrays[0]
        cdef const int64_t[::1] fv = arrays[1]
        cdef const int64_t[::1] gv = arrays[2]
        self.shard_keep = (*arrays, reduce)
        self.shard.batches = rv.shape[0]
        self.shard.rows = &rv[0] if rv.shape[0] else NULL
        self.shard.first = &fv[0] if rv.shape[0] else NULL
        self.shard.global_ = &gv[0] if rv.shape[0] else NULL
        self.shard.reduce = _shard_reduce
        self.shard.ctx = <void *>self
        self.net.shard = &self.shard

    def __dealloc__(self):
        free(self.net.layers)
        free(self.net.params)

    def set_optimizer(self, str kind, dict hyper, list states, int64_t iterations,
                      int64_t step):
        """hyper: the group's hyper-parameters; states: per parameter (W0, b0,
        W1, ...) a list of up to 3 state arrays (or None)."""
        if kind not in OPTIMIZER_KINDS:
            raise ValueError(f"MLP: unknown optimizer {kind!r}")
        if len(states) != 2 * self.net.n_layers:
            raise ValueError("MLP: one state list per parameter expected")
        cdef int code = OPTIMIZER_KINDS[kind]
        self.opt.kind = -1  # until every check below passes: train() refuses meanwhile
        self.opt.lr = hyper["lr"]
        self.opt.decay = hyper.get("decay", 0.0)
        self.opt.weight_decay = hyper.get("weight_decay", 0.0)
        self.opt.momentum = hyper.get("momentum", 0.0)
        self.opt.dampening = hyper.get("dampening", 0.0)
        self.opt.nesterov = hyper.get("nesterov", False)
        self.opt.alpha = hyper.get("alpha", 0.99)
        self.opt.centered = hyper.get("centered", False)
        self.opt.beta1, self.opt.beta2 = hyper.get("betas", (0.9, 0.999))
        self.opt.eps = hyper.get("eps", 1e-8)
        self.opt.lr_decay = hyper.get("lr_decay", 0.0)
        self.opt.iterations, self.opt.step = iterations, step
        # the state buffers the C step of these options writes: a missing one
        # would be a NULL pointer there
        needed = {SN_OPT_SGD: (self.opt.momentum != 0, False, False),
                  SN_OPT_ADAGRAD: (True, False, False),
                  SN_OPT_RMSPROP: (True, bool(self.opt.centered), self.opt.momentum > 0)}.get(
                      code, (True, True, False))
        rows = []
        for k, arrays in enumerate(states):
            row = [arrays[j] if j < len(arrays) else None for j in range(3)]
            for j in range(3):
                if row[j] is None and needed[j]:
                    raise ValueError(f"MLP: {kind} with these options needs optimizer state "
                                     f"{j} of parameter {k}")
                _fptr(row[j], "optimizer state", self.net.params[k].n)  # checks it
            rows.append(row)
        for k, row in enumerate(rows):
            for j in range(3):
                self.net.params[k].state[j] = _fptr(row[j], "optimizer state",
                                                    self.net.params[k].n)
        # replaced, not added to: fit calls this before every run of batches
        self.state_keep = [a for row in rows for a in row if a is not None]
        self.opt.kind = code

    @property
    def iterations(self):
        return self.opt.iterations

    @property
    def step(self):
        return self.opt.step

    def train(self, X, labels, order, int64_t batch_size, bint partial=False,
              double loss_before=0.0):
        """Train on X[order] in batches; returns (summed loss, correct count).
        A batch whose outputs, loss or a gradient are not finite takes no
        step and ends the run: FloatingPointError, or with partial=True
        (summed loss, correct count, that batch's index in the run) with the
        sums of the batches before it; the index is -1 when none failed.
        The loss is summed onto loss_before, batch after batch: an epoch cut
        into runs, each given the sum so far, adds the same numbers in the
        same order as one run, and so sums to the same bits."""
        if not self.trainable:
            raise RuntimeError("MLP.train: this network was built for inference only")
        if self.opt.kind < 0:
            raise RuntimeError("MLP.train: set_optimizer first")
        _array(X, "MLP.train", "X", np.float32, False)
        _array(labels, "MLP.train", "labels", np.int64, False)
        _array(order, "MLP.train", "order", np.int64, False)
        n_classes = self.sizes[len(self.sizes) - 1]
        if X.ndim != 2 or X.shape[1] != self.sizes[0] or labels.shape != (X.shape[0],):
            raise ValueError(f"MLP.train: X {X.shape} and labels {labels.shape} do not fit "
                             f"a network of sizes {self.sizes}")
        if not 1 <= batch_size <= self.max_batch:
            raise ValueError(f"MLP.train: batch_size must be in [1, {self.max_batch}]")
        if self.net.shard != NULL and order.size != self.shard_keep[0].sum():
            raise ValueError(f"MLP.train: {order.size} rows in order, but the shard's batches "
                             f"hold {self.shard_keep[0].sum()}")
        if order.size == 0 and self.net.shard == NULL:
            if partial:
                return loss_before, 0, -1
            return loss_before, 0
        if order.size and (order.min() < 0 or order.max() >= X.shape[0]):
            raise ValueError("MLP.train: order holds indices outside X")
        if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
            raise ValueError(f"MLP.train: labels must be in [0, {n_classes})")
        cdef const float[:, ::1] xv = X
        cdef const int64_t[::1] lv = labels
        cdef const int64_t[::1] ov = order
        cdef double loss_sum = loss_before
        cdef int64_t correct = 0, n = order.shape[0], ncls = n_classes
        cdef int status
        cdef int64_t stepped = self.opt.iterations
        cdef const int64_t *op = &ov[0] if n else NULL
        self.reduce_error = None
        with nogil:
            status = sn_mlp_train_f32(&self.net, &self.opt, &xv[0, 0], &lv[0], ncls, op,
                                      n, batch_size, &loss_sum, &correct)
        if status == SN_ECALLBACK:
            error, self.reduce_error = self.reduce_error, None
            raise error
        if partial:
            if status == SN_ENONFINITE:
                return loss_sum, correct, self.opt.iterations - stepped
            _check(status, "training step")
            return loss_sum, correct, -1
        _check(status, "training step")
        return loss_sum, correct

    def predict(self, X, bint softmax=False, str finite_for=None):
        """The network's outputs for the rows of X (inference: no dropout), or
        their softmax, as a new (N, classes) array. X must be a C-contiguous
        float32 ndarray with finite values (checked here). finite_for: a
        method name, to refuse outputs that are not finite with a ValueError
        naming it."""
        if not (_native_float32(X) and cnp.PyArray_IS_C_CONTIGUOUS(X) and
                cnp.PyArray_ISALIGNED(X) and cnp.PyArray_NDIM(X) == 2):
            raise TypeError(f"MLP.predict: X must be a 2-D aligned, C-contiguous float32 "
                            f"ndarray in native byte order, got {_describe(X)}")
        if cnp.PyArray_DIM(X, 1) != self.net.layers[0].in_ or cnp.PyArray_DIM(X, 0) == 0:
            raise ValueError(f"X: expected a non-empty batch of {self.sizes[0]} features, "
                             f"got shape {X.shape}")
        return self._predict(X, softmax, finite_for)

    def try_predict(self, X, bint softmax=False, str finite_for=None):
        """predict(X, softmax, finite_for) where X is rows this network reads
        as they are (_plain_rows); None otherwise (the caller converts X
        first): one call on the path of one-image latency, where the check
        and predict were two."""
        if not _plain_rows(X, self.net.layers[0].in_):
            return None
        return self._predict(X, softmax, finite_for)

    cdef object _predict(self, X, bint softmax, str finite_for):
        """predict's work, for an X already checked."""
        cdef int64_t M = cnp.PyArray_DIM(X, 0)
        cdef cnp.npy_intp out_dims[2]
        out_dims[0] = M
        out_dims[1] = self.net.layers[self.net.n_layers - 1].out
        out = cnp.PyArray_EMPTY(2, out_dims, cnp.NPY_FLOAT32, 0)  # np.empty without its call overhead
        cdef int64_t rows = self.max_batch
        cdef bint own = not self.busy
        if own:
            self.busy = True
            work = self.work
        else:
            rows = M if M < rows else rows
            work = _empty_on_lines((sn_mlp_forward_workspace(&self.net, rows),))
        try:
            _predict_rows(_mlp_rows, &self.net, X, self.net.layers[0].in_, out, out_dims[1],
                          self.row_macs, <float *>cnp.PyArray_DATA(work), rows, softmax,
                          "MLP.predict", finite_for)
        finally:
            if own:
                self.busy = False
        return out


cdef int _shard_reduce(void *ctx, int64_t batch, int ok) noexcept nogil:
    """The C trainer's reduce of a shard: the MLP's Python callback, with the
    GIL; what it raises is kept for train() to raise."""
    with gil:
        net = <MLP>ctx
        try:
            net.shard_keep[3](batch, bool(ok))
        except BaseException as exc:
            net.reduce_error = exc
            return SN_ECALLBACK
    return SN_OK
