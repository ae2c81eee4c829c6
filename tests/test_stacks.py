"""Both stacks' pins and the package metadata agree (no install needed: reads the files)."""
import importlib.util
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
STACKS = ('openmmlab', 'onedl')


def _setup_module():
    spec = importlib.util.spec_from_file_location('_mmdet_ddetr_setup', REPO / 'setup.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # setup() itself only runs as __main__
    return module


def _pins(stack: str) -> dict:
    pins = {}
    for line in (REPO / 'requirements' / f'stack-{stack}.txt').read_text().splitlines():
        line = line.split('#')[0].strip()
        if line:
            m = re.fullmatch(r'([A-Za-z0-9_.-]+)==(\S+)', line)
            assert m, f'stack-{stack}.txt: {line!r} is not an exact pin'
            pins[m.group(1)] = m.group(2)
    return pins


@pytest.mark.parametrize('stack', STACKS)
def test_stack_pins_lie_in_the_extras_ranges(stack):
    extras = {Requirement(r).name: Requirement(r) for r in _setup_module().STACK_EXTRAS[stack]}
    pins = _pins(stack)
    assert pins.keys() == extras.keys()
    for name, version in pins.items():
        assert extras[name].specifier.contains(version), (stack, name, version)


def test_install_requires_forces_no_stack():
    setup = _setup_module()
    stack_dists = {name for stack in STACKS for name in _pins(stack)}
    required = {Requirement(r).name for r in setup.read_requirements('runtime.txt')}
    assert required and not required & stack_dists
    # the stacks differ by distribution name only, which is why no range could admit both
    assert {n.replace('onedl-', '').replace('mmdetection', 'mmdet') for n in _pins('onedl')} \
        == set(_pins('openmmlab'))


def test_no_fork_notices_in_our_output():
    """On the OneDL stack, importing our package (what every tool does first) and then what the
    tools import from mmdet prints neither the fork's OneDL-SDK notice nor its faster_coco_eval
    warning. (On the OpenMMLab stack there is nothing to drop; the test then checks that.)"""
    import subprocess
    import sys
    code = ('import warnings; warnings.simplefilter("always"); import mmdet_ddetr; '
            'from mmdet.apis import init_detector; from mmengine.runner import Runner; '
            'print("imported")')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == 'imported', proc.stdout
    for notice in ('Could not import OneDL', 'faster_coco_eval'):
        assert notice not in proc.stderr, proc.stderr[-3000:]
