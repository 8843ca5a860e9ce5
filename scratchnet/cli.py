"""The scratchnet command line: train, evaluate, predict, download, info, tune, bench.

Exit status: 0 done; 1 an error met while running (a file missing or not writable, the
data not found, a bad model or input file, training diverged); 2 a bad command line
(from argparse); 130 interrupted. Expected errors print a message to stderr, never a
traceback: one line, or for missing data a short list of what to put where.
"""
import argparse
import json
import math
import os
import shlex
import sys
import tempfile
import time

import numpy as np

from . import _core, datasets, distributed, plot
from ._files import probe_folder, written_path
from ._version import __version__
from ._random import manual_seed
from ._runtime import info
from .layers import Dense, Dropout, Flatten, ReLU
from .layers_augment import RandomFlip, RandomShift
from .layers_conv import Conv2D
from .layers_norm import BatchNorm2d
from .layers_pool import MaxPool2D
from .model import ModelFileError, Sequential, load
from .onnx_io import MIN_OPSET
from .losses import BinaryCrossEntropy, CrossEntropy
from .optimizers import OPTIMIZERS, CosineAnnealingLR

DATASETS = ("mnist", "fashion-mnist")
MODELS = ("mlp", "cnn")

# The defaults of `scratchnet train`, per dataset: chosen to pass the
# accuracies in the README in well under a minute on a 2-core machine.
DEFAULTS = {
    "mnist": dict(hidden=[512, 256], epochs=12, dropout=0.2),
    "fashion-mnist": dict(hidden=[512, 256], epochs=20, dropout=0.2),
}
# The defaults of `scratchnet train --model cnn`, per dataset: chosen to pass
# the accuracies in the README in under 10 minutes on a 2-core machine.
# channels: the two convolutions' filters; kernel and padding: theirs; shift:
# RandomShift's pixels; flip: RandomFlip (clothes look alike mirrored, digits
# do not). MNIST: issue 8's benchmark network with BatchNorm2d (the padded 3x3
# 16/64 network stopped at 99.36-99.39%, README); Fashion-MNIST: padded 3x3
# convolutions keep a 7x7 map for the dense layer (the 5x5 32/64 network
# reached 91.4%).
CNN_DEFAULTS = {
    "mnist": dict(channels=(32, 64), kernel=5, padding=0, epochs=10, dropout=0.3, shift=2,
                  flip=False),
    "fashion-mnist": dict(channels=(16, 64), kernel=3, padding=1, epochs=15, dropout=0.3,
                          shift=0, flip=True),
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


def build_cnn(dropout, shift=0, flip=False, channels=(16, 64), kernel=3, padding=1, side=28,
              n_classes=10):
    """A CNN for (N, 1, side, side) images: the augmentation (training only),
    then per convolution conv kernel x kernel with zero padding - maxpool 2 -
    BatchNorm2d - ReLU (pooled first, the normalisation and the ReLU touch a
    quarter of the values; max-pool and ReLU commute), then dense 128 - ReLU -
    dropout - dense n_classes. CNN_DEFAULTS gives the settings per dataset."""
    layers = ([RandomShift(shift)] if shift else []) + ([RandomFlip()] if flip else [])
    depth = 1
    for width in channels:
        layers += [Conv2D(depth, width, kernel, padding=padding), MaxPool2D(2),
                   BatchNorm2d(width), ReLU()]
        depth, side = width, (side + 2 * padding - kernel + 1) // 2
    layers += [Flatten(), Dense(depth * side * side, 128), ReLU()]
    if dropout > 0:
        layers.append(Dropout(dropout))
    layers.append(Dense(128, n_classes))
    return Sequential(*layers)


def _cnn_settings(dataset):
    """build_cnn's keyword arguments (but dropout) from CNN_DEFAULTS."""
    d = CNN_DEFAULTS[dataset]
    return {k: d[k] for k in ("shift", "flip", "channels", "kernel", "padding")}


def describe_cnn(channels, kernel, padding, **_):
    """What build_cnn builds, in one line."""
    convs = "-".join(f"conv{kernel}x{kernel}x{width}-maxpool2" for width in channels)
    return (f"{convs}-dense128-10, zero padding {padding}, BatchNorm2d and ReLU after each "
            "pooling")


def _augmentation(shift, flip):
    moves = [f"RandomShift({shift})"] * bool(shift) + ["RandomFlip"] * flip
    return " + ".join(moves) or "none"


def _hidden_sizes(text):
    if text.strip().lower() == "none":  # a linear model: the inputs straight to the classes
        return []
    try:
        sizes = [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise argparse.ArgumentTypeError(f"hidden sizes must be integers like 512,256; got {text!r}")
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"hidden sizes must be positive; got {text!r}")
    if not sizes:  # trained a model without hidden layers, silently (an empty shell variable?)
        raise argparse.ArgumentTypeError(f"no hidden sizes in {text!r}; give them like 512,256 "
                                         "(or none, for no hidden layer)")
    return sizes


def _positive(kind):
    def parse(text):
        value = _number(kind, text)
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


def _number(kind, text):
    """text as an int or float, or argparse's own words for one that is not
    (it names the type function otherwise: "invalid parse value")."""
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None


def _seed(text):
    value = _number(int, text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _given(what):
    """An argparse type: a path, refused empty (--out "" saved to the default
    name, --checkpoint "" failed after the first epoch naming a temporary file)."""
    def parse(text):
        if not text:
            raise argparse.ArgumentTypeError(f"empty; give {what}")
        return text
    return parse


def _fraction(text):
    value = _number(float, text)
    if not 0.0 <= value < 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


class CommandError(Exception):
    """An expected failure, worded for the command line: main prints it, no traceback."""


def _os_error(exc, path=None):
    """'PATH: reason' rather than Python's "[Errno 2] No such file or directory: 'PATH'";
    path names the file when the error does not."""
    where = exc.filename if exc.filename is not None else path
    if where is None:
        return str(exc)
    if exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    return f"{where}: {_reason(exc)}"


def _reason(exc):
    """An OSError's reason alone, "No space left on device" (its strerror may
    name what was being written: "checkpoint: No space left on device")."""
    return os.strerror(exc.errno) if exc.errno else str(exc)


def _by_hand(name, where):
    return [f"To add {name} by hand, put these four files (each raw or .gz) in {where}:",
            "  " + "  ".join(datasets.FILES)]


def _not_found_message(exc, args):
    """The command line's wording of a DatasetNotFoundError (the exception's own message
    speaks Python: root=, download=)."""
    name = exc.name
    if exc.download_tried:
        lines = [f"{name} not found, and the download failed: {exc.download_error}"]
    elif exc.nested is not None:  # refused before any download: see the hint below
        lines = [f"{name} not found in --data-dir"]
    else:
        lines = [f"{name} not found (--no-download: the network was not used)"]
    lines.append("Looked in:")
    for label, folder in exc.places:
        note = "--data-dir" if exc.root_given else label
        missing = exc.missing[folder]
        if 0 < len(missing) < len(exc.files):
            note += "; missing " + ", ".join(missing)
        lines.append(f"  {folder}  ({note})")
    if exc.nested is not None:
        lines.append(f"The files are in {exc.nested}: pass --data-dir {exc.nested}")
    elif exc.env_holds_files is not None:
        lines.append(f"SCRATCHNET_DATA={exc.env_holds_files} holds the files themselves: set it "
                     f"to the folder above, which holds {exc.places[0][1].name}/")
    elif exc.root_given:
        lines += _by_hand(name, exc.places[0][1])
    else:
        lines += _by_hand(name, "one of those folders, or in a folder DIR given as --data-dir "
                                f"DIR (or as SCRATCHNET_DATA=DIR, with the files in DIR/{name}/)")
    if not exc.download_tried and exc.nested is None:
        data_dir = f" --data-dir {args.data_dir}" if args.data_dir else ""
        lines.append(f"Or fetch them: scratchnet download {name}{data_dir}")
    return "\n".join(lines)


def _refuse_file(where, path, fix):
    """Refuse a folder (where names it: "--plots PATH") that is a file, saying
    so and what to do (fix): it was "PATH: File exists" from os.makedirs, or
    data not found with the advice to put the files in it."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise CommandError(f"{where}: is a file, not a folder; {fix}")


def _load_data(args, images=False):
    """The dataset as rows (N, 784), or with images as (N, 1, 28, 28)."""
    if args.data_dir:
        _refuse_file(f"--data-dir {args.data_dir}", args.data_dir,
                    "give the folder that holds the four files")
    try:
        return datasets.load(args.dataset, root=args.data_dir, download=not args.no_download,
                             flatten=not images)
    except datasets.DatasetNotFoundError as exc:
        raise CommandError(_not_found_message(exc, args)) from None


def _takes_images(model):
    """Whether the model's first layer takes images (N, C, H, W) rather than rows."""
    return bool(model.layers) and model.layers[0].takes_images


def _check_out(path, force):
    """Fail before training, not after it, if the model could not be saved at path."""
    if path.lower().endswith(".onnx"):  # a .npz under that name: no ONNX tool reads it
        raise CommandError(f"--out {path}: train saves scratchnet's .npz model; give a .npz "
                           f"name, then `scratchnet export MODEL.npz {path}` writes ONNX")
    _check_writable("--out", path, "model.npz",
                    None if force else "pass --force to overwrite it, or choose another --out")


def _check_writable(option, path, example, if_exists):
    """Fail before any work if the file option names could not be written:
    a folder, a file that exists (if_exists says what to do; None: replace
    it), a folder that is missing or cannot be written in."""
    if os.path.isdir(path):
        raise CommandError(f"{option} {path}: is a folder; give a file name, such as "
                           f"{os.path.join(path, example)}")
    if os.path.lexists(path) and if_exists:
        raise CommandError(f"{option} {path}: already exists; {if_exists}")
    folder = os.path.dirname(written_path(path)) or "."  # a link's target's folder
    if not os.path.isdir(folder):
        reason = (f"{folder} is not a folder" if os.path.exists(folder)
                  else f"the folder {folder} does not exist")
        raise CommandError(f"{option} {path}: cannot write there: {reason}")
    try:
        probe_folder(path)
    except OSError as exc:
        raise CommandError(f"{option} {path}: cannot write there: cannot write in the folder "
                           f"{folder} ({exc.strerror or exc})") from None


def _same_file(a, b):
    """Whether paths a and b name one file (through links, or spelt differently)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist (yet)
        return os.path.realpath(a) == os.path.realpath(b)


def _check_checkpoint(args, out):
    """Before loading data: --checkpoint can be written after every epoch,
    without replacing the model at --out or, unasked, a run's checkpoint."""
    path = args.checkpoint
    if path is None:
        return
    if _same_file(path, out):  # the model saved at the end would replace the checkpoint
        raise CommandError(f"--checkpoint {path} is also --out: the checkpoint is written "
                           "after every epoch and the model at the end; give them different "
                           "names")
    continues = args.resume is not None and _same_file(path, args.resume)
    _check_writable("--checkpoint", path, "run.ckpt", None if continues or args.force else
                    f"it may hold an interrupted run: to continue that run, run its command "
                    f"again with --resume {path}; to start over, replacing it, pass --force")


def _check_resume(path):
    """Before loading data: --resume names a file that can be read."""
    if path is None:
        return
    try:
        with open(path, "rb"):  # a folder: IsADirectoryError
            pass
    except OSError as exc:
        raise CommandError(f"--resume {_os_error(exc, path)}; give the checkpoint file that "
                           "--checkpoint wrote") from None


def _save(model, out, force, dataset):
    """Save the model to out or, if that fails, to a new file in the current folder or
    else the temporary folder. Returns (where it went or None, the error or None)."""
    if os.path.lexists(out) and not force:  # appeared during training
        error = FileExistsError("appeared during training; left alone")
    else:
        try:
            model.save(out)
            return out, None
        except OSError as exc:
            error = exc
    for folder in (os.getcwd(), tempfile.gettempdir()):
        try:
            fd, fallback = tempfile.mkstemp(dir=folder, prefix=f"scratchnet-{dataset}-",
                                            suffix=".npz")
        except OSError:
            continue
        os.close(fd)
        try:
            model.save(fallback)  # replaces the empty file mkstemp made
            return fallback, error
        except OSError:
            os.unlink(fallback)
    return None, error


def _train_conflicts(args):
    """Options that do not fit together (a bad command line), or None."""
    if args.model == "cnn" and args.hidden is not None:
        return ("--hidden sets the hidden layers of --model mlp; --model cnn has a fixed "
                "network (--dropout sets the dropout of its dense part)")
    if args.hidden == [] and args.dropout:  # dropout follows hidden layers: none to follow
        return "--dropout acts after hidden layers, and --hidden none has none: leave it out"
    return None


def _start_ranks(args):
    """With --distributed: MPI started (mpi4py imported); returns whether
    this process is rank 0, the one that prints, writes and saves."""
    if not args.distributed:
        if distributed._launched():
            raise CommandError("started by an MPI launcher as one of several processes, but "
                               "without --distributed: each would train alone and write the "
                               "same files; add --distributed")
        return True
    try:
        distributed.init()
    except ImportError as exc:
        raise CommandError(f"--distributed: {exc}") from None
    return distributed.is_main()


def cmd_train(args):
    cnn = args.model == "cnn"
    defaults = (CNN_DEFAULTS if cnn else DEFAULTS)[args.dataset]
    epochs = args.epochs if args.epochs is not None else defaults["epochs"]
    dropout = args.dropout if args.dropout is not None else defaults["dropout"]
    out = args.out if args.out is not None else f"scratchnet-{args.dataset}.npz"
    main_rank = _start_ranks(args)
    if main_rank:
        _check_out(out, args.force)
        _check_checkpoint(args, out)
        _check_resume(args.resume)
        _check_plots(args)
    if args.threads:
        _core.set_num_threads(args.threads)
    verbose = 0 if (args.quiet or args.json or not main_rank) else 1

    started = time.perf_counter()
    (X, y), (Xt, yt) = _load_data(args, images=cnn)
    manual_seed(args.seed)
    if cnn:
        settings = _cnn_settings(args.dataset)
        model = build_cnn(dropout, **settings)
        network = (f"network {describe_cnn(**settings)}, augmentation "
                   f"{_augmentation(settings['shift'], settings['flip'])}")
    else:
        hidden = args.hidden if args.hidden is not None else defaults["hidden"]
        model = build_model(hidden, dropout)
        network = f"layers {'-'.join(map(str, [784, *hidden, 10]))}"
    optimizer = OPTIMIZERS[args.optimizer](model.parameters(), lr=args.lr)
    scheduler = CosineAnnealingLR(optimizer, epochs) if args.schedule == "cosine" else None
    if verbose:
        print(f"scratchnet {info()['version']}: training {args.dataset} "
              f"({X.shape[0]} images), {network}, "
              f"{args.optimizer} lr={args.lr}, {epochs} epoch{'s' if epochs != 1 else ''}, batch {args.batch_size}, "
              f"kernel {_core.get_isa()}, {_core.get_num_threads()} "
              f"thread{'s' if _core.get_num_threads() != 1 else ''}"
              + (f" x {distributed.size()} ranks" if args.distributed else ""))
    trained = []  # the epochs this run completes (a resumed one: from the checkpoint's on)
    try:
        history = model.fit(X, y, optimizer=optimizer, epochs=epochs,
                            batch_size=args.batch_size, seed=args.seed, verbose=verbose,
                            scheduler=scheduler, validation=(Xt, yt) if args.plots else None,
                            checkpoint=args.checkpoint, resume=args.resume,
                            distributed=args.distributed,
                            callback=lambda epoch, logs: trained.append(epoch))
    except OSError as exc:
        # after an epoch, the only file fit writes is the checkpoint (rank 0's):
        # the model trained so far is kept, as a full disk at the end keeps it
        if not (args.checkpoint and trained and main_rank):
            raise
        saved, error = _save_trained(model, out, args)
        raise CommandError(f"writing --checkpoint {args.checkpoint} after epoch {trained[-1]} "
                           f"of {epochs} failed ({_reason(exc)}), which stopped "
                           "training; " + (f"the model trained so far is saved to {saved}"
                                           if error is None else
                                           _not_saved_at_out(saved, error, out))) from None
    except ValueError as exc:
        # fit's refusal speaks Python ("pass validation ... as then"): validation
        # is what --plots adds, so say it in options
        if args.resume is None or not getattr(exc, "validation_differs", False):
            raise
        then, fix = (("without", "leave --plots out") if args.plots else
                     ("with", "pass --plots DIR again"))
        raise CommandError(f"cannot resume from {args.resume}: it was written by a run {then} "
                           "--plots, which evaluates the test set after every epoch, and the "
                           f"resumed run must do as that run did: {fix}") from None
    if model.interrupted:  # Ctrl-C: fit said what was saved and how to resume
        if args.checkpoint and main_rank and os.path.exists(args.checkpoint):
            # resuming needs the run's own options: the whole command, not just --resume
            print(f"to continue: {_resume_command(args._argv, args.checkpoint)}",
                  file=sys.stderr)
        return 130
    if not main_rank:  # every rank holds the same model: rank 0 evaluates and saves it
        return 0
    result = model.evaluate(Xt, yt)
    seconds = time.perf_counter() - started
    saved, error = _save_trained(model, out, args)
    metrics = {"dataset": args.dataset, "test_accuracy": result["accuracy"],
               "test_loss": result["loss"], "train_loss": history["loss"][-1],
               "train_accuracy": history["accuracy"][-1], "epochs": epochs,
               "seconds": round(seconds, 2), "network": args.model, "model": saved}
    where = f"model saved to {saved}" if saved else "model NOT saved"
    if args.json:
        print(json.dumps(metrics))
    else:
        print(f"test accuracy: {100 * result['accuracy']:.2f}%")
        print(where if args.quiet else
              f"test loss {result['loss']:.4f}; {seconds:.1f} s in all; {where}")
    _write_plots(args, model, Xt, yt, history)
    if error is None:
        return 0
    raise CommandError(_not_saved_at_out(saved, error, out))


def _save_trained(model, out, args):
    """_save for `train`, the dataset recorded in the model (evaluate's default dataset)."""
    model.metadata["dataset"] = args.dataset
    return _save(model, out, args.force, args.dataset)


def _not_saved_at_out(saved, error, out):
    """What happened to a model _save could not put at out: error, then where it went."""
    reason = _os_error(error, out)
    if saved:
        return f"could not save the model to --out ({reason}); saved it to {saved} instead"
    return (f"could not save the model to --out ({reason}), nor in the current or the "
            "temporary folder: the trained model is lost")


# what a user may give where the model goes: files that load reads as a damaged .npz
PICTURES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp")


def _load_model(args, usage=None, others=()):
    """load(args.model), an ONNX file or a picture there named as such rather
    than as a damaged .npz; usage: the command's form, given when others (its
    other file arguments) hold an .npz, as the arguments are likely swapped."""
    try:
        return load(args.model)
    except ModelFileError:
        name = args.model.lower()
        what = ("an ONNX file" if name.endswith(".onnx") else
                "a picture" if name.endswith(PICTURES) else None)
        if what is None:
            raise
        swapped = any(os.fspath(f).lower().endswith(".npz") for f in others)
        raise CommandError(f"{args.model}: {what}, not a scratchnet model (the .npz that "
                           "`scratchnet train` or model.save writes)"
                           + (f"; the arguments look swapped: scratchnet {usage}" if swapped
                              else "")) from None


def cmd_evaluate(args):
    model = _load_model(args)
    if args.plots and model.loss is not None and not isinstance(model.loss, CrossEntropy):
        # checked before the plots' folder is made and the test set is run
        raise CommandError(f"--plots: the plots are a classifier's (confusion matrix, "
                           f"mistakes); {args.model} was fitted with "
                           f"{type(model.loss).__name__}")
    _check_plots(args)
    # the dataset the model was trained on (recorded by `train`), unless told
    trained_on = model.metadata.get("dataset")
    if args.dataset and trained_on and args.dataset != trained_on:
        print(f"note: {args.model} was trained on {trained_on}; evaluating it on "
              f"{args.dataset}", file=sys.stderr)
    args.dataset = args.dataset or trained_on or "mnist"
    if args.dataset not in DATASETS:
        raise CommandError(f"{args.model}: trained on {args.dataset!r}; pass --dataset "
                           f"({' or '.join(DATASETS)})")
    (_, _), (Xt, yt) = _load_data(args, images=_takes_images(model))
    result = model.evaluate(Xt, yt)
    accuracy = result.get("accuracy")  # none for a regression (MSE) model
    if args.json:
        print(json.dumps({"dataset": args.dataset, "test_accuracy": accuracy,
                          "test_loss": result["loss"]}))
    elif accuracy is None:
        print(f"test loss: {result['loss']:.4f} ({type(model.loss).__name__}; no accuracy)")
    else:
        print(f"test accuracy: {100 * accuracy:.2f}%  (loss {result['loss']:.4f})")
    _write_plots(args, model, Xt, yt)
    return 0


def _check_plots(args):
    """Before any work: --plots needs the plot extra, and a folder it can make."""
    if not args.plots:
        return
    try:
        plot.require()
    except ImportError as exc:
        raise CommandError(str(exc)) from None
    _refuse_file(f"--plots {args.plots}", args.plots, "give a folder to write the PNGs in "
                "(made if missing)")
    os.makedirs(args.plots, exist_ok=True)


def _write_plots(args, model, X, y, history=None):
    """--plots: the run's pictures (plot.write_run_plots), the test set's test
    figures named "test" in the curves; says where they went unless --json."""
    if not args.plots:
        return
    written = plot.write_run_plots(args.plots, model, X, y, history,
                                   datasets.class_names(args.dataset), val_label="test")
    if not args.json:
        print(f"plots: {', '.join(written)}")


def _read_images(path, images=False):
    """The images of a .npy file, as float32 in [0, 1]: rows (N, 784), or with images
    (N, 1, 28, 28); refuses what would give silent nonsense (unscaled float pixels,
    integers outside 0..255)."""
    X = _pixels(path)
    if not images:
        return X
    if X.ndim != 2 or X.shape[1] != 28 * 28:
        raise CommandError(f"{path}: shape {X.shape}; the model takes 28x28 images: give "
                           "(N, 784), (N, 28, 28), (N, 1, 28, 28) or (28, 28)")
    return X.reshape(-1, 1, 28, 28)


def _pixels(path):
    """The .npy file's images as rows of float32 pixels in [0, 1] (see _read_images)."""
    try:
        X = np.load(path, allow_pickle=False)
    except (ValueError, EOFError) as exc:
        detail = ("Python objects, or not a .npy file at all" if "pickle" in str(exc)
                  else str(exc) or type(exc).__name__)
        raise CommandError(f"{path}: not a readable .npy array ({detail})") from None
    if not isinstance(X, np.ndarray):
        X.close()
        raise CommandError(f"{path}: a .npz archive; predict reads one array saved by np.save")
    if X.shape == (28, 28):  # one image
        X = X.reshape(1, -1)
    elif X.ndim in (3, 4):  # a stack of images, (N, 28, 28) or (N, 1, 28, 28)
        X = X.reshape(X.shape[0], -1)
    if X.dtype.kind not in "uif":
        raise CommandError(f"{path}: values of type {X.dtype}; predict needs pixels, "
                           "as integers 0..255 or floats 0..1")
    if X.size == 0 or not np.isfinite(X).all():
        return X  # the model's checks name the problem
    low, high = X.min(), X.max()
    if X.dtype.kind in "ui":  # raw pixels, as in the IDX files
        if low < 0 or high > 255:
            raise CommandError(f"{path}: integer pixels must be 0..255, found {low}..{high}")
        return X.astype(np.float32) / np.float32(255)
    if low < 0 or high > 1:
        # over 1: pixels 0..255 as floats; below 0: standardised ones
        # (x - mean) / std, which dividing by 255 would not undo
        fix = ("divide by 255, or save the raw pixels as uint8 (which predict scales)"
               if low >= 0 else "give the pixels themselves, 0..255 as uint8 (which predict "
               "scales) or 0..1 as floats, not standardised or shifted values")
        raise CommandError(f"{path}: pixel values range over {low:g}..{high:g}, but the model "
                           f"takes them scaled to 0..1: {fix}")
    return X


def cmd_predict(args):
    model = _load_model(args, PREDICT_USAGE, [args.inputs])
    X = _read_images(args.inputs, images=_takes_images(model))
    try:
        labels = model.predict(X)
    except ValueError as exc:  # shape, non-finite values, empty: about the file, not "X"
        raise CommandError(f"{args.inputs}: {str(exc).removeprefix('X: ')}") from None
    if args.json:
        print(json.dumps(labels.tolist()))
    else:
        print(_prediction_lines(labels))
    return 0


def _prediction_lines(predicted):
    """One line per sample: a class label, 0/1 labels of several outputs, or
    a regression's values (float32, to 7 significant digits: printed as
    integers, they were cut to whole numbers), space-separated."""
    whole = predicted.dtype.kind in "iub"
    rows = predicted.reshape(len(predicted), -1)
    return "\n".join(" ".join(str(int(v)) if whole else f"{float(v):.7g}" for v in row)
                     for row in rows)


def cmd_predict_files(args):
    """predict's files: one .npy (cmd_predict; a .npz is refused there), or
    pictures (PNG, JPEG, ...)."""
    files = args.inputs
    if not any(path.lower().endswith((".npy", ".npz")) for path in files):
        return _predict_pictures(args, files)
    if len(files) > 1:
        raise CommandError("give one .npy file, or image files (PNG, JPEG, ...)")
    args.inputs = files[0]
    return cmd_predict(args)


PREDICT_USAGE = "predict MODEL.npz IMAGES.npy, or predict MODEL.npz PICTURE..."


def _check_takes_pictures(model, path):
    """Before reading pictures: the model (file path) classifies 28x28 images."""
    if model.loss is not None and not isinstance(model.loss, (CrossEntropy,
                                                              BinaryCrossEntropy)):
        # predict_proba's refusal ends "use predict()", Python
        raise CommandError(f"{path}: fitted with {type(model.loss).__name__}, a regression "
                           "loss: its outputs are values, not classes, so a picture has no "
                           "likeliest classes; predict prints its values for a .npy of its "
                           "inputs")
    first = model._first_dense_index()
    features = None if first is None else model.layers[first].in_features
    if features not in (None, 28 * 28):
        raise CommandError(f"{path}: the model takes {features} features per sample, not "
                           "28x28 images, which predict makes of pictures; give it a .npy of "
                           f"shape (N, {features})")


def _predict_pictures(args, files):
    """The top 3 classes of each picture, made an image of the dataset the
    model was trained on (datasets.image_to_mnist, or image_to_fashion_mnist
    for a Fashion-MNIST model: the digit recipe made clothes unrecognisable)."""
    model = _load_model(args, PREDICT_USAGE, files)
    _check_takes_pictures(model, args.model)
    prepare = (datasets.image_to_fashion_mnist
               if model.metadata.get("dataset") == "fashion-mnist" else datasets.image_to_mnist)
    pictures = []
    for path in files:
        try:
            pictures.append(prepare(path))
        except ImportError as exc:  # no Pillow
            raise CommandError(str(exc)) from None
        except ValueError as exc:
            raise CommandError(f"{path}: {str(exc).removeprefix(prepare.__name__ + ': ')}") \
                from None
        except OSError as exc:
            if exc.filename is None and not isinstance(exc, PermissionError):  # Pillow's
                raise CommandError(f"{path}: not a picture Pillow can read ({exc})") from None
            raise
    X = plot.model_input(model, np.stack(pictures).reshape(len(files), -1))
    probabilities = model.predict_proba(X)
    binary = probabilities.ndim == 1
    if binary:  # one sigmoid output: class 1's; class 0 has the rest
        probabilities = np.stack([1 - probabilities, probabilities], axis=1)
    names = plot.class_names_for(model, probabilities.shape[1])
    if binary:  # predict's label first (its logit >= 0: a probability that rounds to 0.5
        # in float32 may be either)
        first = model.predict(X)[:, None]
        top = np.concatenate([first, 1 - first], axis=1)
    else:
        top = np.argsort(-probabilities, axis=1, kind="stable")[:, :3]
    results = [{"file": path, "top": [{"class": int(k), "name": names[k],
                                       "probability": float(p[k])} for k in best]}
               for path, p, best in zip(files, probabilities, top)]
    if args.json:
        print(json.dumps(results))
    for result in [] if args.json else results:
        print(f"{result['file']}: " + ", ".join(f"{c['name']} {100 * c['probability']:.3g}%"
                                                for c in result["top"]))
    return 0


def _opset(text):
    value = _number(int, text)
    if value < MIN_OPSET:  # the most onnx accepts is checked by export_onnx
        raise argparse.ArgumentTypeError(f"must be {MIN_OPSET} or more, got {text}")
    return value



def _shape(text):
    """A per-sample shape like 1,28,28."""
    dims = text.replace(" ", "").split(",")
    if not all(d.isdigit() and int(d) > 0 for d in dims):
        raise argparse.ArgumentTypeError(f"a shape is positive integers like 1,28,28; got "
                                         f"{text!r}")
    return tuple(int(d) for d in dims)


def cmd_export(args):
    """Write a saved model as ONNX (scratchnet.onnx_io)."""
    # the model first: with the arguments swapped, OUT is the model, which
    # "exists; pass --force" would have offered to overwrite
    model = _load_model(args, "export MODEL.npz OUT.onnx", [args.out])
    if os.path.exists(args.out) and not args.force:
        raise CommandError(f"{args.out}: exists; pass --force to overwrite it")
    shape = args.input_shape
    if shape is None and model._first_dense_index() is None:
        if model.metadata.get("dataset") not in DATASETS:
            raise CommandError(f"{args.model} does not start with a Dense layer, so the shape "
                               "of its input is unknown: give it, e.g. --input-shape 1,28,28")
        shape = (1, 28, 28)  # the images of the dataset `train` recorded
    try:
        model.export_onnx(args.out, opset=args.opset, input_shape=shape)
    except ImportError as exc:
        raise CommandError(str(exc)) from None
    print(args.out)
    return 0


def cmd_download(args):
    folder = args.data_dir if args.data_dir else datasets.cache_dir(args.name)
    _refuse_file(f"--data-dir {folder}" if args.data_dir else str(folder), folder,
                "give a folder to put the four files in")
    try:
        folder = datasets.download(args.name, root=args.data_dir, verbose=not args.quiet)
    except datasets.DownloadError as exc:
        raise CommandError("\n".join([str(exc), *_by_hand(args.name, folder)])) from None
    print(folder)
    return 0


def _describe_blocks(isa, b):
    """'avx2  tile 6x16 (last rows 4x16), kc 512, mc 126, nc 8192 (mc, nc tuned)'"""
    how = "mc, nc tuned" if b["tuned"] else "derived from the caches"
    tail = f" (last rows {b['mr_tail']}x{b['nr']})" if b["mr_tail"] else ""
    return (f"{isa:8s} tile {b['mr']}x{b['nr']}{tail}, kc {b['kc']}, mc {b['mc']}, "
            f"nc {b['nc']} ({how})")


def _describe_pair(min_flops):
    """'one image's layer in two halves (one for a helper thread) from 32768 multiply-adds'"""
    from . import _tuning
    never = _tuning.never_paired()
    if min_flops >= never:
        return f"one image's layer on one thread up to {never} multiply-adds (a helper not worth it)"
    timed = (", where timed faster at run time (each shape, now and then)"
             if _core.pair_timing() else "")
    return (f"one image's layer in two halves (one for a helper thread) from {min_flops} "
            f"multiply-adds{timed}")


def cmd_info(args):
    details = info()
    if args.json:
        print(json.dumps(details))
        return 0
    for key, value in details.items():
        if key == "caches":
            value = (f"L1d {value['l1d'] // 1024} KiB, L2 {value['l2'] // 1024} KiB, "
                     f"L3 {value['l3'] // 1024} KiB (shared by {value['l3_sharing']} logical "
                     f"CPUs), from {value['source']}")
        if key == "gemm_blocks":
            value = "\n".join(" " * 15 * (i > 0) + _describe_blocks(isa, b)
                              for i, (isa, b) in enumerate(value.items()))
        if key == "pair_min_flops":
            value = _describe_pair(value)
        print(f"{key:14s} {value}")
    return 0


def cmd_tune(args):
    from . import _tuning
    choice, timings, saved = _tuning.tune()
    pair_timings = _tuning.STATE["pair_timings"]
    if args.json:
        print(json.dumps({"choice": choice, "timings": timings, "pair_timings": pair_timings,
                          "saved": saved}))
        return 0
    shapes = ", ".join("x".join(map(str, shape)) for shape in _tuning.timed_shapes())
    print(f"GEMMs (M x N x K) {shapes} on one thread, each candidate's fastest calls "
          f"({info()['cpu']}):")
    for row in timings:
        chosen = row["isa"] == choice["isa"] and [row["mc"], row["nc"]] == \
            choice["blocks"][row["isa"]]
        print(f"  {row['isa']:8s} mc {row['mc']:5d}  nc {row['nc']:5d}  "
              f"{row['gflops']:7.1f} GFLOPS{'  <- chosen' if chosen else ''}")
    print("one image through 784-H-10, first layer in two halves (a helper thread) or on "
          "one thread, us per call:")
    for row in pair_timings:
        print(f"  H {row['hidden']:4d} ({row['flops']} multiply-adds)  halves "
              f"{row['paired_us']:6.2f}  one thread {row['alone_us']:6.2f}")
    print(f"kernel {choice['isa']}; {_describe_pair(_core.pair_min_flops())}; {saved}")
    return 0


def cmd_bench(args):
    from . import bench  # imported here: only this command needs it
    return bench.cli(quick=args.quick, as_json=args.json, threads=args.threads)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: X)" to every option with a value; an option whose default is
    not a plain value (None: per dataset, searched, ...) states it in its own help.
    Flags (default False) are off unless given: no "(default: False)" noise."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _per_dataset(key, show=str, cnn=False):
    """'(default: ...)' for a setting of DEFAULTS, naming the dataset where they differ;
    with cnn, the setting of CNN_DEFAULTS for --model cnn follows."""
    def values(table):
        shown = {name: show(d[key]) for name, d in table.items()}
        if len(set(shown.values())) == 1:
            return shown[DATASETS[0]]
        return ", ".join(f"{v} for {name}" for name, v in shown.items())
    return f"(default: {values(DEFAULTS)}" + (
        f"; with --model cnn, {values(CNN_DEFAULTS)})" if cnn else ")")


def _plots_option(p, what):
    p.add_argument("--plots", metavar="DIR", default=None,
                   help=f"write PNG plots into DIR (made if missing): {what}; needs "
                        "matplotlib and Pillow, pip install 'scratchnet[plot]' (default: no plots)")


def make_parser():
    parser = argparse.ArgumentParser(prog="scratchnet", formatter_class=_HelpFormatter,
                                     description="Train and run neural networks whose "
                                                 "arithmetic is scratchnet's own C.")
    parser.add_argument("--version", action="version", version=f"scratchnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, summary):
        return sub.add_parser(name, help=summary, formatter_class=_HelpFormatter,
                              description=summary[0].upper() + summary[1:] + ".")

    def data_options(p, default="mnist", dataset_help="the dataset"):
        p.add_argument("--dataset", choices=DATASETS, default=default, help=dataset_help)
        p.add_argument("--data-dir", default=None,
                       help="the folder holding the four IDX files (default: search "
                            "$SCRATCHNET_DATA/<dataset>/, the user cache, "
                            "/usr/share/datasets/<dataset>/ and the copy bundled with "
                            "scratchnet, then download into the user cache)")
        p.add_argument("--no-download", action="store_true",
                       help="never use the network: fail if the files are not found")

    p = command("train", "train the default network on a dataset")
    data_options(p)
    p.add_argument("--model", choices=MODELS, default="mlp",
                   help="the network: mlp, a multilayer perceptron of --hidden layers; cnn, "
                        "a convolutional network: " + "; ".join(
                            f"for {name} {describe_cnn(**d)}, trained on images moved by "
                            f"{_augmentation(d['shift'], d['flip'])}"
                            for name, d in CNN_DEFAULTS.items()))
    p.add_argument("--hidden", type=_hidden_sizes, default=None,
                   help="hidden layer sizes of --model mlp, e.g. 512,256, or none (a linear "
                        "model) "
                        + _per_dataset("hidden", lambda v: ",".join(map(str, v))))
    p.add_argument("--epochs", type=_positive(int), default=None,
                   help="passes over the training set " + _per_dataset("epochs", cnn=True))
    p.add_argument("--batch-size", type=_positive(int), default=128,
                   help="images per training step")
    p.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adam",
                   help="the optimizer")
    p.add_argument("--lr", type=_positive(float), default=1e-3, help="learning rate")
    p.add_argument("--schedule", choices=("cosine", "none"), default="cosine",
                   help="learning-rate schedule over the epochs")
    p.add_argument("--dropout", type=_fraction, default=None,
                   help="dropout after each hidden layer (cnn: after its dense hidden "
                        "layer), in [0, 1) " + _per_dataset("dropout", cnn=True))
    p.add_argument("--seed", type=_seed, default=0,
                   help="seed of the initial weights, shuffling and dropout")
    p.add_argument("--threads", type=_positive(int), default=None,
                   help="threads of the C kernels (default: $SCRATCHNET_NUM_THREADS, else "
                        f"$OMP_NUM_THREADS, else the cores: {_core.get_num_threads()} here)")
    p.add_argument("--out", type=_given("a file name, such as model.npz"), default=None,
                   help="where to save the model, a .npz file; checked before training "
                        "(default: scratchnet-<dataset>.npz in the current folder)")
    p.add_argument("--force", action="store_true",
                   help="overwrite --out, and --checkpoint, if they exist")
    p.add_argument("--checkpoint", metavar="PATH", type=_given("a file name, such as run.ckpt"),
                   default=None,
                   help="write a checkpoint there after every epoch (atomically), to resume "
                        "from after Ctrl-C or a crash; checked before training, and an "
                        "existing one is kept unless --resume names it or --force is given "
                        "(default: none)")
    p.add_argument("--resume", metavar="PATH", type=_given("the checkpoint file"), default=None,
                   help="continue the run a checkpoint holds; give the options it was started "
                        "with too (Ctrl-C prints the whole command; --epochs counts the whole "
                        "run); the result is the same as uninterrupted (default: start afresh)")
    p.add_argument("--json", action="store_true",
                   help="print the final metrics and the model's path as one JSON object")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel training over MPI, one process per rank: run as "
                        "mpiexec -n N scratchnet train --distributed ...; each rank trains on "
                        "its share of every batch and only rank 0 prints and saves; needs "
                        'pip install "scratchnet[mpi]"')
    p.add_argument("--quiet", action="store_true",
                   help="no progress: print only the test accuracy and where the model went")
    _plots_option(p, "the training curves (the test set's figures as validation), "
                     "confusion matrix and mistakes on the test set, and first-layer weights")
    p.set_defaults(run=cmd_train, conflicts=_train_conflicts, command_parser=p)

    p = command("evaluate", "test accuracy of a saved model")
    p.add_argument("model", help="a model file written by `scratchnet train` (.npz)")
    data_options(p, None, "the dataset (default: the one the model was trained on, as "
                          "recorded by `scratchnet train`; else mnist)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    _plots_option(p, "the confusion matrix and the mistakes on the test set")
    p.set_defaults(run=cmd_evaluate)

    p = command("predict", "class labels for images in a .npy file, or the top 3 classes of "
                           "pictures (PNG, JPEG, ...)")
    p.add_argument("model", help="a model file written by `scratchnet train` (.npz)")
    p.add_argument("inputs", nargs="+", metavar="FILE",
                   help="a .npy of shape (N, 784), (N, 28, 28) or (28, 28): pixels as "
                        "integers 0..255 (scaled here) or floats 0..1; or picture files "
                        "of any size, colour or grey, dark ink on light or light on dark, "
                        "each made a 28x28 image as MNIST's were "
                        "(scratchnet.datasets.image_to_mnist; needs Pillow)")
    p.add_argument("--json", action="store_true",
                   help="print the labels as a JSON list (pictures: a list of "
                        "{file, top: [{class, name, probability}, ...]})")
    p.set_defaults(run=cmd_predict_files)

    p = command("export", "write a saved model as an ONNX file")
    p.add_argument("model", help="a model file written by `scratchnet train` or model.save (.npz)")
    p.add_argument("out", help="the ONNX file to write (.onnx)")
    p.add_argument("--opset", type=_opset, default=17,
                   help=f"the ONNX opset, {MIN_OPSET} or more (default: %(default)s)")
    p.add_argument("--input-shape", type=_shape, default=None,
                   help="the per-sample input shape, e.g. 1,28,28 (default: a model that "
                        "starts with Dense, or with Flatten then Dense, takes rows of that "
                        "Dense layer's inputs, e.g. 784; any other model takes 1,28,28 if "
                        "`scratchnet train` made it, else needs this option)")
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    p.set_defaults(run=cmd_export)

    p = command("download", "fetch a dataset into the user cache (or --data-dir)")
    p.add_argument("name", choices=DATASETS, help="the dataset")
    p.add_argument("--data-dir", default=None,
                   help="the folder to put the four files in (default: the user cache, "
                        f"{datasets.cache_dir(DATASETS[0]).parent}{os.sep}<name>)")
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    p.set_defaults(run=cmd_download)

    p = command("info", "version, compiler, kernel path, threads")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=cmd_info)

    p = command("tune", "time the GEMM's kernels and cache blocks on this machine again and "
                        "keep the fastest (done once by itself at the first import)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=cmd_tune)

    p = command("bench", "time scratchnet against NumPy and PyTorch (GEMM, MNIST MLP and CNN)")
    p.add_argument("--quick", action="store_true", help="fewer GEMM shapes and rounds")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--threads", type=_positive(int), default=2,
                   help="threads for all three libraries")
    p.set_defaults(run=cmd_bench)
    return parser


def _resume_command(argv, checkpoint):
    """The command line that resumes the run argv started: its options (any
    --resume of its own left out) and --resume checkpoint."""
    kept, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token == "--resume":
            skip = True
        elif not token.startswith("--resume="):
            kept.append(token)
    return shlex.join(["scratchnet", *kept, "--resume", os.fspath(checkpoint)])


def main(argv=None):
    argv = sys.argv[1:] if argv is None else [os.fspath(a) for a in argv]
    args = make_parser().parse_args(argv)
    args._argv = argv
    conflict = args.conflicts(args) if hasattr(args, "conflicts") else None
    if conflict:
        args.command_parser.error(conflict)  # exits with 2, as argparse does
    try:
        return args.run(args)
    except OSError as exc:
        message = _os_error(exc)
    # ArithmeticError: FloatingPointError when training diverges.
    except (CommandError, ValueError, TypeError, RuntimeError, ArithmeticError) as exc:
        message = str(exc)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(f"scratchnet {args.command}: error: {message}", file=sys.stderr)
    if getattr(args, "distributed", False):
        distributed.abort(1)  # the other ranks may be waiting for this one
    return 1


if __name__ == "__main__":
    sys.exit(main())
