"""`scratchnet bench --quick --json`, run in-process: the structure of its
output, and that the GEMM results it checked were right. No timing is
asserted: the machine is shared and noisy."""
import argparse
import contextlib
import io
import json
import os

import pytest

from scratchnet import _core, bench, cli
from scratchnet.bench import cnn, efficiency, gemm, mlp, timing

pytestmark = pytest.mark.sanitizer_skip("benchmarks")

HAVE_TORCH = bench.import_torch() is not None
PRESENT = ("scratchnet", "numpy", "torch") if HAVE_TORCH else ("scratchnet", "numpy")


@pytest.fixture(scope="module")
def quick_run(mnist):  # mnist: skip, or fail in CI, when the data cannot be found
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["bench", "--quick", "--json"])
    return code, json.loads(out.getvalue())


def percents_of(shares):
    """'52% / 13% / 30%' as the tables print a row's shares (- where a library is absent)."""
    return " / ".join("-" if shares.get(name) is None else f"{100 * shares[name]:.0f}%"
                      for name in ("scratchnet", "numpy", "torch"))


def check_values(values):
    for name in ("scratchnet", "numpy", "torch"):
        if name in PRESENT:
            assert values[name] > 0
        else:
            assert values.get(name) is None


def test_quick_bench_gemm_rows_are_verified(quick_run):
    code, report = quick_run
    assert code == 0
    assert report["config"]["threads"] == 2 and report["config"]["isa"]
    # the vCPUs' distance before and after the tables (None: a thread not running)
    for ns in (report["config"]["round_trip_ns"], report["round_trip_ns_end"]):
        assert ns is None or (isinstance(ns, int) and ns > 0)
    assert (report["config"]["torch"] is not None) == HAVE_TORCH
    assert "other_cpu" in report["gemm"]
    rows = report["gemm"]["rows"]
    assert [r["shape"] for r in rows] == [s.label for s in gemm.GEMM_SETTINGS["quick"]["shapes"]]
    for row in rows:
        assert row["ok"] is True, row
        assert 0 <= row["max_rel_err"] <= gemm.GEMM_TOLERANCE
        check_values(row["gflops"])
        assert row["speedup_vs_numpy"] > 0
        assert (row["speedup_vs_torch"] is not None) == HAVE_TORCH
    transposed = {(r["trans_a"], r["trans_b"]) for r in rows}
    assert {(True, False), (False, True)} <= transposed  # both backward-pass products


def test_quick_bench_mlp_rows_learn(quick_run):
    _, report = quick_run
    train, latency = report["mlp"]["rows"]
    assert (train["row"], train["unit"]) == ("sgd-b128", "s/epoch")
    assert (latency["row"], latency["unit"]) == ("infer-b1", "us/call")
    for row in (train, latency):
        check_values(row)
    assert set(train["accuracy"]) == set(PRESENT)
    for accuracy in train["accuracy"].values():  # 2 epochs on 10,000 images
        assert accuracy > 0.85
    assert latency["accuracy"] is None


def test_quick_bench_mlp_training_rows_give_their_share_of_sgemm(quick_run):
    _, report = quick_run
    table = report["mlp"]
    train, latency = table["rows"]
    assert table["sgemm_gflops"] > 0
    assert train["network"] == "784-128-10"
    assert train["flops_per_image"] == efficiency.training_flops(
        mlp.mlp_net("sgd-b128").model, (784,))
    images = mlp.MLP_SETTINGS["quick"]["train_size"]
    assert set(train["sgemm_share"]) == set(PRESENT)
    for name, share in train["sgemm_share"].items():  # FLOPs per second / SGEMM FLOPs per second
        rate = train["flops_per_image"] * images / train[name] / 1e9
        assert share == pytest.approx(rate / table["sgemm_gflops"], rel=1e-12)
        assert 0 < share < 10
    assert latency["sgemm_share"] is None and latency["flops_per_image"] is None


def test_sgemm_rate_is_timed_in_turn_with_the_training_rows(mnist, monkeypatch):
    """The training rows' shares are of NumPy's SGEMM rate timed in the same
    rounds as their epochs (one more competitor of interleaved()), not once
    before them; the rate is that turn's FLOPs over its seconds."""
    turn, rate = gemm.sgemm_turn(calls=3, size=64)
    turn()
    assert rate(0.5) == pytest.approx(3 * 2 * 64 ** 3 / 0.5 / 1e9)
    seen = []

    def fake_interleaved(fns, rounds, **kwargs):
        seen.append(set(fns))
        return {key: 2.0 if key == gemm.SGEMM_KEY else 1.0 for key in fns}

    monkeypatch.setattr(mlp, "interleaved", fake_interleaved)
    table = mlp.mlp_table(("sgd-b128",), epochs=1, train_size=1000, rounds=1, torch=None)
    assert seen[0] == {("sgd-b128", "scratchnet"), ("sgd-b128", "numpy"), gemm.SGEMM_KEY}
    assert table["sgemm_gflops"] == pytest.approx(
        mlp.SGEMM_CALLS * 2 * 1024 ** 3 / 2.0 / 1e9)


