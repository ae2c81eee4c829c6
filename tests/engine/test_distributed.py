"""tools/dist_train.sh on CPU (gloo): 2 processes x 1 sample == 1 process x 2 samples.

Why they agree: DDP averages the two ranks' gradients, and each rank's loss is a mean over its
own samples, so the averaged gradient is the gradient of the mean over both samples -- the
1-process batch of 2. (DDETR's losses are normalised by the number of boxes averaged over
ranks -- reduce_mean of the avg factors -- which gives the same identity; see the slow DDETR
test.) What the 2-process run logs per iteration is rank 0's loss; the mean of the two ranks'
losses is what equals the single-process loss.

Tolerance: the sums happen in a different order (all-reduce of two per-sample gradients vs one
batched reduction), so the two runs differ by float32 rounding, ~1e-7 relative per step, and
AdamW carries the difference forward. We accept 1e-5 relative + 1e-6 absolute on every loss of
every iteration (measured: 4e-7 relative for the toy, 1.4e-7 for DDETR) -- orders of
magnitude below any real discrepancy (a wrong lr scaling or a lost
gradient changes losses at the 1e-2 level within a few steps). Dropout is off: with it, the
ranks would draw different masks than the single process (same statistics, other numbers).
"""
from pathlib import Path

import pytest

from tests.engine._helpers import (REPO, dist_env, dist_train_cmd, load_state, max_abs_diff,
                                   read_losses, run, train_cmd, write_toy_config)

RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(autouse=True)
def train_py_sets_up_cpu_distributed():
    # mmengine's launcher calls torch.cuda.set_device; without this call a CPU run dies with
    # "module 'torch._C' has no attribute '_cuda_setDevice'".
    if 'setup_distributed(' not in (REPO / 'tools/train.py').read_text():
        pytest.fail('tools/train.py must call mmdet_ddetr.engine.setup_distributed(cfg, '
                    'args.launcher) before building the Runner (see docs/distributed.md)')


def record_hook(out_dir: Path) -> str:
    return f"[dict(type='RecordLossHook', out_dir='{out_dir}')]"


def assert_losses_match(single, ranks, rtol: float = RTOL, atol: float = ATOL) -> float:
    """Every loss term of every iteration: 1-process value == mean of the 2 ranks' values.

    Returns the worst error as a fraction of the allowed one."""
    assert len(single) == len(ranks[0]) == len(ranks[1]) > 0
    worst = 0.0
    for s, r0, r1 in zip(single, ranks[0], ranks[1]):
        assert s['iter'] == r0['iter'] == r1['iter']
        for key in s:
            if 'loss' not in key:
                continue
            mean = (r0[key] + r1[key]) / 2
            err = abs(mean - s[key])
            worst = max(worst, err / (atol + rtol * abs(s[key])))
            assert err <= atol + rtol * abs(s[key]), (
                f'iter {s["iter"]} {key}: 1 process {s[key]!r}, mean of 2 ranks {mean!r}')
    return worst


def test_two_processes_equal_one_process_with_the_total_batch(tmp_path):
    single_dir, dist_dir = tmp_path / 'single', tmp_path / 'dist'
    single_dir.mkdir()
    dist_dir.mkdir()
    audit_dir = tmp_path / 'audit'
    audit_dir.mkdir()

    one = write_toy_config(tmp_path / 'one.py', max_epochs=2, batch_size=2, dropout=0.0,
                           custom_hooks=record_hook(single_dir))
    run(train_cmd(one, single_dir / 'wd'), timeout=120)

    two = write_toy_config(tmp_path / 'two.py', max_epochs=2, batch_size=1, dropout=0.0,
                           custom_hooks=record_hook(dist_dir))
    env = dist_env(dict(AUDIT_WATCH_DIR=str(dist_dir / 'wd'), AUDIT_OUT_DIR=str(audit_dir)))
    env['PYTHONPATH'] = str(Path(__file__).parent / '_audit_site') + ':' + env['PYTHONPATH']
    out = run(dist_train_cmd(two, dist_dir / 'wd', 2), timeout=180, env=env).stdout
    assert 'Distributed launcher: pytorch' in out or 'launcher: pytorch' in out

    single = read_losses(single_dir / 'losses_rank0.jsonl')
    ranks = [read_losses(dist_dir / f'losses_rank{r}.jsonl') for r in (0, 1)]
    assert ranks[0] != ranks[1]  # each rank really saw different samples
    assert_losses_match(single, ranks)
    diff = max_abs_diff(load_state(single_dir / 'wd' / 'epoch_2.pth'),
                        load_state(dist_dir / 'wd' / 'epoch_2.pth'))
    assert diff < 1e-5, diff

    # Only rank 0 writes into the work dir (checkpoints, last_checkpoint, log, scalars).
    written = {}
    for f in audit_dir.glob('writes_*.txt'):
        rank = f.name.split('_')[1]
        written.setdefault(rank, set()).update(f.read_text().split())
    assert '1' in written, 'rank 1 was not audited'
    assert not written['1'], f'rank 1 wrote {written["1"]}'
    rank0 = {Path(p).name for p in written['0']}
    assert {'epoch_1.pth', 'epoch_2.pth', 'last_checkpoint'} <= rank0
    assert any(n.endswith('.log') for n in rank0)


@pytest.mark.slow
def test_ddetr_two_processes_equal_one_process(tmp_path):
    """The same identity with the real model through tools/dist_train.sh.

    DDETR normalises its losses by box counts averaged over ranks (reduce_mean of the
    classification and box avg factors), so the mean over ranks of each rank's loss is the
    1-process loss. Two things would break the identity and are switched off here: dropout
    (different masks per process) and BatchNorm with batch statistics -- the quickstart trains
    BN with norm_eval=False, so its statistics come from each process' own batch (use SyncBN on
    GPUs, or frozen BN as in the paper configs). Random flips are off too (each process would
    draw its own). Same tolerance as the toy test; measured worst case over 8 iterations and all
    14 loss terms: 1.4e-7 relative (1.9e-6 absolute on a total loss of ~12).
    """
    from tests.engine._ddetr import make_tiny_dataset, write_ddetr_config
    data = make_tiny_dataset(tmp_path / 'data')
    single_dir, dist_dir = tmp_path / 'single', tmp_path / 'dist'
    single_dir.mkdir()
    dist_dir.mkdir()
    frozen_bn = "\nmodel['backbone'] = dict(norm_eval=True)\n"
    common = dict(max_epochs=2, dropout=0.0, flip=0.0, validate=False, extra=frozen_bn)
    one = write_ddetr_config(tmp_path / 'one.py', data, batch_size=2,
                             custom_hooks=record_hook(single_dir), **common)
    run(train_cmd(one, single_dir / 'wd'), timeout=600)
    two = write_ddetr_config(tmp_path / 'two.py', data, batch_size=1,
                             custom_hooks=record_hook(dist_dir), **common)
    run(dist_train_cmd(two, dist_dir / 'wd', 2), timeout=600, env=dist_env())

    single = read_losses(single_dir / 'losses_rank0.jsonl')
    ranks = [read_losses(dist_dir / f'losses_rank{r}.jsonl') for r in (0, 1)]
    assert ranks[0] != ranks[1]
    assert_losses_match(single, ranks)
    assert sorted(p.name for p in (dist_dir / 'wd').glob('*.pth')) == ['epoch_1.pth',
                                                                     'epoch_2.pth']
