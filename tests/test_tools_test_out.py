"""tools/test.py --out: the predictions pickle is written to a temporary file and renamed."""
import pickle

import pytest

from tests.tool_helpers import run_on_full_disk

DUMP = '''
from tests.tool_helpers import load_tool
tool = load_tool('tools/test.py')
evaluator = type('Evaluator', (), {{'metrics': []}})()
tool.add_dump_results(evaluator, {out!r})
# 10k predictions: far past the 4 KiB the disk has room for
evaluator.metrics[0].compute_metrics([dict(img_id=i, scores=[0.5] * 8) for i in range(10000)])
'''


@pytest.mark.slow
def test_out_on_a_full_disk_keeps_the_previous_results(tmp_path):
    out = tmp_path / 'results.pkl'
    out.write_bytes(pickle.dumps(['previous results']))
    proc = run_on_full_disk(DUMP.format(out=str(out)))
    assert proc.returncode != 0
    assert 'File too large' in proc.stderr, proc.stderr[-2000:]
    assert pickle.loads(out.read_bytes()) == ['previous results']
    assert sorted(p.name for p in tmp_path.iterdir()) == ['results.pkl']  # no temporary file
