"""The scratchnet command line: train, evaluate, predict, download, info, bench."""
import argparse
import json
import sys
import time

import numpy as np

from . import _core, datasets
from ._random import manual_seed
from ._runtime import info
from .layers import Dense, Dropout, ReLU
from .model import Sequential, load
from .optimizers import OPTIMIZERS, CosineAnnealingLR

DATASETS = ("mnist", "fashion-mnist")

# The defaults of `scratchnet train`, per dataset: chosen to pass the
# accuracies in the README in well under a minute on a 2-core machine.
DEFAULTS = {
    "mnist": dict(hidden=[512, 256], epochs=12, dropout=0.2),
    "fashion-mnist": dict(hidden=[512, 256], epochs=20, dropout=0.2),
}


def build_model(hidden, dropout, n_features=784, n_classes=10):
    layers, features = [], n_features
    for width in hidden:
        layers += [Dense(features, width), ReLU()]
        if dropout > 0:
            layers.append(Dropout(dropout))
        features = width
    layers.append(Dense(features, n_classes))
    return Sequential(*layers)


def _hidden_sizes(text):
    try:
        sizes = [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise argparse.ArgumentTypeError(f"hidden sizes must be integers like 512,256; got {text!r}")
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"hidden sizes must be positive; got {text!r}")
    return sizes


def _positive(kind):
    def parse(text):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


def _load_data(args):
    return datasets.load(args.dataset, root=args.data_dir, download=not args.no_download)


def cmd_train(args):
    defaults = DEFAULTS[args.dataset]
    hidden = args.hidden if args.hidden is not None else defaults["hidden"]
    epochs = args.epochs if args.epochs is not None else defaults["epochs"]
    dropout = args.dropout if args.dropout is not None else defaults["dropout"]
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"--dropout must be in [0, 1), got {dropout}")
    if args.threads:
        _core.set_num_threads(args.threads)
    verbose = 0 if (args.quiet or args.json) else 1

    started = time.perf_counter()
    (X, y), (Xt, yt) = _load_data(args)
    manual_seed(args.seed)
    model = build_model(hidden, dropout)
    optimizer = OPTIMIZERS[args.optimizer](model.parameters(), lr=args.lr)
    scheduler = CosineAnnealingLR(optimizer, epochs) if args.schedule == "cosine" else None
    if verbose:
        print(f"scratchnet {info()['version']}: training {args.dataset} "
              f"({X.shape[0]} images), layers 784-{'-'.join(map(str, hidden))}-10, "
              f"{args.optimizer} lr={args.lr}, {epochs} epochs, batch {args.batch_size}, "
              f"kernel {_core.get_isa()}, {_core.get_num_threads()} threads")
    history = model.fit(X, y, optimizer=optimizer, epochs=epochs, batch_size=args.batch_size,
                        seed=args.seed, verbose=verbose, scheduler=scheduler)
    result = model.evaluate(Xt, yt)
    seconds = time.perf_counter() - started
    out = args.out or f"scratchnet-{args.dataset}.npz"
    model.save(out)
    metrics = {"dataset": args.dataset, "test_accuracy": result["accuracy"],
               "test_loss": result["loss"], "train_loss": history["loss"][-1],
               "train_accuracy": history["accuracy"][-1], "epochs": epochs,
               "seconds": round(seconds, 2), "model": out}
    if args.json:
        print(json.dumps(metrics))
    else:
        print(f"test accuracy: {100 * result['accuracy']:.2f}%")
        if not args.quiet:
            print(f"test loss {result['loss']:.4f}; {seconds:.1f} s in all; model saved to {out}")
    return 0


def cmd_evaluate(args):
    model = load(args.model)
    (_, _), (Xt, yt) = _load_data(args)
    result = model.evaluate(Xt, yt)
    if args.json:
        print(json.dumps({"dataset": args.dataset, "test_accuracy": result["accuracy"],
                          "test_loss": result["loss"]}))
    else:
        print(f"test accuracy: {100 * result['accuracy']:.2f}%  (loss {result['loss']:.4f})")
    return 0


def cmd_predict(args):
    model = load(args.model)
    X = np.load(args.inputs, allow_pickle=False)
    if X.ndim == 3:  # a stack of images
        X = X.reshape(X.shape[0], -1)
    if X.dtype == np.uint8:  # raw pixels, as in the IDX files
        X = X.astype(np.float32) / 255.0
    labels = model.predict(X)
    if args.json:
        print(json.dumps(labels.tolist()))
    else:
        print("\n".join(str(int(v)) for v in labels))
    return 0


def cmd_download(args):
    folder = datasets.download(args.name, root=args.data_dir, verbose=not args.quiet)
    print(folder)
    return 0


def cmd_info(args):
    details = info()
    if args.json:
        print(json.dumps(details))
    else:
        for key, value in details.items():
            print(f"{key:14s} {value}")
    return 0


def cmd_bench(args):
    from . import bench  # imported here: only this command needs it
    return bench.cli(quick=args.quick, as_json=args.json, threads=args.threads)


def make_parser():
    parser = argparse.ArgumentParser(prog="scratchnet",
                                     description="Train and run neural networks whose "
                                                 "arithmetic is scratchnet's own C.")
    sub = parser.add_subparsers(dest="command", required=True)

    def data_options(p):
        p.add_argument("--dataset", choices=DATASETS, default="mnist")
        p.add_argument("--data-dir", default=None,
                       help="folder with the IDX files (default: search, then download)")
        p.add_argument("--no-download", action="store_true", help="never use the network")

    p = sub.add_parser("train", help="train the default network on a dataset")
    data_options(p)
    p.add_argument("--hidden", type=_hidden_sizes, default=None,
                   help="hidden layer sizes, e.g. 512,256 (default depends on the dataset)")
    p.add_argument("--epochs", type=_positive(int), default=None)
    p.add_argument("--batch-size", type=_positive(int), default=128)
    p.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adam")
    p.add_argument("--lr", type=_positive(float), default=1e-3)
    p.add_argument("--schedule", choices=("cosine", "none"), default="cosine",
                   help="learning-rate schedule over the epochs")
    p.add_argument("--dropout", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=_positive(int), default=None)
    p.add_argument("--out", default=None, help="where to save the model (.npz)")
    p.add_argument("--json", action="store_true", help="print the final metrics as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("evaluate", help="test accuracy of a saved model")
    p.add_argument("model")
    data_options(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_evaluate)

    p = sub.add_parser("predict", help="class labels for images in a .npy file")
    p.add_argument("model")
    p.add_argument("inputs", help=".npy of shape (N, 784) or (N, 28, 28)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_predict)

    p = sub.add_parser("download", help="fetch a dataset into the cache (or --data-dir)")
    p.add_argument("name", choices=DATASETS)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=cmd_download)

    p = sub.add_parser("info", help="version, compiler, kernel path, threads")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_info)

    p = sub.add_parser("bench", help="time scratchnet against NumPy and PyTorch (GEMM, MNIST MLP)")
    p.add_argument("--quick", action="store_true", help="fewer GEMM shapes and rounds")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--threads", type=_positive(int), default=2,
                   help="threads for all three libraries (default 2)")
    p.set_defaults(run=cmd_bench)
    return parser


def main(argv=None):
    args = make_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, OSError, RuntimeError) as exc:
        print(f"scratchnet {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