def test_quick_bench_cnn_rows(quick_run):
    _, report = quick_run
    table = report["cnn"]
    train, latency = table["rows"]
    assert (train["row"], train["unit"]) == ("cnn-adam-b128", "s/epoch")
    assert (latency["row"], latency["unit"]) == ("cnn-infer-b1", "us/call")
    for row in (train, latency):
        for name in ("scratchnet", "torch"):
            assert (row[name] is not None and row[name] > 0) == (name in PRESENT)
        assert (row["speedup_vs_torch"] is not None) == HAVE_TORCH
    quick = cnn.CNN_SETTINGS["quick"]
    assert table["steps_timed"] == quick["rounds"] * quick["calls"]
    assert table["sgemm_gflops"] > 0
    assert set(train["sgemm_share"]) == set(PRESENT) - {"numpy"}
    for share in train["sgemm_share"].values():
        assert 0 < share < 10
    if HAVE_TORCH:  # both start from the same weights
        assert table["initial_max_diff"] < 1e-5


def test_cnn_training_flops_follow_the_layer_shapes():
    model = cnn.benchmark_cnn()
    convs = [(32 * 24 * 24) * 1 * 25, (64 * 8 * 8) * 32 * 25]  # outputs x weights per output
    dense = [1024 * 128, 128 * 10]
    forward = sum(convs) + sum(dense)
    backward = 2 * forward - convs[0]  # the first layer computes no input gradient
    assert efficiency.training_flops(model, (1, 28, 28)) == 2 * (forward + backward)


@pytest.mark.parametrize("key, gflop_per_epoch", [("adam-b128", 24.5), ("deep-sgd-b128", 144.4)])
def test_mlp_training_flops_per_epoch(key, gflop_per_epoch):
    """784-128-10: 2 * (784*128 * 2 + 128*10 * 3) FLOPs per image (forward 2 per
    multiply-add, backward 2x forward, no input gradient for the first layer)."""
    model = mlp.mlp_net(key).model
    flops = efficiency.training_flops(model, (784,)) * 60_000
    assert round(flops / 1e9, 1) == gflop_per_epoch


def test_sgemm_share_is_training_rate_over_sgemm_rate():
    # 24.5 GFLOP in 0.245 s is 100 GFLOPS: half of a 200 GFLOPS SGEMM
    shares = efficiency.sgemm_shares(24.5e9, {"a": 0.245, "b": 0.49}, 200.0)
    assert shares == pytest.approx({"a": 0.5, "b": 0.25})


def test_a_share_above_the_sgemm_rate_is_flagged():
    def note(shares):
        out = io.StringIO()
        efficiency.print_share_note([{"sgemm_share": None}, {"sgemm_share": shares}], out)
        return out.getvalue()
    assert note({"scratchnet": 0.97, "torch": 0.5}) == ""
    assert "above 100%" in note({"scratchnet": 1.54, "torch": 0.5})


def test_interleaved_times_a_fixed_number_of_calls():
    calls = {"a": 0, "b": 0}

    def counter(key):
        def fn():
            calls[key] += 1
        return fn

    seconds = timing.interleaved({k: counter(k) for k in calls}, rounds=3, settle=0.0, calls=4)
    assert calls == {"a": 3 * (1 + 4), "b": 3 * (1 + 4)}  # one untimed call a round
    assert set(seconds) == {"a", "b"}


def test_tables_print_every_row(quick_run):
    _, report = quick_run
    out = io.StringIO()
    gemm.print_gemm_table(report["gemm"], 3, out)
    mlp.print_mlp_table(report["mlp"], 1, 10_000, out)
    text = out.getvalue()
    for row in report["gemm"]["rows"]:
        assert row["shape"] in text
    for row in report["mlp"]["rows"]:
        assert row["label"] in text
    [train_line] = [line for line in text.splitlines() if line.startswith("784-128-10 batch 128")]
    assert percents_of(report["mlp"]["rows"][0]["sgemm_share"]) in train_line
    assert f"NumPy SGEMM 1024^3 here: {report['mlp']['sgemm_gflops']:.1f} GFLOPS" in text
    assert "WRONG" not in text
    out = io.StringIO()
    cnn.print_cnn_table(report["cnn"], out)
    lines = out.getvalue().splitlines()
    assert "EXTRAPOLATED" in lines[1] and cnn.CNN_LABEL in lines[1]
    for row in report["cnn"]["rows"]:
        assert any(line.startswith(row["label"]) for line in lines), row["label"]


def test_a_table_of_inference_rows_alone_has_no_training_columns(quick_run):
    """bench_mlp.py --rows infer-b1 printed empty share and accuracy columns."""
    _, report = quick_run
    inference = dict(report["mlp"], rows=[r for r in report["mlp"]["rows"] if not r["accuracy"]])
    out = io.StringIO()
    mlp.print_mlp_table(inference, 1, 10_000, out)
    text = out.getvalue()
    assert inference["rows"] and "share of NumPy SGEMM" not in text
    assert "accuracy" not in text and "training on" not in text
    out = io.StringIO()
    mlp.print_mlp_table(report["mlp"], 1, 10_000, out)  # with a training row: both
    assert "share of NumPy SGEMM" in out.getvalue() and "training on" in out.getvalue()


