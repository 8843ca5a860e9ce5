"""The GEMM tuned for this machine (scratchnet/_tuning.py, csrc/sn_blocking.c):
the choice rule, what the tuned blocks compute, the tuning file (rebuilt
when corrupt or made elsewhere), SCRATCHNET_TUNE=0 and a forced kernel."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from scratchnet import _core, _runtime, _tuning

SMALL = ((40, 48, 56),)  # fast timings for tests


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    """A user cache of the test's own; the kernel and blocks restored after."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("SCRATCHNET_ISA", raising=False)  # a forced kernel would win (tested below)
    monkeypatch.setattr(_runtime, "FORCED_ISA", None)
    monkeypatch.setattr(_tuning, "SHAPES", SMALL)
    monkeypatch.setattr(_tuning, "PAIR_CALLS", 20)
    monkeypatch.setattr(_tuning, "PAIR_ROUNDS", 1)
    isa, pair = _core.get_isa(), _core.pair_min_flops()
    blocks = {name: _core.gemm_blocking(name) for name in _core.supported_isas()}
    yield tmp_path
    _core.set_isa(isa)
    _core.set_pair_min_flops(pair)
    for name, b in blocks.items():
        _core.set_gemm_blocks(name, b["mc"] if b["tuned"] else 0, b["nc"] if b["tuned"] else 0)


def row(isa, mc, nc, seconds):
    return {"isa": isa, "mc": mc, "nc": nc, "seconds": seconds, "gflops": 1.0 / seconds}


def test_the_derived_blocks_and_the_best_kernel_give_way_only_to_a_clear_gain():
    # each kernel's first row is its derived blocks
    near = [row("avx2", 96, 2048, 1.00), row("avx2", 48, 2048, 0.98),
            row("avx512", 144, 2048, 1.01), row("avx512", 72, 2048, 0.99)]
    assert _tuning.choose(near, "avx512") == {
        "isa": "avx512", "blocks": {"avx2": [96, 2048], "avx512": [144, 2048]}}
    clear = [row("avx2", 96, 2048, 1.00), row("avx2", 48, 2048, 0.80),
             row("avx512", 144, 2048, 1.20), row("avx512", 72, 2048, 0.95)]
    assert _tuning.choose(clear, "avx512") == {
        "isa": "avx2", "blocks": {"avx2": [48, 2048], "avx512": [72, 2048]}}


