"""The single atomic writer: complete file or nothing, never a half-written one."""
import os
import stat

import pytest

from mmdet_ddetr.utils import atomic_open, atomic_write


def test_atomic_open_replaces_only_on_success(tmp_path):
    path = tmp_path / 'out.txt'
    path.write_text('old')
    with pytest.raises(RuntimeError):
        with atomic_open(str(path), 'w') as f:
            f.write('half')
            raise RuntimeError('killed mid-write')
    assert path.read_text() == 'old'
    assert os.listdir(tmp_path) == ['out.txt']  # no temporary file left behind
    with atomic_open(str(path), 'w') as f:
        f.write('new')
    assert path.read_text() == 'new'
    assert os.listdir(tmp_path) == ['out.txt']


def test_atomic_write_keeps_extension_and_cleans_up(tmp_path):
    seen = []

    def write(tmp):
        seen.append(tmp)
        with open(tmp, 'wb') as f:
            f.write(b'png')

    atomic_write(str(tmp_path / 'a.png'), write)
    assert seen[0].endswith('.png') and (tmp_path / 'a.png').read_bytes() == b'png'

    def fail(tmp):
        open(tmp, 'wb').close()
        raise ValueError('writer failed')

    with pytest.raises(ValueError):
        atomic_write(str(tmp_path / 'b.png'), fail)
    assert sorted(os.listdir(tmp_path)) == ['a.png']


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'):
        with atomic_open(str(tmp_path / 'missing' / 'x'), 'wb'):
            pass
    with pytest.raises(ValueError, match='mode must be'):
        with atomic_open(str(tmp_path / 'x'), 'ab'):
            pass


def test_new_files_get_the_umask_mode_and_replaced_files_keep_theirs(tmp_path):
    """Not mkstemp's private 0600: a written checkpoint or plot is readable like any file."""
    umask = os.umask(0o027)
    try:
        new = tmp_path / 'new.bin'
        with atomic_open(str(new)) as f:
            f.write(b'x')
        assert stat.S_IMODE(new.stat().st_mode) == 0o640
        new.chmod(0o604)
        atomic_write(str(new), lambda tmp: open(tmp, 'wb').close())
        assert stat.S_IMODE(new.stat().st_mode) == 0o604
    finally:
        os.umask(umask)
