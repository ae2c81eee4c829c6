"""docs/reading-guide.md lists every file of ours that runs in one training step, and no other.

The step is ``model.loss`` + ``backward()`` of a small variant; a profiler records the file of
every Python function called under ``mmdet_ddetr/`` (the autograd backward of our ops runs on
this thread on CPU, so it is recorded too).
"""
import copy
import re
import sys
import threading
from pathlib import Path
from typing import Set

import pytest
import torch

from tests.conftest import build_model, make_batch
from tests.variants import SMALL_VARIANTS

REPO = Path(__file__).resolve().parents[1]
PACKAGE = str(REPO / 'mmdet_ddetr') + '/'
GUIDE = REPO / 'docs' / 'reading-guide.md'

# guide section title -> (variant profiled, the issue 22 target)
SECTIONS = {
    'Deformable DETR, box refinement + two-stage': ('ddetr-refine-twostage', 8),
    'SMCA-DETR, multi-scale': ('smca-ms', 7),
}


def guide_list(title: str):
    """The numbered files of one section and the count its title states."""
    text = GUIDE.read_text()
    match = re.search(rf'^## {re.escape(title)} \((\d+) files\)\n(.*?)(?=^## |\Z)', text,
                      flags=re.M | re.S)
    assert match, f'{GUIDE.name} has no section "## {title} (N files)"'
    files = re.findall(r'^\d+\. `([^`]+)`', match.group(2), flags=re.M)
    return int(match.group(1)), files


def files_run_in_a_training_step(variant: str) -> Set[str]:
    torch.manual_seed(0)
    model = build_model(SMALL_VARIANTS[variant]())
    model.train()
    batch = make_batch([(96, 128), (80, 112)])
    seen = set()

    def profile(frame, event, _arg):
        if event == 'call' and frame.f_code.co_filename.startswith(PACKAGE):
            seen.add(frame.f_code.co_filename[len(PACKAGE):])

    # Restore whatever profiler was set (a coverage or timing tool), not None.
    previous = sys.getprofile(), threading.getprofile()
    sys.setprofile(profile)
    threading.setprofile(profile)
    try:
        losses = model.loss(batch['inputs'], copy.deepcopy(batch['data_samples']))
        sum(v for k, v in losses.items() if 'loss' in k).backward()
    finally:
        sys.setprofile(previous[0])
        threading.setprofile(previous[1])
    return seen


@pytest.mark.parametrize('title', list(SECTIONS))
def test_the_guide_lists_the_files_a_training_step_runs(title):
    variant, target = SECTIONS[title]
    stated, listed = guide_list(title)
    assert stated == len(listed), f'"{title}" says {stated} files but lists {len(listed)}'
    assert len(set(listed)) == len(listed), f'"{title}" lists a file twice: {listed}'
    run = files_run_in_a_training_step(variant)
    assert set(listed) == run, (
        f'"{title}" in {GUIDE.name}: listed but not run {sorted(set(listed) - run)}, run but '
        f'not listed {sorted(run - set(listed))}')
    assert len(run) <= target, f'{variant} runs {len(run)} files, issue 22 targets <= {target}'
