"""Benchmarks: scratchnet side by side with NumPy and PyTorch, in one process.

Three tables: SGEMM speed (GFLOPS, each scratchnet result checked against a
float64 product); MNIST MLP training time per epoch plus inference speed,
each network written three ways with the same initial weights and data order;
and the MNIST CNN of issue 8 (scratchnet and PyTorch from the same weights),
training time per epoch extrapolated from timed steps, and batch-1 inference.

Every competitor is warmed up first; then all the rows of a table and all
three competitors take turns, round after round, each turn starting with a
moment of untimed calls, and each reports the median of its timed calls. On
a shared machine a slow spell then hits only a few of each one's rounds, and
a table says when other processes were busy while it was timed. NumPy and
PyTorch are only comparisons; PyTorch is skipped (with a note) when it
cannot be imported.

One module per concern:
    timing          interleaved, run_for: competitors take turns, medians
    machine         CPU model, thread settings, /proc/stat samples of how busy others were,
                    the threads' cache-line round trip (close or far-apart vCPUs)
    report          the cells of the printed tables, speedups
    options         command-line options the scripts share
    workload        the seed, optimizer settings, initial weights, epoch order all share
    efficiency      training FLOPs from the layer shapes, share of the SGEMM rate
    gemm            the SGEMM table (and the NumPy 1024^3 SGEMM rate)
    mlp             the MNIST MLP table; its competitors, one module each:
                    scratchnet_mlp, numpy_mlp, torch_mlp
    cnn             the MNIST CNN table and its two competitors

Used by benchmarks/bench_gemm.py, bench_mlp.py, bench_cnn.py and `scratchnet bench`.
"""
import json
import sys

from .cnn import CNN_SETTINGS, benchmark_cnn, cnn_table, print_cnn_table
from .gemm import GEMM_SETTINGS, gemm_table, parse_shapes, print_gemm_table
from .machine import (configured, cpu_name, describe, environment_notes, import_torch,
                      round_trip, round_trip_text)
from .mlp import MLP_ROWS, MLP_SETTINGS, mlp_table, parse_rows, print_mlp_table
from .options import positive_int, thread_count

__all__ = ["run", "cli", "positive_int", "thread_count", "parse_shapes", "parse_rows",
           "benchmark_cnn", "import_torch", "cpu_name", "GEMM_SETTINGS", "MLP_SETTINGS", "MLP_ROWS",
           "CNN_SETTINGS"]


def run(gemm=None, mlp=None, cnn=None, threads=2, isa=None, as_json=False, file=None):
    """Run the GEMM table (settings as in GEMM_SETTINGS), the MLP table (as in
    MLP_SETTINGS) and the CNN table (as in CNN_SETTINGS), those given, and
    print them to file (default stdout), as text or as one JSON object.
    Returns 0, or 1 when a scratchnet GEMM result was wrong."""
    file = file or sys.stdout
    torch = import_torch()
    with configured(threads, isa, torch) as thread_notes:
        notes = environment_notes(torch) + thread_notes
        result = {"config": describe(threads, torch), "notes": notes}
        if as_json:
            for note in notes:
                print(f"note: {note}", file=sys.stderr)
        else:
            print_header(result, file)
        if gemm:
            result["gemm"] = gemm_table(torch=torch, **gemm)
            if not as_json:
                print_gemm_table(result["gemm"], gemm["repeat"], file)
        if mlp:
            result["mlp"] = mlp_table(torch=torch, **mlp)
            if not as_json:
                print_mlp_table(result["mlp"], mlp["epochs"], mlp["train_size"], file)
        if cnn:
            result["cnn"] = cnn_table(torch=torch, **cnn)
            if not as_json:
                print_cnn_table(result["cnn"], file)
        # the vCPUs may have moved while the tables ran
        result["round_trip_ns_end"] = round_trip()
        if not as_json:
            print(f"\nthreads' cache-line round trip at the end: "
                  f"{round_trip_text(result['round_trip_ns_end'])}", file=file)
    if as_json:
        print(json.dumps(result, indent=1), file=file)
    wrong = [row["shape"] for row in result.get("gemm", {"rows": []})["rows"] if not row["ok"]]
    if wrong:
        print(f"scratchnet GEMM gave WRONG results for: {', '.join(wrong)}", file=sys.stderr)
    return 1 if wrong else 0


def print_header(result, file):
    c = result["config"]
    print(f"scratchnet {c['scratchnet']} benchmark, {c['date']}, {c['cpu']} ({c['cores']} cores):"
          f" {c['threads']} threads, kernel {c['isa']}; numpy {c['numpy']}, "
          f"torch {c['torch'] or '(none)'}; threads' cache-line round trip "
          f"{round_trip_text(c['round_trip_ns'])}", file=file)
    for note in result["notes"]:
        print(f"note: {note}", file=file, flush=True)


def cli(quick=False, as_json=False, threads=2):
    """`scratchnet bench`: a few GEMM shapes and the quick MLP and CNN settings."""
    return run(gemm=GEMM_SETTINGS["quick" if quick else "short"], mlp=MLP_SETTINGS["quick"],
               cnn=CNN_SETTINGS["quick"], threads=threads, as_json=as_json)
