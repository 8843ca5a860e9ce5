"""Training speed as a share of the machine's own peak: the network's training
FLOPs per second over NumPy's SGEMM rate measured in the same run. A share
says how well a library uses this CPU whatever the CPU is, where seconds per
epoch only compare libraries on one machine."""
import math

from ..layers import Dense
from ..layers_conv import Conv2D

FLOP_RULE = ("forward convolution and dense multiply-adds x 2, backward 2x forward, "
             "no input gradient for the first layer")


def training_flops(model, in_shape):
    """FLOPs of one training step per image, from the layer shapes: 2 per
    multiply-add of the convolutions' and dense layers' forward products,
    backward twice the forward (weight and input gradients) but only the
    weight gradient for the lowest layer with weights. Biases, pooling,
    activations, the loss and the optimizer are left out.
    784-128-10: 2 * (784*128 * 2 + 128*10 * 3) = 409,088 per image, 24.5 GFLOP
    per 60,000-image epoch; 784-512-256-10: 144.4 GFLOP."""
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


def sgemm_shares(flops_per_epoch, seconds_per_epoch, sgemm_gflops):
    """{name: share} for {name: seconds per epoch}: (FLOPs per epoch / seconds)
    / the SGEMM rate; 1.0 would be training as fast as one large SGEMM runs."""
    return {name: flops_per_epoch / seconds / 1e9 / sgemm_gflops
            for name, seconds in seconds_per_epoch.items()}


def flops_note(flops_text, sgemm_gflops):
    """The line under a table that says what its shares are measured against."""
    return (f"training: {flops_text} ({FLOP_RULE}); "
            f"NumPy SGEMM 1024^3 here: {sgemm_gflops:.1f} GFLOPS")


def print_share_note(rows, file):
    """A warning under a table where a row's share is above 100%: NumPy's
    SGEMM then ran slower than the training did, as when other processes
    hold a core (OpenBLAS's threads wait for each other), and the shares
    overstate."""
    if any(share > 1 for row in rows for share in (row["sgemm_share"] or {}).values()):
        print("note: a share above 100% means NumPy's SGEMM ran slower than the training "
              "(other processes slow OpenBLAS's threads most): the shares overstate; rerun on "
              "an idle machine", file=file)
