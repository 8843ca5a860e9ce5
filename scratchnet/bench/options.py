"""Command-line options the benchmark scripts share."""
import argparse

from .. import _core


def positive_int(text):
    """An argparse type: a positive integer."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text):
    """An argparse type: an integer, 0 or more."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def thread_count(text):
    """An argparse type: a number of threads scratchnet.set_num_threads takes."""
    value = positive_int(text)
    if value > _core.MAX_THREADS:
        raise argparse.ArgumentTypeError(f"at most {_core.MAX_THREADS} threads, got {text}")
    return value


def training_parser(doc, threads_help):
    """A script's parser (its docstring as the description) with --threads and
    --train-size, the options of the scripts that time 784-128-10 training."""
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=thread_count, default=2, help=threads_help)
    parser.add_argument("--train-size", type=positive_int, default=60_000,
                        help="training images (default all 60,000)")
    return parser
