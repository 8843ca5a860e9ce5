"""scratchnet: a neural-network library written from scratch.

The arithmetic (matrix multiply, activations, losses, backprop, optimizer
updates) runs in scratchnet's own C, compiled into scratchnet._core; this
package arranges it into layers, losses, optimizers and models.
"""
import os as _os

# GNU OpenMP's default lets worker threads sleep almost as soon as a parallel
# region ends; waking one costs about 50 us here, more than a small layer's
# GEMM takes, so threads would not help training at all. Spinning a little
# (a few milliseconds at most) before sleeping keeps them ready between the
# GEMMs of a batch. Set before the OpenMP runtime loads with _core; a value
# of the user's own wins.
if "OMP_WAIT_POLICY" not in _os.environ:
    _os.environ.setdefault("GOMP_SPINCOUNT", "200000")

from ._version import __version__
from . import _core, _runtime, _tuning
from . import datasets, distributed, plot
from ._random import manual_seed
from ._runtime import info
from .callbacks import Callback, EarlyStopping
from .layers_augment import RandomFlip, RandomShift
from .layers_conv import Conv2D
from .layers_norm import BatchNorm1d, BatchNorm2d
from .layers_pool import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from .layers import Dense, Dropout, Flatten, LeakyReLU, ReLU, Reshape, Sigmoid, Softmax, Tanh
from .losses import MSE, BinaryCrossEntropy, CrossEntropy, Loss
from .model import ModelFileError, Sequential, load
from ._training import TrainingDivergedError
from .module import Module, Parameter
from .optimizers import (SGD, AdaGrad, Adam, AdamW, CosineAnnealingLR, Optimizer, RMSProp,
                         StepLR)



def import_onnx(path):
    """A Sequential read from an ONNX file (needs the onnx package); see
    scratchnet.onnx_io for the operators it reads."""
    from .onnx_io import import_onnx as _import_onnx
    return _import_onnx(path)


_runtime.configure_from_environment()
_tuning.configure()  # the GEMM's kernel and blocks for this machine (timed once)

set_num_threads = _core.set_num_threads
get_num_threads = _core.get_num_threads

__all__ = [
    "__version__", "datasets", "distributed", "plot", "manual_seed", "info", "set_num_threads", "get_num_threads",
    "Conv2D", "Dense", "Dropout", "Flatten", "LeakyReLU", "ReLU", "Reshape", "Sigmoid",
    "Softmax", "Tanh", "MaxPool2D", "AvgPool2D", "GlobalAvgPool2D", "BatchNorm1d", "BatchNorm2d",
    "RandomShift", "RandomFlip",
    "MSE", "BinaryCrossEntropy", "CrossEntropy", "Loss", "ModelFileError", "Sequential", "load",
    "TrainingDivergedError",
    "Module", "Parameter", "SGD", "AdaGrad", "Adam", "AdamW", "RMSProp", "Optimizer",
    "StepLR", "CosineAnnealingLR", "Callback", "EarlyStopping",
]
