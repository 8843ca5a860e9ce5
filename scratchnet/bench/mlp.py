"""The MNIST MLP table: training time per epoch and inference speed of each
network written three ways (scratchnet_mlp, numpy_mlp, torch_mlp) with the
same initial weights and data order, each training row's rate as a share of
NumPy's SGEMM rate measured in the same run, and each one's test accuracy."""
import argparse
from collections import namedtuple

from .. import datasets
from .efficiency import flops_note, print_share_note, sgemm_shares, training_flops
from .gemm import SGEMM_KEY, sgemm_turn
from .machine import cpu_sample, others_share
from .numpy_mlp import NumpyMLP
from .report import UNIT_FORMAT, cell, percents, print_busy_note, ratio, speedup
from .scratchnet_mlp import ScratchnetMLP
from .timing import INFERENCE_BLOCK, interleaved
from .torch_mlp import TorchMLP
from .workload import EPOCH_IMAGES, initial_weights

MlpRow = namedtuple("MlpRow", "label hidden batch optimizer")  # optimizer None: inference
MLP_ROWS = {
    "sgd-b128": MlpRow("784-128-10 batch 128 SGD momentum", (128,), 128, "sgd"),
    "sgd-b32": MlpRow("784-128-10 batch 32 SGD momentum", (128,), 32, "sgd"),
    "adam-b128": MlpRow("784-128-10 batch 128 Adam", (128,), 128, "adam"),
    "deep-sgd-b128": MlpRow("784-512-256-10 batch 128 SGD momentum", (512, 256), 128, "sgd"),
    "infer-b1": MlpRow("784-128-10 inference, batch 1", (128,), 1, None),
    "infer-b10000": MlpRow("784-128-10 inference, batch 10000", (128,), 10000, None),
}
NAMES = ("scratchnet", "numpy", "torch")
SGEMM_CALLS = 10  # 1024^3 products a turn: 0.13-0.16 s at the 135-160 GFLOPS seen here
SHARE_HEADER = "share of NumPy SGEMM sn / numpy / torch"
MLP_SETTINGS = {
    "full": dict(rows=tuple(MLP_ROWS), epochs=3, train_size=None, rounds=10),
    "quick": dict(rows=("sgd-b128", "infer-b1"), epochs=1, train_size=10_000, rounds=3),
}


def parse_rows(text):
    """--rows: 'sgd-b128,infer-b1' -> keys of MLP_ROWS."""
    rows = [key for key in text.replace(" ", "").split(",") if key]
    unknown = [key for key in rows if key not in MLP_ROWS]
    if unknown or not rows:
        problem = f"unknown rows {unknown}" if unknown else "no rows given"
        raise argparse.ArgumentTypeError(f"{problem}; choose from {', '.join(MLP_ROWS)}")
    return rows


def mlp_net(key, competitor=ScratchnetMLP, inputs=784):
    """One competitor's network and optimizer for row `key` of MLP_ROWS, from
    the initial weights all competitors share."""
    spec = MLP_ROWS[key]
    return competitor(initial_weights((inputs, *spec.hidden, 10)), spec.optimizer, spec.batch)


def network_name(spec, inputs=784):
    """'784-128-10' for a row's layer sizes."""
    return "-".join(map(str, (inputs, *spec.hidden, 10)))


def mlp_table(rows, epochs, train_size, rounds, torch):
    """{"rows": one per key in rows, "sgemm_gflops": NumPy's 1024^3 SGEMM rate
    measured in turn with the training rows (None without any), "other_cpu":
    the share of the CPUs other processes used meanwhile}. The training rows'
    epochs take turns, then the inference rows' calls do."""
    start = cpu_sample()
    (X, y), (Xt, yt) = datasets.load_mnist()
    X, y = X[:train_size], y[:train_size]
    classes = {"scratchnet": ScratchnetMLP, "numpy": NumpyMLP}
    if torch is not None:
        classes["torch"] = TorchMLP
    nets = {(key, name): mlp_net(key, cls, X.shape[1])
            for key in rows for name, cls in classes.items()}
    training = {k: net for k, net in nets.items() if MLP_ROWS[k[0]].optimizer}
    # one untimed epoch before each timed one: the same number for all, so they learn alike;
    # NumPy's SGEMM takes its turn beside them (sgemm_turn)
    turns = {k: (lambda net=net: net.epoch(X, y)) for k, net in training.items()}
    if training:
        turns[SGEMM_KEY], sgemm_rate = sgemm_turn(calls=SGEMM_CALLS)
    seconds = interleaved(turns, rounds=epochs, settle=0.0)
    sgemm = sgemm_rate(seconds.pop(SGEMM_KEY)) if training else None
    inference = {k: net for k, net in nets.items() if k not in training}
    seconds.update(interleaved({k: (lambda net=net, x=X[:MLP_ROWS[k[0]].batch]:
                                    net.predict_proba(x)) for k, net in inference.items()},
                               rounds=rounds, block=INFERENCE_BLOCK))
    return {"rows": [mlp_row(key, seconds, nets, (X, Xt, yt), list(classes), sgemm)
                     for key in rows],
            "sgemm_gflops": sgemm, "other_cpu": others_share(start)}


