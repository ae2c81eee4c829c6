"""The benchmark's GPU targets, computed from its rows (no model needed)."""
from .test_benchmark_vs_mmdet import load_tool


def rows(train_amp_ours, train_amp_peer, train_peer, infer_ours, infer_peer, mem_ours,
         mem_peer):
    note = 'higher is better; peer DeformableDETR'
    return [
        ('refine inference img/s', infer_ours, infer_peer, 1.0, note),
        ('refine inference peak MB', mem_ours, mem_peer, mem_ours / mem_peer, 'lower'),
        ('refine train step img/s', 5.0, train_peer, 1.0, note),
        ('refine train step peak MB', mem_ours, mem_peer, mem_ours / mem_peer, 'lower'),
        ('refine amp inference img/s', infer_ours / 2, infer_peer / 2, 1.0, note),
        ('refine amp inference peak MB', mem_ours, mem_peer, mem_ours / mem_peer, 'lower'),
        ('refine amp train step img/s', train_amp_ours, train_amp_peer, 1.0, note),
        ('refine amp train step peak MB', mem_ours, mem_peer, mem_ours / mem_peer, 'lower'),
    ]


def test_rows_parse_back():
    tool = load_tool()
    row = tool.parse_row(('single-scale amp train step peak MB', 10.0, 20.0, 0.5, 'lower'))
    assert (row['variant'], row['precision'], row['mode'], row['kind']) == \
        ('single-scale', 'amp', 'train step', 'memory')
    row = tool.parse_row(('smca inference img/s', 3.0, 2.0, 1.5, 'higher'))
    assert (row['variant'], row['precision'], row['mode'], row['kind']) == \
        ('smca', 'fp32', 'inference', 'speed')


def test_targets_against_mmdet_best():
    tool = load_tool()
    # Training: ours AMP 13 img/s vs mmdet's best of fp32 8 and AMP 10 -> 1.3x: met.
    met = tool.check_targets([tool.parse_row(r) for r in rows(13.0, 10.0, 8.0, 4.0, 4.0,
                                                              100.0, 100.0)])
    speed = {t['mode']: t for t in met if t['kind'] == 'speed'}
    assert speed['train step']['ratio'] == 1.3 and speed['train step']['target_met']
    assert speed['inference']['precision'] == 'fp32' and speed['inference']['target_met']
    assert all(t['target_met'] for t in met if t['kind'] == 'memory')
    # mmdet's fp32 training (14) beats its AMP (10): ours must beat 1.3 x 14.
    missed = tool.check_targets([tool.parse_row(r) for r in rows(13.0, 10.0, 14.0, 3.9, 4.0,
                                                                 101.0, 100.0)])
    assert {(t['mode'], t['kind'], t['precision']) for t in missed if not t['target_met']} == {
        ('train step', 'speed', 'amp'), ('inference', 'speed', 'fp32'),
        ('inference', 'memory', 'fp32'), ('train step', 'memory', 'fp32'),
        ('inference', 'memory', 'amp'), ('train step', 'memory', 'amp')}
