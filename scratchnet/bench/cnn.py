"""The MNIST CNN table (issue 8's network): scratchnet and PyTorch from the
same initial weights on the same real batches, training time per epoch
extrapolated from timed steps, its share of the NumPy SGEMM rate, and
batch-1 inference."""
import itertools

import numpy as np

from .. import datasets
from .._random import manual_seed
from ..layers import Dense, Flatten, ReLU
from ..layers_conv import Conv2D
from ..layers_pool import MaxPool2D
from ..losses import CrossEntropy
from ..model import Sequential
from ..optimizers import Adam
from .efficiency import flops_note, print_share_note, sgemm_shares, training_flops
from .gemm import SGEMM_KEY, sgemm_turn
from .machine import cpu_sample, others_share
from .report import UNIT_FORMAT, cell, percents, print_busy_note, ratio, speedup
from .timing import INFERENCE_BLOCK, interleaved
from .torch_mlp import TorchMLP
from .workload import EPOCH_IMAGES, OPTIMIZER_ARGS, SEED, epoch_order

CNN_LABEL = "conv5x5x32-pool-conv5x5x64-pool-128-10"
CNN_BATCH = 128
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


def cnn_table(rounds, calls, infer_rounds, torch):
    """The benchmark network (benchmark_cnn), scratchnet and PyTorch from the
    same initial weights, trained with Adam on the same real MNIST batches:
    {"rows": training (s/epoch, extrapolated from rounds x calls timed steps)
    and batch-1 inference (us/call), "flops_per_image", "sgemm_gflops" (NumPy
    1024^3, measured in turn with the training steps), "initial_max_diff"
    (the two networks' largest probability difference before training),
    "other_cpu"}."""
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

    # NumPy's 1024^3 SGEMM takes its turn beside the training steps (sgemm_turn)
    turns = {name: trainer(name) for name in nets}
    turns[SGEMM_KEY], sgemm_rate = sgemm_turn(calls=1)
    train = interleaved(turns, rounds, calls=calls)
    sgemm = sgemm_rate(train.pop(SGEMM_KEY))
    one = feed[0][0][:1]
    infer = interleaved({name: (lambda net=net: net.predict_proba(one))
                         for name, net in nets.items()}, infer_rounds, block=INFERENCE_BLOCK)
    flops = training_flops(model, (1, 28, 28))
    epoch = {name: t * EPOCH_IMAGES / CNN_BATCH for name, t in train.items()}
    rows = [
        {"row": "cnn-adam-b128", "label": f"training, batch {CNN_BATCH}, Adam",
         "unit": "s/epoch", **{name: epoch.get(name) for name in ("scratchnet", "torch")},
         "speedup_vs_torch": speedup(train, "torch"),
         "sgemm_share": sgemm_shares(flops * EPOCH_IMAGES, epoch, sgemm)},
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
    print(flops_note(f"{table['flops_per_image'] / 1e6:.1f} MFLOP per image", table["sgemm_gflops"])
          + ("" if diff is None else f"; initial outputs differ by at most {diff:.1e}"),
          file=file)
    print_share_note(table["rows"], file)
    print_busy_note(table["other_cpu"], file)
