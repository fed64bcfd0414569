"""``estimators._device_tables``: tables keyed by their contents, the least recently used evicted, and the
tables a CUDA graph captured kept."""

import pytest
import torch

from estimators import _device_tables


def test_a_table_is_built_once_and_keyed_by_its_contents():
    store = {}
    first = _device_tables.columns(store, torch.device("cpu"), ((10, 20), (1, 2)))
    assert [column.tolist() for column in first] == [[10, 20], [1, 2]]
    assert all(column.dtype == torch.int64 for column in first)
    assert _device_tables.columns(store, torch.device("cpu"), ((10, 20), (1, 2))) is first
    other = _device_tables.columns(store, torch.device("cpu"), ((10, 20), (1, 3)))
    assert other is not first and other[1].tolist() == [1, 3]
    assert _device_tables.kept(store) == 2


def test_the_least_recently_used_table_is_evicted(monkeypatch):
    monkeypatch.setattr(_device_tables, "LIMIT", 3)
    store, cpu = {}, torch.device("cpu")
    tables = [_device_tables.columns(store, cpu, ((address,),)) for address in range(3)]
    assert _device_tables.columns(store, cpu, ((0,),)) is tables[0]  # 0 is now the most recently used
    _device_tables.columns(store, cpu, ((3,),))  # evicts 1, the least recently used
    assert _device_tables.kept(store) == 3
    assert _device_tables.columns(store, cpu, ((0,),)) is tables[0]
    assert _device_tables.columns(store, cpu, ((2,),)) is tables[2]
    assert _device_tables.columns(store, cpu, ((1,),)) is not tables[1], "1 was evicted and is built anew"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graph capture needs a CUDA device")
def test_tables_used_in_a_capture_are_kept_and_none_is_built_there(monkeypatch):
    monkeypatch.setattr(_device_tables, "LIMIT", 1)
    store, device = {}, torch.device("cuda", torch.cuda.current_device())
    captured = _device_tables.columns(store, device, ((1,),))
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    assert _device_tables.columns(store, device, ((1,),)) is captured
    assert _device_tables.columns(store, device, ((2,),)) is None, "no table is built during a capture"
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    for address in range(2, 6):  # more than LIMIT others: the captured table stays
        _device_tables.columns(store, device, ((address,),))
    assert _device_tables.columns(store, device, ((1,),)) is captured
