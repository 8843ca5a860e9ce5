"""Pictures of training and of a trained model, as PNG files (the ``plot`` extra:
``pip install 'scratchnet[plot]'``, matplotlib and Pillow).

Each function draws one figure, writes it to ``path`` as a PNG (``path=None``:
not written) and returns the matplotlib Figure. The numbers a figure shows are
kept on it as ``fig.data``, a dict (what each function puts there is in its
docstring), so they can be checked or reused:

- ``training_curves(history)``: loss and accuracy per epoch, training and
  validation, and the learning rate under them;
- ``confusion_matrix(model, X, y)``: counts of (true, predicted) classes and the
  accuracy of each class;
- ``mistakes(model, X, y)``: the misclassified images, most confident first, with
  their true and predicted labels and the probability given to the prediction;
- ``weights(model)``: the first layer's weights as images: a Dense layer's one per
  unit (each column of weights as a 28x28 picture), or a Conv2D's filters;
- ``activations(model, x)``: what each layer makes of one image.

The figures are drawn without pyplot (no window, no global state, nothing to
close), so they work the same in scripts, threads and notebooks (a notebook
shows a returned Figure). ``import scratchnet`` never imports matplotlib; these
functions do, and say which extra to install when it is missing.
"""
import io
import math
import os
from collections.abc import Mapping

import numpy as np

from . import datasets
from ._validate import as_labels, positive_int
from .losses import BinaryCrossEntropy, CrossEntropy
from .model import _n_outputs

__all__ = ["training_curves", "confusion_matrix", "mistakes", "weights", "activations",
           "confusion_counts", "model_input", "class_names_for", "write_run_plots",
           "INSTALL_HINT"]

INSTALL_HINT = "plots need matplotlib and Pillow: pip install 'scratchnet[plot]'"
DPI = 100


def require():
    """Import what plotting needs; ImportError with one line on how to install it."""
    try:
        import matplotlib  # noqa: F401
        import PIL  # noqa: F401
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    return Figure


def _figure(width, height):
    return require()(figsize=(width, height), dpi=DPI, layout="constrained")


def _finish(fig, path, data):
    fig.data = data
    if path is not None:
        save_png(fig, path)
    return fig


def save_png(fig, path):
    """Write fig as a PNG of 256 colours (a quarter of the RGBA PNG matplotlib
    writes, or less; the figures have few colours): fig's size in inches times
    DPI pixels. A path ending in another format matplotlib writes (.pdf,
    .svg, .jpg, ...) gets that format (it got a PNG under that name)."""
    suffix = os.path.splitext(os.fspath(path))[1].lower().lstrip(".")
    if suffix and suffix != "png":
        formats = fig.canvas.get_supported_filetypes()
        if suffix not in formats:
            raise ValueError(f"{os.fspath(path)}: a plot is written as one of "
                             f"{', '.join('.' + f for f in sorted(formats))}, not .{suffix}")
        fig.savefig(os.fspath(path), dpi=DPI, facecolor="white")
        return
    from PIL import Image
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=DPI, format="png", facecolor="white")
    buffer.seek(0)
    with Image.open(buffer) as picture:
        small = picture.convert("RGB").quantize(256, dither=Image.Dither.NONE)
        small.save(os.fspath(path), format="PNG", optimize=True, dpi=(DPI, DPI))


# ---------------------------------------------------------------- helpers (no matplotlib)


def model_input(model, X):
    """X as the model takes it: images (N, 1, side, side) when its first layer
    takes images (Conv2D, pooling, ...) and X holds rows of side*side pixels
    or (N, side, side) images; rows (N, features) when it takes rows and X
    holds images. Anything else is returned as it is, for the model to check."""
    X = np.asarray(X)
    first = model.layers[0] if len(model.layers) else None
    if getattr(first, "takes_images", False):
        if X.ndim == 3:
            return X[:, None]
        side = math.isqrt(X.shape[1]) if X.ndim == 2 else 0
        if side and side * side == X.shape[1]:
            return X.reshape(X.shape[0], 1, side, side)
        return X
    return X.reshape(X.shape[0], -1) if X.ndim > 2 else X


