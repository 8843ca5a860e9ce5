"""Conv2D forward + backward, scratchnet vs PyTorch, on the layers of issue 8's
benchmark network (batch 128): conv 5x5, 32 filters on 1x28x28 (the first
layer: no input gradient) and conv 5x5, 64 filters on 32x12x12 (with it).

Runs alternate (scratchnet, torch, scratchnet, ...) after a warm-up, and the
medians are reported, with GFLOP/s (2 multiply-adds per weight use; backward
counts dW and, when computed, dx). Each scratchnet result is checked against
torch's (a mismatch makes the exit code 1).

    python benchmarks/bench_conv_layers.py [--threads 2] [--repeat 15] [--chunk 0]
"""
import argparse
import platform
import subprocess
import sys
import time

import numpy as np

import scratchnet as sn
from scratchnet import _core
from scratchnet.bench.options import non_negative_int, positive_int, thread_count
from scratchnet.layers_conv import Conv2D

LAYERS = [  # name, (C, H, W), out_channels, kernel, input gradient
    ("conv5x5x32 on 1x28x28", (1, 28, 28), 32, 5, False),
    ("conv5x5x64 on 32x12x12", (32, 12, 12), 64, 5, True),
]


def cpu_name():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=thread_count, default=2)
    parser.add_argument("--batch", type=positive_int, default=128)
    parser.add_argument("--repeat", type=positive_int, default=15, help="timed rounds (default 15)")
    parser.add_argument("--warmup", type=non_negative_int, default=3)
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        torch = None
    sn.set_num_threads(args.threads)
    if torch is not None:
        torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_name()}; {args.threads} threads; batch {args.batch}; GEMM kernel "
          f"{_core.get_isa()}; medians of {args.repeat} alternating runs")
    ok = True
    rng = np.random.default_rng(0)
    for name, (C, H, W), K, k, input_grad in LAYERS:
        layer = Conv2D(C, K, k, seed=0)
        x = rng.standard_normal((args.batch, C, H, W)).astype(np.float32)
        dy = rng.standard_normal((args.batch, *layer.output_shape((C, H, W)))).astype(np.float32)
        out_elems = dy.size
        flops_fwd = 2.0 * out_elems * C * k * k
        flops_bwd = flops_fwd * (2 if input_grad else 1)

        def run_sn():
            layer.forward(x, training=True)
            return layer.backward(dy, input_grad=input_grad)

        if torch is not None:
            xt = torch.tensor(x, requires_grad=input_grad)
            wt = torch.tensor(layer.weight.data, requires_grad=True)
            bt = torch.tensor(layer.bias.data, requires_grad=True)
            dyt = torch.tensor(dy)

            def run_torch():
                wt.grad = bt.grad = xt.grad = None
                torch.nn.functional.conv2d(xt, wt, bt).backward(dyt)

        runs = [("scratchnet", run_sn)] + ([("torch", run_torch)] if torch else [])
        times = {n: [] for n, _ in runs}
        for i in range(args.warmup + args.repeat):
            for n, fn in runs:
                t0 = time.perf_counter()
                fn()
                if i >= args.warmup:
                    times[n].append(time.perf_counter() - t0)
        if torch is not None:
            err = np.abs(layer.weight.grad - wt.grad.numpy()).max() / np.abs(wt.grad.numpy()).max()
            if input_grad:
                err = max(err, np.abs(run_sn() - xt.grad.numpy()).max()
                          / np.abs(xt.grad.numpy()).max())
            ok &= bool(err < 1e-4)
        print(f"{name}: forward {flops_fwd / 1e9:.2f} + backward {flops_bwd / 1e9:.2f} GFLOP "
              f"({'with' if input_grad else 'no'} dx)")
        for n, _ in runs:
            med = float(np.median(times[n]))
            print(f"  {n:10s} {med * 1e3:8.2f} ms  {(flops_fwd + flops_bwd) / med / 1e9:6.1f} "
                  f"GFLOP/s")
        if torch is not None:
            ratio = np.median(times["scratchnet"]) / np.median(times["torch"])
            print(f"  scratchnet / torch: {ratio:.2f}x the time; max relative gradient "
                  f"difference {err:.1e}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
