"""The official fixtures are ground truth: byte-identical to what the official code produced.

``tests/data/official/SHA256SUMS`` holds each file's hash as it was received from the generator;
any edit, regeneration or truncation of a fixture fails here before a parity test can be fooled.
The repository also carries everything its tests need: nothing may read a folder beside it.
"""
import hashlib
import os

import pytest

from tests.conftest import FIXTURES, REPO

OFFICIAL = REPO / 'tests' / 'data' / 'official'


def _manifest():
    rows = (OFFICIAL / 'SHA256SUMS').read_text().split('\n')
    return [tuple(r.split()) for r in rows if r.strip()]


def test_manifest_names_every_fixture():
    names = {name for _, name in _manifest()}
    on_disk = {p.name for p in OFFICIAL.glob('*.pt')}
    assert on_disk and on_disk <= names, f'fixtures without a recorded hash: {on_disk - names}'


@pytest.mark.parametrize('digest,name', _manifest(), ids=lambda v: v if v.endswith(('.pt', '.md')) else '')
def test_fixture_is_byte_identical(digest, name):
    data = (OFFICIAL / name).read_bytes()
    assert hashlib.sha256(data).hexdigest() == digest, f'{name} differs from the official file'


def test_tests_read_the_repository_copy():
    if 'MMDET_DDETR_FIXTURES' not in os.environ:  # the CUDA kit points at its own hashed copies
        assert FIXTURES.resolve() == OFFICIAL.resolve()


def test_nothing_reads_a_folder_beside_the_repository():
    """A clone alone passes: no file of the project names the sibling ``shared`` folder."""
    needle = '../' + 'shared'  # spelled apart so that this file does not match itself
    roots = ['Makefile', 'README.md', 'setup.py', '.ci', 'configs', 'docs', 'mmdet_ddetr',
             'tests', 'tools', 'requirements']
    offenders = []
    for root in roots:
        path = REPO / root
        files = [path] if path.is_file() else [p for p in path.rglob('*') if p.is_file()]
        for f in files:
            if f.suffix in ('.pt', '.pth', '.onnx', '.png', '.pyc') or '.venv' in f.parts:
                continue
            try:
                if needle in f.read_text(errors='ignore'):
                    offenders.append(str(f.relative_to(REPO)))
            except OSError:
                continue
    assert not offenders, f'files that read {needle}: {offenders}'