def mlp_row(key, seconds, nets, data, names, sgemm):
    """One row of the table from the timings; data is (training images, test
    images, test labels). A training row's shares: its training FLOPs over
    one epoch of those images / seconds per epoch / the SGEMM rate."""
    spec = MLP_ROWS[key]
    X, *test = data
    times = {name: seconds[key, name] for name in names}
    flops, shares = None, None
    if spec.optimizer:
        unit, values = "s/epoch", times
        accuracy = {name: nets[key, name].accuracy(*test) for name in names}
        flops = training_flops(nets[key, "scratchnet"].model, X.shape[1:])
        shares = sgemm_shares(flops * len(X), times, sgemm)
    elif spec.batch == 1:
        unit, values, accuracy = "us/call", {n: t * 1e6 for n, t in times.items()}, None
    else:
        unit, values, accuracy = "images/s", {n: spec.batch / t for n, t in times.items()}, None
    row = {"row": key, "label": spec.label, "network": network_name(spec, X.shape[1]),
           "unit": unit}
    row.update({name: values.get(name) for name in NAMES})
    row.update(speedup_vs_numpy=speedup(times, "numpy"), speedup_vs_torch=speedup(times, "torch"),
               flops_per_image=flops, sgemm_share=shares, accuracy=accuracy)
    return row


def print_mlp_table(table, epochs, train_size, file):
    images = train_size or EPOCH_IMAGES
    # the shares and accuracies are the training rows': none, no such columns
    trained = any(row["accuracy"] for row in table["rows"])
    training = (f"training on {images} images, median of {epochs} timed epoch(s), each after "
                f"an untimed one (test accuracy after all {2 * epochs}); " if trained else "")
    print(f"\nMNIST MLP: {training}inference: median call. vs > 1: scratchnet is faster",
          file=file)
    print((f"{'row':<38} {'unit':>8} {'scratchnet':>10} {'numpy':>9} {'torch':>9} "
           f"{'vs numpy':>8} {'vs torch':>8}") +
          (f"  {SHARE_HEADER}  test accuracy sn / numpy / torch" if trained else ""), file=file)
    for row in table["rows"]:
        spec = UNIT_FORMAT[row["unit"]]
        share = percents(row["sgemm_share"], NAMES, 0)
        accuracy = percents(row["accuracy"], NAMES, 2)
        print(f"{row['label']:<38} {row['unit']:>8} {cell(row['scratchnet'], spec, 10)} "
              f"{cell(row['numpy'], spec, 9)} {cell(row['torch'], spec, 9)} "
              f"{ratio(row['speedup_vs_numpy'])} {ratio(row['speedup_vs_torch'])}  "
              f"{share:<{len(SHARE_HEADER)}}  {accuracy}".rstrip(), file=file)
    per_network = {row["network"]: row["flops_per_image"] for row in table["rows"]
                   if row["flops_per_image"]}
    if per_network:
        print(flops_note("; ".join(f"{network} {flops / 1e6:.2f} MFLOP per image, "
                                   f"{flops * EPOCH_IMAGES / 1e9:.1f} GFLOP per "
                                   f"{EPOCH_IMAGES:,}-image epoch"
                                   for network, flops in per_network.items()),
                         table["sgemm_gflops"]), file=file)
    print_share_note(table["rows"], file)
    print_busy_note(table["other_cpu"], file)
