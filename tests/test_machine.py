"""zoo.machine: the peak-FLOP yardstick is measured once per machine key and then read back."""

import json

import pytest
import torch

import zoo.machine as machine


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path))
    return tmp_path / "machine" / "peak_flops.json"


def test_measured_once_then_reused(cache, monkeypatch):
    calls = []
    real = machine.measure_peak_flops

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(machine, "measure_peak_flops", counting)
    first = machine.peak_flops()
    assert not first["cached"] and first["flops"] > 1e8 and len(calls) == 1
    table = json.loads(cache.read_text())
    assert list(table) == [first["key"]] and table[first["key"]]["flops"] == first["flops"]
    again = machine.peak_flops()
    assert again["cached"] and again["flops"] == first["flops"] and len(calls) == 1
    assert not [p for p in cache.parent.iterdir() if p.name.startswith(".tmp")]   # written atomically


def test_keyed_by_threads_and_refreshable(cache, monkeypatch):
    monkeypatch.setattr(machine, "measure_peak_flops", lambda dev=None, size=None: 5e9)
    threads = torch.get_num_threads()
    a = machine.peak_flops()
    try:
        torch.set_num_threads(threads + 1)
        b = machine.peak_flops()
    finally:
        torch.set_num_threads(threads)
    assert a["key"] != b["key"] and not b["cached"]
    assert len(json.loads(cache.read_text())) == 2
    monkeypatch.setattr(machine, "measure_peak_flops", lambda dev=None, size=None: 7e9)
    assert machine.peak_flops(refresh=True)["flops"] == 7e9
    assert machine.peak_flops()["flops"] == 7e9


def test_a_damaged_cache_is_measured_again(cache, monkeypatch):
    cache.parent.mkdir(parents=True)
    cache.write_text("{not json")
    monkeypatch.setattr(machine, "measure_peak_flops", lambda dev=None, size=None: 3e9)
    res = machine.peak_flops()
    assert res["flops"] == 3e9 and not res["cached"]
    assert json.loads(cache.read_text())[res["key"]]["flops"] == 3e9


def test_gemm_rate_matches_its_own_definition():
    # a tiny GEMM is slower than the peak, never faster than a large one by much
    small = machine.measure_peak_flops(size=64, repeats=3)
    big = machine.measure_peak_flops(size=512, repeats=3)
    assert 0 < small and 0 < big
    assert small < 20 * big