def test_a_wrong_gemm_result_is_flagged(monkeypatch, capsys):
    monkeypatch.setattr(gemm, "GEMM_TOLERANCE", -1.0)  # no result can pass
    code = bench.run(gemm=dict(shapes=bench.parse_shapes("8"), repeat=1, block=0.0))
    out, err = capsys.readouterr()
    assert code == 1
    assert "WRONG" in out and "square 8" in err


def test_command_line_values_are_checked():
    assert [(s.m, s.k, s.n) for s in bench.parse_shapes("64, 2x3x4")] == [(64, 64, 64), (2, 3, 4)]
    assert bench.parse_rows("sgd-b32,infer-b1") == ["sgd-b32", "infer-b1"]
    for bad in ("0", "2x3", "ax2x3", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            bench.parse_shapes(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        bench.parse_rows("sgd-b64")
    with pytest.raises(argparse.ArgumentTypeError, match="no rows given"):
        bench.parse_rows(" , ")
    # a size whose matrices would not fit: refused before anything is allocated
    with pytest.raises(argparse.ArgumentTypeError, match="too large"):
        bench.parse_shapes("200000")
    with pytest.raises(argparse.ArgumentTypeError, match="too large"):
        bench.parse_shapes("16384x16385x1")
    assert [(s.m, s.k, s.n) for s in bench.parse_shapes("16384x16384x1")] == [(16384, 16384, 1)]
    # thread counts set_num_threads would refuse are refused by the parser
    assert bench.thread_count(str(_core.MAX_THREADS)) == _core.MAX_THREADS
    for bad in ("0", "-1", str(_core.MAX_THREADS + 1), "2.5"):
        with pytest.raises((argparse.ArgumentTypeError, ValueError)):
            bench.thread_count(bad)


@pytest.mark.parametrize("script, args", [
    ("bench_mlp.py", ["--threads", "2000"]), ("bench_gemm.py", ["--threads", "5000"]),
    ("bench_cnn.py", ["--threads", "5000"]), ("bench_conv_layers.py", ["--threads", "0"]),
    ("bench_conv_layers.py", ["--batch", "0"]), ("profile_cnn.py", ["--batch-size", "0"]),
    ("profile_cnn.py", ["--threads", "5000"]), ("bench_gemm.py", ["--sizes", "200000"]),
    ("bench_mpi.py", ["--rounds", "0"]), ("bench_contention.py", ["--threads", "9999"])])
def test_a_script_given_a_bad_value_says_so_without_a_traceback(script, args):
    """--threads 2000 gave a traceback from set_num_threads, --batch 0 one
    from NumPy, --sizes 200000 one of a 149 GiB allocation."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # the scratchnet under test: the tree's when built in place, else the installed one
    imported = os.path.dirname(os.path.dirname(_core.__file__))
    env = dict(os.environ,
               PYTHONPATH=os.pathsep.join([imported, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, os.path.join(root, "benchmarks", script), *args],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2, (out.returncode, out.stderr[-800:])
    assert "Traceback" not in out.stderr and "error:" in out.stderr


def test_more_threads_than_cpus_is_noted_before_the_run():
    """bench --threads 64 on 2 CPUs ran for minutes with nothing said."""
    import os
    from scratchnet.bench.machine import configured
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        os.cpu_count() or 1
    with configured(cpus + 1, None, None) as notes:
        assert any(f"{cpus + 1} threads on {cpus} CPUs: oversubscribed" in n for n in notes)
    with configured(1, None, None) as notes:
        assert not any("oversubscribed" in n for n in notes)


def test_figures_of_an_installed_copy_are_flagged_when_run_from_a_source_tree(tmp_path):
    # python benchmarks/bench_mlp.py puts benchmarks/ first on the path, not the
    # tree, so an installed scratchnet is the one measured: said, not silent
    from scratchnet.bench import machine
    tree = tmp_path / "checkout"
    (tree / "benchmarks").mkdir(parents=True)
    (tree / "scratchnet").mkdir()
    (tree / "scratchnet" / "__init__.py").write_text("")
    (tree / "pyproject.toml").write_text("")
    script = str(tree / "benchmarks" / "bench_mlp.py")
    assert machine.other_source_tree(script) == str(tree)
    ours = os.path.join(os.path.dirname(machine.PACKAGE_DIR), "benchmarks", "bench_mlp.py")
    assert machine.other_source_tree(ours) is None  # the tree that was imported
    assert machine.other_source_tree(str(tmp_path / "elsewhere" / "x.py")) is None
    assert machine.other_source_tree(str(tree / "examples" / "x.py")) is None
    assert machine.other_source_tree("") is None  # python -c
    notes = machine.environment_notes(torch=object())
    assert not any("imported from" in note for note in notes)  # pytest is not in a tree