def pair_row(flops, paired_us, alone_us):
    return {"hidden": flops // 784, "flops": flops, "paired_us": paired_us, "alone_us": alone_us}


def test_one_image_is_paired_from_where_the_halves_do_not_lose():
    """The halves are timed at run time too (they go alone where they would
    lose), so the tuner turns them off only where they lost by more than
    PAIR_MAX_LOSS even so."""
    never = _core.gemm_blocking(_core.get_isa())["small_parallel_min"]
    small, large = 784 * 128, 784 * 256
    both = [pair_row(small, 1.0, 2.0), pair_row(large, 2.0, 4.0)]
    assert _tuning.choose_pair(both) == 0  # the default threshold
    assert _tuning.choose_pair(both[::-1]) == 0  # in any order
    only_large = [pair_row(small, 3.5, 2.2), pair_row(large, 5.0, 6.5)]
    assert _tuning.choose_pair(only_large) == large
    # about as fast as one thread (where the run-time timing keeps them alone)
    # (a file made while the vCPUs were far: 5% is noise, not a reason to
    # turn them off for good)
    assert _tuning.choose_pair([pair_row(small, 2.10, 2.0), pair_row(large, 4.1, 4.0)]) == 0
    assert _tuning.choose_pair([pair_row(small, 2.30, 2.0), pair_row(large, 4.1, 4.0)]) == large
    # a loss for the larger network: the smaller one's gain alone is noise
    assert _tuning.choose_pair([pair_row(small, 1.0, 2.0), pair_row(large, 4.5, 4.0)]) == never


def test_timing_the_pair_restores_what_it_found(cache_home):
    threads = _core.get_num_threads()
    _core.set_pair_min_flops(784 * 256)
    rows = _tuning.time_pair(rounds=1, calls=10)
    assert _core.pair_min_flops() == 784 * 256 and _core.get_num_threads() == threads
    assert [r["flops"] for r in rows] == [784 * h for h in _tuning.PAIR_HIDDEN]
    assert all(0 < r["paired_us"] < 1e5 and 0 < r["alone_us"] < 1e5 for r in rows)


def test_the_pair_threshold_takes_whole_numbers_in_range_only(cache_home):
    never = _core.gemm_blocking(_core.get_isa())["small_parallel_min"]
    for bad in (1.5, True, np.float32(3), "32768", None):
        with pytest.raises(TypeError, match="must be an int"):
            _core.set_pair_min_flops(bad)
    for bad in (-1, never + 1, 2 ** 63, 2 ** 70):
        with pytest.raises(ValueError, match="refused"):
            _core.set_pair_min_flops(bad)
    _core.set_pair_min_flops(np.int64(never))
    assert _core.pair_min_flops() == never


def test_the_pair_timing_switch_takes_bools_only():
    assert _core.pair_timing() is True  # the default: timed at run time
    for bad in (1, 0, "yes", None, 1.0):
        with pytest.raises(TypeError, match="must be a bool"):
            _core.set_pair_timing(bad)
    try:
        _core.set_pair_timing(False)
        assert _core.pair_timing() is False
    finally:
        _core.set_pair_timing(True)
    assert _core.pair_timing() is True


def test_a_failed_tuning_puts_back_what_it_found(cache_home, monkeypatch):
    """A tuning that fails half way (here the pair's timing) left the timed
    kernel, blocks and the default threshold in use, and configure() then
    said the blocks were derived."""
    never = _core.gemm_blocking(_core.get_isa())["small_parallel_min"]
    _core.set_pair_min_flops(never)
    for isa in _core.supported_isas():
        _core.set_gemm_blocks(isa, 0, 0)
    before = (_core.get_isa(), {isa: _core.gemm_blocking(isa) for isa in _core.supported_isas()})

    def broken():
        raise ZeroDivisionError("timing went wrong")

    monkeypatch.setattr(_tuning, "time_pair", broken)
    monkeypatch.setattr(_tuning, "choose", lambda timings, default_isa=None: {
        "isa": _core.supported_isas()[0],
        "blocks": {isa: [_core.gemm_blocking(isa)["mr"], _core.gemm_blocking(isa)["nr"]]
                   for isa in _tuning._simd_isas()}})
    with pytest.raises(ZeroDivisionError):
        _tuning.tune()
    assert _core.pair_min_flops() == never
    assert (_core.get_isa(), {isa: _core.gemm_blocking(isa)
                              for isa in _core.supported_isas()}) == before
    _tuning.configure()
    assert "tuning failed (ZeroDivisionError" in _tuning.STATE["detail"]
    assert not any(_core.gemm_blocking(isa)["tuned"] for isa in _core.supported_isas())


def test_the_tuned_pair_threshold_is_applied_and_saved(cache_home, monkeypatch):
    never = _core.gemm_blocking(_core.get_isa())["small_parallel_min"]
    monkeypatch.setattr(_tuning, "time_pair", lambda: [pair_row(784 * 128, 3.5, 2.2),
                                                       pair_row(784 * 256, 5.0, 6.5)])
    choice, _, _ = _tuning.tune()
    assert choice["pair_min_flops"] == _core.pair_min_flops() == 784 * 256
    _core.set_pair_min_flops(never)
    _tuning.configure()  # an import: read back and applied
    assert _tuning.STATE["detail"].startswith("read from")
    assert _core.pair_min_flops() == 784 * 256


def test_candidates_are_on_the_tile_and_start_with_the_derived_blocks():
    for isa in _core.supported_isas():
        b = _core.gemm_blocking(isa)
        pairs = _tuning.candidates(isa)
        derived = _core.gemm_blocking(isa)  # candidates() leaves the derived blocks set
        assert pairs[0] == (derived["mc"], derived["nc"]) and len(set(pairs)) == len(pairs) > 3
        assert all(mc % b["mr"] == 0 and nc % b["nr"] == 0 for mc, nc in pairs)


def test_timing_restores_what_it_found_and_times_every_candidate(cache_home):
    threads = _core.get_num_threads()
    isa = _core.get_isa()
    rows = _tuning.time_candidates(rounds=1)
    assert _core.get_num_threads() == threads and _core.get_isa() == isa
    assert len(rows) == sum(len(_tuning.candidates(i)) for i in _tuning._simd_isas())
    assert all(r["seconds"] > 0 and np.isfinite(r["gflops"]) for r in rows)


def test_the_tuned_choice_computes_the_same_bits_as_the_derived_blocks(cache_home):
    rng = np.random.default_rng(1)
    A = rng.standard_normal((300, 517), dtype=np.float32)
    B = rng.standard_normal((517, 389), dtype=np.float32)
    choice, _, saved = _tuning.tune()
    assert saved.startswith("saved to")
    tuned = _core.gemm(A, B, np.empty((300, 389), np.float32))
    isa = choice["isa"]
    assert _core.get_isa() == isa and _core.gemm_blocking(isa)["tuned"]
    _core.set_gemm_blocks(isa, 0, 0)
    derived = _core.gemm(A, B, np.empty((300, 389), np.float32))
    np.testing.assert_array_equal(tuned, derived)
    np.testing.assert_allclose(tuned, A.astype(np.float64) @ B, rtol=1e-4, atol=1e-4)
    # every candidate the C code accepts gives those bits too
    for mc, nc in _tuning.candidates(isa):
        _core.set_gemm_blocks(isa, mc, nc)
        np.testing.assert_array_equal(_core.gemm(A, B, np.empty_like(tuned)), derived)


def test_a_saved_choice_is_read_back_and_applied(cache_home):
    choice, _, _ = _tuning.tune()
    path = cache_home / "scratchnet" / "tuning.json"
    assert path.is_file()
    loaded, why = _tuning.load()
    assert loaded == choice and why == f"read from {path}"


@pytest.mark.parametrize("changed", ["build", "rules"])
def test_a_tuning_file_from_another_build_of_the_same_version_is_timed_again(cache_home,
                                                                             monkeypatch,
                                                                             changed):
    """The file is keyed by the build's hash (of the compiled sources and
    flags: setup.py compiles it in) and the tuning rules' (of _tuning.py):
    a development build with other kernels or other rules, the same version
    number, does not take up the choice an older one made."""
    assert re.fullmatch("[0-9a-f]{16}", _core.build_id())
    assert re.fullmatch("[0-9a-f]{16}", _tuning._rules_hash())
    _tuning.tune()
    assert _tuning.load()[0] is not None
    if changed == "build":
        monkeypatch.setattr(_core, "build_id", lambda: "0123456789abcdef")
    else:
        monkeypatch.setattr(_tuning, "_rules_hash", lambda: "0123456789abcdef")
    choice, why = _tuning.load()
    assert choice is None and "timed again" in why


@pytest.mark.parametrize("damage", ["not json", "truncated", "other cpu", "other version",
                                    "other kc", "other format", "off the tile", "unknown isa",
                                    "beyond a C integer", "nested too deep", "too large",
                                    "generic beside a SIMD kernel", "no pair threshold",
                                    "pair threshold out of range", "pair threshold not an int",
                                    "pair threshold a bool"])
def test_a_damaged_or_foreign_tuning_file_is_timed_again(cache_home, damage):
    _tuning.tune()
    path = cache_home / "scratchnet" / "tuning.json"
    text = path.read_text()
    record = json.loads(text)
    isa = record["choice"]["isa"]
    if damage == "generic beside a SIMD kernel" and _tuning._simd_isas() == ["generic"]:
        pytest.skip("the generic kernel is the only one here")
    if damage == "not json":
        path.write_text("{not json")
    elif damage == "nested too deep":  # json's parser recurses
        path.write_text("[" * 100_000 + "]" * 100_000)
    elif damage == "too large":  # what is read stays bounded
        path.write_text(text + " " * _tuning.MAX_FILE_BYTES)
    elif damage == "truncated":
        path.write_text(text[: len(text) // 2])
    else:
        if damage == "other cpu":
            record["machine"]["cpu"] = "Some Other CPU"
        elif damage == "other version":
            record["machine"]["version"] = "0.0.1"
        elif damage == "other kc":  # timed by a build that derived another kc
            record["machine"]["kc"][isa] //= 2
        elif damage == "other format":
            record["file_version"] = 99
        elif damage == "off the tile":
            record["choice"]["blocks"][isa] = [_core.gemm_blocking(isa)["mr"] + 1, 2048]
        elif damage == "unknown isa":
            record["choice"]["isa"] = "sse9"
        elif damage == "beyond a C integer":  # was OverflowError: tuning off for good
            record["choice"]["blocks"][isa] = [2 ** 70, 8192]
        elif damage == "generic beside a SIMD kernel":  # never tune()'s choice here
            record["choice"]["isa"] = "generic"
        elif damage == "no pair threshold":  # a file from before it was timed
            del record["choice"]["pair_min_flops"]
        elif damage == "pair threshold out of range":
            record["choice"]["pair_min_flops"] = \
                _core.gemm_blocking(isa)["small_parallel_min"] + 1
        elif damage == "pair threshold not an int":
            record["choice"]["pair_min_flops"] = 32768.0
        elif damage == "pair threshold a bool":  # an int to isinstance()
            record["choice"]["pair_min_flops"] = True
        path.write_text(json.dumps(record))
    choice, why = _tuning.load()
    assert choice is None and "timed again" in why
    _tuning.configure()  # what an import does: times again and rewrites the file
    assert _tuning.STATE["source"] == "tuned" and "timed now" in _tuning.STATE["detail"]
    assert _tuning.load()[0] is not None


def test_an_unwritable_cache_still_tunes(cache_home):
    target = cache_home / "scratchnet"
    target.write_text("a file where the folder should be")
    choice, _, saved = _tuning.tune()
    assert saved.startswith("not saved") and _core.get_isa() == choice["isa"]
    assert str(target) in saved  # where: "not saved (File exists)" named no path


def run_python(code, env_extra, cache_home):
    env = {k: v for k, v in os.environ.items() if k not in ("SCRATCHNET_ISA", "SCRATCHNET_TUNE")}
    env.update(XDG_CACHE_HOME=str(cache_home), **env_extra)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(_core.__file__)), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=cache_home,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_scratchnet_tune_0_keeps_the_derived_blocks_and_a_forced_kernel_wins(cache_home):
    code = ("import json, scratchnet as sn; from scratchnet import _core; "
            "i = sn.info(); print(json.dumps([i['isa'], i['tuning'], "
            "any(b['tuned'] for b in i['gemm_blocks'].values())]))")
    isa, detail, tuned = json.loads(run_python(code, {"SCRATCHNET_TUNE": "0"}, cache_home))
    assert detail.startswith("SCRATCHNET_TUNE=0") and not tuned and isa == _core.best_isa()
    assert not (cache_home / "scratchnet" / "tuning.json").exists()
    isa, detail, tuned = json.loads(run_python(code, {}, cache_home))  # tunes, saves
    assert tuned and "timed now" in detail
    check = ("import numpy as np, scratchnet as sn; from scratchnet import _core; "
             "a = np.random.default_rng(0).standard_normal((70, 90), dtype=np.float32); "
             "c = _core.gemm(a, a.T.copy(), np.empty((70, 70), np.float32)); "
             "r = _core.gemm(a, a.T.copy(), np.empty((70, 70), np.float32), naive=True); "
             "print(_core.get_isa(), sn.info()['tuning'].split()[0], "
             "float(np.abs(c - r).max()))")
    isa, how, err = run_python(check, {"SCRATCHNET_ISA": "generic"}, cache_home).split()
    assert (isa, how) == ("generic", "read") and float(err) < 1e-3


def test_a_cache_path_that_is_not_a_regular_file_is_timed_again_without_blocking(cache_home):
    """A FIFO at the path blocked open() and the import for ever."""
    import threading
    path = cache_home / "scratchnet" / "tuning.json"
    path.parent.mkdir(parents=True)
    os.mkfifo(path)
    result = []
    reader = threading.Thread(target=lambda: result.append(_tuning.load()), daemon=True)
    reader.start()
    reader.join(timeout=20)
    if reader.is_alive():  # blocked in open(): a writer lets it go, and the test fails
        with open(path, "w"):
            pass
        reader.join()
        pytest.fail("load() blocked on a FIFO")
    choice, why = result[0]
    assert choice is None and "not a regular file" in why
    _tuning.configure()  # times again, and the file it saves replaces the FIFO
    assert _tuning.STATE["source"] == "tuned" and path.is_file() and _tuning.load()[0]


def test_a_choice_that_was_unreadable_is_timed_and_saved_again_at_the_next_import(cache_home):
    """An OverflowError in the checks reached configure()'s catch-all, which
    neither tuned nor rewrote: every import after said "tuning failed"."""
    _tuning.tune()
    path = cache_home / "scratchnet" / "tuning.json"
    record = json.loads(path.read_text())
    record["choice"]["blocks"][record["choice"]["isa"]] = [2 ** 63, 8192]
    path.write_text(json.dumps(record))
    _tuning.configure()
    assert _tuning.STATE["source"] == "tuned" and "timed now" in _tuning.STATE["detail"]
    assert _tuning.load()[0] is not None


def test_the_tune_command_names_the_gemms_it_timed(cache_home, monkeypatch, capsys):
    """With the generic kernel alone the shapes are cut to 512: the header
    named the uncut ones."""
    from scratchnet import cli
    monkeypatch.setattr(_tuning, "SHAPES", ((600, 48, 40),))
    monkeypatch.setattr(_tuning, "_simd_isas", lambda: ["generic"])
    assert _tuning.timed_shapes() == [(512, 48, 40)]
    assert cli.main(["tune"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "512x48x40" in header and "600" not in header


def test_tune_and_info_show_the_pair_decision(cache_home, monkeypatch, capsys):
    from scratchnet import cli
    monkeypatch.setattr(_tuning, "time_pair", lambda: [pair_row(784 * 128, 3.5, 2.2),
                                                       pair_row(784 * 256, 5.0, 6.5)])
    assert cli.main(["tune"]) == 0
    out = capsys.readouterr().out
    assert "H  128 (100352 multiply-adds)  halves   3.50  one thread   2.20" in out
    assert "in two halves (one for a helper thread) from 200704 multiply-adds" in out
    assert cli.main(["info"]) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("pair_min_flops")]
    assert line and "from 200704 multiply-adds, where timed faster at run time" in line[0]
    _core.set_pair_min_flops(_core.gemm_blocking(_core.get_isa())["small_parallel_min"])
    assert cli.main(["info"]) == 0
    assert "a helper not worth it" in capsys.readouterr().out


def test_a_refused_scratchnet_isa_leaves_the_tuned_kernel(cache_home, monkeypatch):
    """SCRATCHNET_ISA=sse9 is refused with a warning at import; it kept the
    tuned kernel from being applied all the same (on a CPU with AVX2 and
    AVX-512, the best kernel instead of the faster one timed)."""
    applied = []
    monkeypatch.setattr(_core, "set_isa", applied.append)
    monkeypatch.setenv("SCRATCHNET_ISA", "sse9")
    choice = {"isa": "avx2", "blocks": {}, "pair_min_flops": 0}
    _tuning.apply(choice)  # FORCED_ISA None: the import refused the name
    assert applied == ["avx2"]
    monkeypatch.setattr(_runtime, "FORCED_ISA", "generic")  # one the import accepted
    _tuning.apply(choice)
    assert applied == ["avx2"]
