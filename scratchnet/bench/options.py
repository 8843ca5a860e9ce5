"""Command-line options the benchmark scripts share."""
import argparse


def positive_int(text):
    """An argparse type: a positive integer."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def training_parser(doc, threads_help):
    """A script's parser (its docstring as the description) with --threads and
    --train-size, the options of the scripts that time 784-128-10 training."""
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=positive_int, default=2, help=threads_help)
    parser.add_argument("--train-size", type=positive_int, default=60_000,
                        help="training images (default all 60,000)")
    return parser