def class_names_for(model, n_classes=None, dataset=None):
    """Names of the model's classes: those of ``dataset``, else of the dataset
    the model records in ``model.metadata["dataset"]`` (as ``scratchnet train``
    writes), else the class numbers ("0", "1", ...): n_classes of them, or
    as many as the last Dense layer's outputs."""
    name = dataset or model.metadata.get("dataset")
    if name in datasets.DATASETS:
        names = list(datasets.class_names(name))
        if n_classes is None or n_classes <= len(names):
            return names
    count = n_classes if n_classes is not None else _n_outputs(model)
    if count is None:
        # a convolution's channels give the classes, and they depend on the
        # input shape, which the model does not keep
        raise ValueError("class_names_for: this model has no Dense layer to give its "
                         "number of classes; pass n_classes")
    return [str(i) for i in range(count)]


def confusion_counts(y_true, y_pred, n_classes):
    """counts[i, j]: the samples of true class i predicted as class j."""
    counts = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(counts, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return counts


def _class_labels(model, y, inputs, method, binary=False):
    """y as the class labels of a classifier's inputs (one-hot rows become
    their argmax), checked as evaluate checks them: whole numbers in
    [0, classes), one per image. A model fitted with another loss has no
    classes (binary: a single-output BinaryCrossEntropy model has two)."""
    kind = model._output_kind(method, np.shape(inputs)[1:])
    outputs = _n_outputs(model, np.shape(inputs)[1:])
    if kind is BinaryCrossEntropy and binary and outputs == 1:
        classes = 2
    elif kind is CrossEntropy:
        classes = outputs
    else:
        raise ValueError(f"{method}: needs a classifier (CrossEntropy"
                         f"{', or BinaryCrossEntropy with one output' if binary else ''}); this "
                         f"model was fitted with {kind.__name__}: its outputs are not classes")
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot
        y = y.argmax(axis=1)
    return as_labels(y, n_classes=classes, n_samples=len(inputs), name=f"{method}: y")


def _pictures(X):
    """Images (N, H, W) from rows of a square number of pixels or (N, C, H, W)
    (its first channel), for showing."""
    X = np.asarray(X, np.float32)
    if X.ndim == 4:
        return X[:, 0]
    if X.ndim == 2:
        side = math.isqrt(X.shape[1])
        if side * side != X.shape[1]:
            raise ValueError(f"cannot show rows of {X.shape[1]} values as square images")
        return X.reshape(-1, side, side)
    return X


def _grid(count, columns):
    columns = max(1, min(columns, count))
    return max(1, -(-count // columns)), columns


# ---------------------------------------------------------------- figures


def training_curves(history, path="training_curves.png", val_label="validation"):
    """Loss (left) and accuracy (right) per epoch for training and, when the
    history has them, validation (named val_label in the legend); the learning
    rate per epoch below. history: the dict fit returns.

    fig.data: "epoch" (1, 2, ...), and each of "loss", "accuracy", "val_loss",
    "val_accuracy", "lr" present in the history, as plotted."""
    require()
    if not isinstance(history, Mapping) or not isinstance(history.get("loss"), (list, tuple,
                                                                              np.ndarray)):
        raise TypeError(f"training_curves: history must be the dict fit returns (with a "
                        f"'loss' list), got {type(history).__name__}")
    n = len(history["loss"])
    if n == 0:
        raise ValueError("training_curves: the history holds no epoch")
    epochs = np.arange(1, n + 1)
    data = {"epoch": epochs}
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
        values = history.get(key)
        if values is not None and len(values) == n and all(v is not None for v in values):
            data[key] = np.asarray(values, np.float64)

    fig = _figure(10, 6.5)
    grid = fig.add_gridspec(2, 2, height_ratios=[3, 1.2])
    ax_loss, ax_acc = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    ax_lr = fig.add_subplot(grid[1, :], sharex=ax_loss)
    for ax, key, title in ((ax_loss, "loss", "loss"), (ax_acc, "accuracy", "accuracy")):
        for name, label, style in ((key, "training", "-o"), (f"val_{key}", val_label, "-s")):
            if name in data:
                ax.plot(epochs, data[name], style, markersize=3, label=label)
        if ax.lines:
            ax.legend()
        else:
            ax.text(0.5, 0.5, f"no {key} in the history", ha="center", va="center",
                    transform=ax.transAxes)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    if ax_acc.lines:
        from matplotlib.ticker import PercentFormatter
        ax_acc.yaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=1))
    if "lr" in data:
        ax_lr.plot(epochs, data["lr"], "-o", markersize=3, color="tab:green", label="lr")
    ax_lr.set_title("learning rate")
    ax_lr.set_xlabel("epoch")
    ax_lr.grid(alpha=0.3)
    fig.suptitle(f"{n} epoch{'s' if n != 1 else ''}")
    return _finish(fig, path, data)


def confusion_matrix(model, X, y, class_names=None, path="confusion_matrix.png"):
    """The counts of (true class, predicted class) over X, y as a table of
    coloured cells (rows: true classes, columns: predicted), with each class's
    accuracy (its diagonal cell over its row) on the right. class_names default
    to the model's dataset's (class_names_for).

    fig.data: "counts" (n x n int64), "per_class_accuracy" (n; NaN for a class
    absent from y), "accuracy", "class_names", "predicted" (the labels)."""
    require()
    inputs = model_input(model, X)
    y = _class_labels(model, y, inputs, "confusion_matrix", binary=True)
    predicted = np.asarray(model.predict(inputs), np.int64)
    n = max(_n_outputs(model, np.shape(inputs)[1:]), int(y.max()) + 1,
            int(predicted.max()) + 1)
    names = list(class_names) if class_names is not None else class_names_for(model, n)
    if len(names) < n:
        raise ValueError(f"confusion_matrix: {len(names)} class names for {n} classes")
    counts = confusion_counts(y, predicted, n)
    totals = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.diag(counts) / totals
    accuracy = float(np.trace(counts) / counts.sum())

    from matplotlib.colors import PowerNorm
    size = 4 + 0.45 * n
    fig = _figure(size + 1, size)
    ax = fig.add_subplot()
    # a power norm lifts the few mistakes off the white floor beside the big diagonal
    ax.imshow(counts, cmap="Blues", norm=PowerNorm(0.3, vmin=0, vmax=counts.max()))
    for (i, j), count in np.ndenumerate(counts):
        if count:
            light = count > 0.35 * counts.max()
            ax.text(j, i, str(count), ha="center", va="center", fontsize=8,
                    color="white" if light else "black")
    ax.set_xticks(range(n), names[:n], rotation=45 if max(map(len, names)) > 2 else 0,
                  ha="right" if max(map(len, names)) > 2 else "center")
    ax.set_yticks(range(n), names[:n])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    right = ax.secondary_yaxis("right")
    right.set_yticks(range(n), ["-" if np.isnan(a) else f"{100 * a:.1f}%" for a in per_class])
    right.set_ylabel("accuracy of the class")
    ax.set_title(f"accuracy {100 * accuracy:.2f}% on {len(y)} images")
    return _finish(fig, path, {"counts": counts, "per_class_accuracy": per_class,
                               "accuracy": accuracy, "class_names": names[:n],
                               "predicted": predicted})


def _mosaic(images, columns, gap, above):
    """The images (k, h, w) tiled left to right, top to bottom, in one array
    with NaN (drawn blank) between them: gap pixels between columns, above
    pixels over each row (room for a title). Returns it and the (row, column)
    of each tile's top-left corner in it."""
    count, h, w = images.shape
    rows, cols = _grid(count, columns)
    mosaic = np.full((rows * (h + above) + gap, cols * (w + gap) + gap), np.nan, np.float32)
    corners = []
    for k, picture in enumerate(images):
        top, left = (k // cols) * (h + above) + above, (k % cols) * (w + gap) + gap
        mosaic[top:top + h, left:left + w] = picture
        corners.append((top, left))
    return mosaic, corners


def _show_mosaic(images, columns, cmap, vmin, vmax, tile, above):
    """A figure of one image, the mosaic of images (one imshow: fast, however
    many tiles), each tile about `tile` pixels of the PNG wide, each of its
    pixels drawn as a whole number of the PNG's (repeated: a small file); with
    above pixels over each row for titles and 0.4 inch on top for the figure's
    title. Returns (fig, ax, corners)."""
    w = images.shape[2]
    mosaic, corners = _mosaic(images, columns, gap=max(1, w // 14), above=above)
    inch = max(1, round(tile / w)) / DPI  # inches per pixel of the images
    width, height = mosaic.shape[1] * inch, mosaic.shape[0] * inch
    # at least 5 x 2.5 inches, for the title (a smaller mosaic is centred)
    fig = require()(figsize=(max(width, 5), max(height, 2.1) + 0.4), dpi=DPI)
    ax = fig.add_axes([0, 0, 1, 1 - 0.4 / fig.get_figheight()])
    ax.imshow(mosaic, cmap=_colormap(cmap), vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_axis_off()
    return fig, ax, corners


def _colormap(name):
    import matplotlib
    return matplotlib.colormaps[name].with_extremes(bad="white")  # the gaps between tiles


def mistakes(model, X, y, class_names=None, path="mistakes.png", limit=32, columns=8):
    """A grid of up to ``limit`` misclassified images, the most confident
    mistakes first, each titled with its true and predicted class and the
    probability the model gave its prediction.

    fig.data: "indices" (rows of X shown, in grid order), "true", "predicted",
    "probability", "class_names", "count" (all the mistakes in X, shown or
    not), "images" (the pictures shown) and "corners" (each one's top-left
    (row, column) in the grid image, fig.axes[0].images[0])."""
    require()
    # a slice would take -1 as "all but one"; a grid of 0 columns is none
    limit = positive_int(limit, "mistakes: limit")
    columns = positive_int(columns, "mistakes: columns")
    inputs = model_input(model, X)
    y = _class_labels(model, y, inputs, "mistakes")
    probabilities = np.asarray(model.predict_proba(inputs))
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != y)
    confidence = probabilities[wrong, predicted[wrong]]
    order = wrong[np.argsort(-confidence, kind="stable")][:limit]
    names = (list(class_names) if class_names is not None
             else class_names_for(model, probabilities.shape[1]))
    if len(names) < probabilities.shape[1]:  # as confusion_matrix says it
        raise ValueError(f"mistakes: {len(names)} class names for {probabilities.shape[1]} "
                         "classes")
    pictures = _pictures(np.asarray(X)[order]) if len(order) else np.zeros((1, 28, 28))

    side = pictures.shape[2]
    fig, ax, corners = _show_mosaic(pictures, columns, "gray_r", 0, 1, 112, side * 3 // 7)
    for (top, left), index in zip(corners, order):
        ax.text(left + side / 2, top - side / 40, f"true {names[y[index]]}\npred "
                f"{names[predicted[index]]} {100 * probabilities[index, predicted[index]]:.0f}%",
                ha="center", va="bottom", fontsize=7, linespacing=1.1)
    if not len(order):
        ax.text(pictures.shape[2] / 2, pictures.shape[1] / 2, "no mistakes", ha="center",
                va="center")
    fig.suptitle(f"{len(wrong)} of {len(y)} images misclassified"
                 + (f"; the {len(order)} most confident" if len(order) < len(wrong) else ""),
                 fontsize=10)
    return _finish(fig, path, {"indices": order, "true": y[order],
                               "predicted": predicted[order],
                               "probability": probabilities[order, predicted[order]],
                               "class_names": names, "count": len(wrong),
                               "images": pictures[:len(order)], "corners": corners[:len(order)]})


def _first_weights(model):
    """(layer index, images (k, h, w), what they are, channels: the images of
    one filter) for the first Conv2D or Dense layer."""
    for index, layer in enumerate(model.layers):
        kind = type(layer).__name__
        if kind == "Conv2D":
            w = np.asarray(layer.weight.data, np.float32)  # (out, in, kh, kw)
            return index, w.reshape(-1, *w.shape[2:]), (
                f"layer {index}: Conv2D filters {w.shape[2]}x{w.shape[3]}"
                + (f", a row per filter, one of its {w.shape[1]} input channels a column"
                   if w.shape[1] > 1 else "")), w.shape[1]
        if kind == "Dense":
            w = np.asarray(layer.weight.data, np.float32)  # (in, out)
            side = math.isqrt(w.shape[0])
            if side * side != w.shape[0]:
                raise ValueError(f"weights: the first Dense layer takes {w.shape[0]} inputs, "
                                 "not a square image")
            return index, w.T.reshape(-1, side, side), (
                f"layer {index}: Dense, each unit's weights over the {side}x{side} input"), 1
    raise ValueError("weights: the model has no Dense or Conv2D layer")


def weights(model, path="weights.png", limit=64, columns=8):
    """The first layer's weights as pictures: for a first Dense layer, the
    weights from the input pixels to each unit (a column of the weight matrix,
    as a 28x28 image); for a CNN, the first Conv2D's filters (each input channel
    of each filter). Up to ``limit`` of them, each scaled to its own largest
    magnitude on a blue-white-red scale centred on 0 (red: positive).

    fig.data: "layer" (its index), "images" (k, h, w) the weights shown, "scaled"
    (each divided by its largest magnitude, as drawn) and "corners" (each one's
    top-left (row, column) in the grid image, fig.axes[0].images[0])."""
    require()
    index, images, title, channels = _first_weights(model)
    if channels > 1:  # whole filters, one a row
        columns, limit = channels, max(1, limit // channels) * channels
    images = images[:limit]
    bounds = np.abs(images).max(axis=(1, 2), keepdims=True)
    scaled = images / np.where(bounds > 0, bounds, 1)
    fig, _, corners = _show_mosaic(scaled, columns, "RdBu_r", -1, 1, 84,
                                    max(1, scaled.shape[2] // 14))
    fig.suptitle(title + (f" (the first {len(images)})" if len(images) == limit else ""),
                 fontsize=10)
    return _finish(fig, path, {"layer": index, "images": images, "scaled": scaled,
                               "corners": corners})


def _one_sample(model, x):
    """x as a batch of one sample of the model's input shape."""
    x = np.asarray(x, np.float32)
    first = model.layers[0] if len(model.layers) else None
    features = getattr(model, "in_features", None) if model._first_dense_index() is not None \
        else None
    if (x.ndim == 4 and x.shape[0] > 1) or (features and x.ndim == 2 and x.shape[0] > 1
                                             and x.shape[1] == features):
        # (n, C, H, W) images or (n, features) rows: several samples
        raise ValueError(f"activations: x must be one sample, got {x.shape[0]} of them "
                         f"(shape {x.shape}): pass x[0]")
    if getattr(first, "takes_images", False):
        if x.ndim == 1:
            side = math.isqrt(x.size)
            return x.reshape(1, 1, side, side)
        return x.reshape((1,) * (4 - x.ndim) + x.shape)
    return x.reshape(1, -1)


_PASS_THROUGH = ("Dropout", "Flatten", "Reshape", "RandomShift", "RandomFlip")


def activations(model, x, path="activations.png", limit=16):
    """For one sample x (an image as (784,), (28, 28), (1, 28, 28) ...), each
    layer's output at inference: feature maps (up to ``limit`` channels) for
    images, a block of cells for vectors (one cell per unit), bars for an output
    of at most 32 values from the last layer. Layers that only pass values on at inference (Dropout,
    Flatten, Reshape, augmentation) are not drawn.

    fig.data: "input" (the sample as the model takes it), "names" (one per
    layer), "outputs" (each layer's output for the sample, (1, ...) arrays),
    "shown" (indices of the layers drawn)."""
    require()
    sample = _one_sample(model, x)
    outputs, value = [], sample
    with model._lock:  # the layers' buffers are shared with other calls
        model._last_forward = "predict"  # a backward pass now would be this sample's
        for layer in model.layers:
            value = layer.forward(value, training=False)
            outputs.append(np.array(value, copy=True))
            value = outputs[-1]
    names = [f"{i}: {type(layer).__name__}" for i, layer in enumerate(model.layers)]
    shown = [i for i, layer in enumerate(model.layers)
             if type(layer).__name__ not in _PASS_THROUGH]

    rows = [("input", _as_maps(sample))] + [(names[i], outputs[i]) for i in shown]
    fig = _figure(12, 1.3 * len(rows) + 0.4)
    grid = fig.add_gridspec(len(rows), limit)
    for r, (name, out) in enumerate(rows):
        if out.ndim == 4:  # (1, C, H, W): a picture per channel
            for c, feature in enumerate(out[0, :limit]):
                ax = fig.add_subplot(grid[r, c])
                ax.imshow(feature, cmap="gray" if r == 0 else "viridis")
                ax.set_xticks([])
                ax.set_yticks([])
                if c == 0:
                    ax.set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")
            continue
        values = out.reshape(-1)
        ax = fig.add_subplot(grid[r, :])
        if r == len(rows) - 1 and values.size <= 32:  # the model's outputs: bars
            ax.bar(range(values.size), values, color="tab:blue")
            ax.set_xticks(range(values.size))
            ax.tick_params(labelsize=7)
            ax.axhline(0, color="black", linewidth=0.5)
        else:  # one cell per unit, in rows of `width`
            width = 2 * math.ceil(math.sqrt(2 * values.size))
            cells = np.full(-(-values.size // width) * width, np.nan, np.float32)
            cells[:values.size] = values
            ax.imshow(cells.reshape(-1, width), cmap="viridis", aspect="auto",
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        ax.set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle("what each layer makes of one input", fontsize=10)
    return _finish(fig, path, {"input": sample, "names": names, "outputs": outputs,
                               "shown": shown})


def _as_maps(sample):
    """A sample of the model's input as (1, C, H, W) to draw: rows of a square
    number of values as one square image."""
    if sample.ndim == 2:
        side = math.isqrt(sample.shape[1])
        if side * side == sample.shape[1]:
            return sample.reshape(1, 1, side, side)
    return sample


# ---------------------------------------------------------------- the command line's set


def write_run_plots(folder, model, X, y, history=None, class_names=None,
                    val_label="validation"):
    """The plots of a run, written into folder (created if missing): with a
    history (training) the curves and the first layer's weights too, and always
    the confusion matrix and the mistakes on X, y. Returns the paths written."""
    require()
    os.makedirs(folder, exist_ok=True)
    jobs = []
    if history is not None:
        jobs.append(("training_curves.png",
                     lambda p: training_curves(history, p, val_label=val_label)))
    jobs += [("confusion_matrix.png", lambda p: confusion_matrix(model, X, y, class_names, p)),
             ("mistakes.png", lambda p: mistakes(model, X, y, class_names, p))]
    if history is not None:
        jobs.append(("weights.png", lambda p: weights(model, p)))
    written = []
    for name, draw in jobs:
        path = os.path.join(folder, name)
        draw(path)
        written.append(path)
    return written
