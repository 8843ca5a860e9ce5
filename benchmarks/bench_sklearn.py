"""scratchnet.sklearn.MLPClassifier against sklearn.neural_network.MLPClassifier
on MNIST: the same network (784-128-10, ReLU) and settings (Adam, lr 1e-3,
batch 128, alpha 1e-4, a fixed number of epochs), side by side in one process,
fitted in turn (scratchnet's estimator, sklearn's, and scratchnet's own
Sequential.fit, to show what the estimator wrapper costs) in each round, the
order turned by one each round.
Prints the time per epoch (the median over rounds of fit time / epochs) and
the test accuracy of each.

    python benchmarks/bench_sklearn.py [--threads 2] [--epochs 5] [--rounds 3]

Both libraries get --threads threads (sklearn's BLAS through threadpoolctl).
"""
import argparse
import json
import statistics
import sys
import time
import warnings

import numpy as np

import scratchnet as sn
from scratchnet import bench


def _sequential_fit(X, y, Xt, yt, hidden, batch, epochs, alpha, seed):
    """The estimator's network and optimizer, built and fitted by hand."""
    model = sn.Sequential(sn.Dense(784, hidden, seed=seed), sn.ReLU(),
                          sn.Dense(hidden, 10, init="xavier", seed=seed + 1))
    optimizer = sn.Adam(model.parameters(), lr=1e-3, weight_decay=alpha / batch)
    start = time.perf_counter()
    model.fit(X, y, optimizer, loss=sn.CrossEntropy(), epochs=epochs, batch_size=batch,
              seed=seed, verbose=0)
    elapsed = time.perf_counter() - start
    return elapsed / epochs, model.evaluate(Xt, yt)["accuracy"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=bench.thread_count, default=2)
    parser.add_argument("--epochs", type=bench.positive_int, default=5)
    parser.add_argument("--rounds", type=bench.positive_int, default=3)
    parser.add_argument("--hidden", type=bench.positive_int, default=128)
    parser.add_argument("--batch-size", type=bench.positive_int, default=128)
    parser.add_argument("--train-size", type=bench.positive_int, default=60000)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier as SklearnMLP
    from threadpoolctl import threadpool_limits

    from scratchnet.sklearn import MLPClassifier

    (X, y), (Xt, yt) = sn.datasets.load("mnist")
    X, y = X[:args.train_size], y[:args.train_size]
    settings = dict(hidden_layer_sizes=(args.hidden,), batch_size=args.batch_size,
                    learning_rate_init=1e-3, alpha=1e-4, max_iter=args.epochs, tol=0.0)
    sn.set_num_threads(args.threads)
    names = ("scratchnet MLPClassifier", "sklearn MLPClassifier", "scratchnet Sequential.fit")
    times = {name: [] for name in names}
    accuracy = {name: [] for name in names}
    with threadpool_limits(args.threads), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for r in range(args.rounds):
            # the order turns each round, so no one always runs after the same one
            for name in names[r % 3:] + names[:r % 3]:
                if name == names[2]:
                    per_epoch, acc = _sequential_fit(X, y, Xt, yt, args.hidden,
                                                     args.batch_size, args.epochs, 1e-4, r)
                else:
                    clf = (MLPClassifier if name == names[0] else SklearnMLP)(random_state=r,
                                                                            **settings)
                    start = time.perf_counter()
                    clf.fit(X, y)
                    per_epoch = (time.perf_counter() - start) / clf.n_iter_
                    acc = clf.score(Xt, yt)
                times[name].append(per_epoch)
                accuracy[name].append(acc)
    result = {name: {"seconds_per_epoch": statistics.median(times[name]),
                     "all_seconds_per_epoch": times[name],
                     "test_accuracy": float(np.mean(accuracy[name]))} for name in names}
    result["speedup"] = (result[names[1]]["seconds_per_epoch"]
                         / result[names[0]]["seconds_per_epoch"])
    result["settings"] = dict(settings, threads=args.threads, rounds=args.rounds,
                              train_size=len(X))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"MNIST {len(X)} training images, 784-{args.hidden}-10 ReLU, Adam lr 1e-3, batch "
          f"{args.batch_size}, {args.epochs} epochs, {args.rounds} rounds, "
          f"{args.threads} threads")
    print(f"{'':28s} {'s / epoch (median)':>19s} {'test accuracy (mean)':>21s}  each round")
    for name in names:
        row = result[name]
        rounds = " ".join(f"{t:.3f}" for t in row["all_seconds_per_epoch"])
        print(f"{name:28s} {row['seconds_per_epoch']:19.3f} {row['test_accuracy']:21.2%}  "
              f"{rounds}")
    print(f"scratchnet's estimator is {result['speedup']:.1f}x as fast as sklearn's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
