"""The benchmark's speed ratio pairs each iteration's two back-to-back runs."""
import importlib.util
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / 'tools/analysis_tools/benchmark_vs_mmdet.py'


def load_tool():
    spec = importlib.util.spec_from_file_location('benchmark_vs_mmdet', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paired_ratio_cancels_a_machine_slowdown():
    tool = load_tool()
    # Ours takes 0.9x the peer's time in every iteration while the machine slows down 2x.
    peer = [1.0, 1.0, 2.0, 2.0, 2.0]
    ours = [0.9 * t for t in peer]
    assert tool.paired_speed_ratio(ours, peer) == pytest.approx(1 / 0.9)
    # The median of the per-iteration ratios: one lucky iteration does not move it.
    assert tool.paired_speed_ratio([0.5, 0.9, 0.95], [1.0, 1.0, 1.0]) == pytest.approx(1 / 0.9)


def test_paired_ratio_needs_matching_iterations():
    tool = load_tool()
    with pytest.raises(ValueError, match='same, non-zero number'):
        tool.paired_speed_ratio([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match='same, non-zero number'):
        tool.paired_speed_ratio([], [])
