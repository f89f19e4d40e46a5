"""benchmarks/harness.py: the table printer and the interleaving order the benchmark tables rely on."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "harness.py"
_spec = importlib.util.spec_from_file_location("bench_harness", _PATH)
harness = sys.modules["bench_harness"] = importlib.util.module_from_spec(_spec)  # dataclasses look it up
_spec.loader.exec_module(harness)


def test_markdown_table_columns_alignment_and_empty_cells():
    out = harness.markdown_table(["layer", "ms", "ratio"], "lrr", [["0 Conv", 1.5, "2.00x"], ["whole", "", ""]])
    assert out.splitlines() == [
        "| layer | ms | ratio |",
        "|---|---:|---:|",
        "| 0 Conv | 1.5 | 2.00x |",
        "| whole | | |",
    ]


@pytest.mark.parametrize("align, rows", [("lr", [["a", "b", "c"]]), ("lrr", [["a", "b"]]), ("lxr", [])])
def test_markdown_table_refuses_mismatched_shapes(align, rows):
    with pytest.raises(ValueError):
        harness.markdown_table(["a", "b", "c"], align, rows)


def test_interleaved_rotates_start_and_drops_warmup():
    calls: list[str] = []
    variants = [[lambda v=v, b=b: calls.append(v + b) for b in ("t", "o")] for v in "ABC"]
    samples = harness.interleaved(variants, runs=2, warmup=1)
    rounds = ["".join(calls[i:i + 6]) for i in range(0, len(calls), 6)]
    assert rounds == ["AtAoBtBoCtCo", "BtBoCtCoAtAo", "CtCoAtAoBtBo"]  # each variant's callables back to back
    assert [[len(s.wall) for s in v] for v in samples] == [[2, 2]] * 3  # warm-up round not kept
    assert all(s.cpu and s.median >= 0 for v in samples for s in v)


def test_opwise_min_keeps_first_seen_order_and_counts_missing_as_zero():
    assert list(harness.opwise_min([{"b": 2.0, "a": 1.0}, {"a": 0.5, "c": 3.0}]).items()) == [
        ("b", 0.0), ("a", 0.5), ("c", 0.0)]
