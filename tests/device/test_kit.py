"""The GPU kit's checks (tools/device/kit.py) on small made-up files: no download needed."""
import hashlib
import importlib.util
from pathlib import Path

import pytest

DEVICE_TOOLS = Path(__file__).resolve().parents[2] / 'tools' / 'device'


def load(name: str):
    spec = importlib.util.spec_from_file_location(f'device_{name}', DEVICE_TOOLS / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


kit = load('kit')


def write_lock(tmp_path: Path, files: dict) -> Path:
    lines = [f'{name} 1.0 {kind} {hashlib.sha256(data).hexdigest()} {name}-1.0.{ext}'
             for name, (kind, ext, data) in files.items()]
    lock = tmp_path / 'lock'
    lock.write_text('# comment\n' + '\n'.join(lines) + '\n')
    return lock


def test_the_shipped_lock_parses_and_covers_the_kit():
    entries = kit.read_lock()
    names = {e.name for e in entries}
    assert {'mmengine', 'mmdet', 'pycocotools', 'mmcv', 'setuptools'} <= names
    assert [e.kind for e in entries if e.name == 'mmcv'] == ['sdist']
    assert all(e.file.endswith('.whl') for e in entries if e.kind == 'wheel')
    assert 'torch' in kit.machine_packages() and 'mmcv' not in kit.machine_packages()


def test_malformed_lock_line_is_named(tmp_path):
    lock = tmp_path / 'lock'
    lock.write_text('mmdet 3.3.0 wheel nothex mmdet.whl\n')
    with pytest.raises(ValueError, match=r'lock:1: expected'):
        kit.read_lock(lock)


def test_check_states(tmp_path):
    lock = write_lock(tmp_path, {'a': ('wheel', 'whl', b'aaa'), 'b': ('sdist', 'tar.gz', b'b')})
    root = tmp_path / 'kit'
    official = tmp_path / 'official'
    official.mkdir()
    (official / 'f.pt').write_bytes(b'fixture')
    (official / 'SHA256SUMS').write_text(f'{hashlib.sha256(b"fixture").hexdigest()}  f.pt\n'
                                         f'{hashlib.sha256(b"doc").hexdigest()}  FORMAT.md\n')
    assert kit.check(root, lock, official)['status'] == 'not-prepared'
    assert 'prepare.sh' in kit.check(root, lock, official)['message']
    (root / 'wheels').mkdir(parents=True)
    (root / 'sdist').mkdir()
    (root / 'wheels' / 'a-1.0.whl').write_bytes(b'aaa')
    state = kit.check(root, lock, official)
    assert state['status'] == 'failed'
    assert any('b-1.0.tar.gz is missing' in e for e in state['errors'])
    (root / 'sdist' / 'b-1.0.tar.gz').write_bytes(b'tampered')
    assert [e.name for e in kit.problems(root, kit.read_lock(lock))] == ['b']
    (root / 'sdist' / 'b-1.0.tar.gz').write_bytes(b'b')
    kit.write_manifest(root, lock)
    assert kit.check(root, lock, official)['status'] == 'ok'
    assert kit.check(root, lock, official)['fixtures'] == ['f.pt']
    assert kit.check(root, lock, official)['prebuilt']['status'] == 'absent'
    (root / 'prebuilt').mkdir()
    (root / 'prebuilt' / 'mmcv-2.1.0-cp312-cp312-linux_x86_64.whl').write_bytes(b'w')
    state = kit.check(root, lock, official)  # a wheel the manifest does not know: named, kit ok
    assert state['status'] == 'ok' and state['prebuilt']['status'] == 'mismatch'
    assert 'mmcv-2.1.0-cp312-cp312-linux_x86_64.whl has no row' in state['prebuilt']['message']
    (root / 'prebuilt' / 'mmcv-2.1.0-cp312-cp312-linux_x86_64.whl').unlink()
    (official / 'f.pt').write_bytes(b'changed')
    assert kit.check(root, lock, official)['errors'] == [f'{official / "f.pt"} differs from SHA256SUMS']
    (official / 'f.pt').unlink()
    assert kit.check(root, lock, official)['errors'] == [f'{official / "f.pt"} is missing']


def test_the_official_fixtures_are_checked_where_they_travel():
    """The fixtures travel once, in the working tree; the kit holds no copy of them."""
    names, errors = kit.check_official()
    assert errors == [] and len(names) == 4 and all(n.endswith('.pt') for n in names)
    assert 'fixtures' not in kit.KIT_ENTRIES


def test_everything_in_the_kit_folder_counts_and_strays_are_named(tmp_path):
    """``carry=[".device"]`` takes the whole folder: a build tree or venv left in it is an error
    (it once held a 4.7 GB build environment that the kit's size check did not count)."""
    lock = write_lock(tmp_path, {'a': ('wheel', 'whl', b'aaa')})
    root = tmp_path / 'kit'
    (root / 'wheels').mkdir(parents=True)
    (root / 'wheels' / 'a-1.0.whl').write_bytes(b'aaa')
    kit.write_manifest(root, lock)
    assert kit.check(root, lock)['status'] == 'ok'
    (root / 'build-env' / 'lib').mkdir(parents=True)
    (root / 'build-env' / 'lib' / 'big.so').write_bytes(b'x' * 1000)
    state = kit.check(root, lock)
    assert state['status'] == 'failed'
    assert state['bytes'] == 3 + 1000 + (root / 'MANIFEST.tsv').stat().st_size
    assert len(state['errors']) == 1 and 'build-env (0.0 MB) is not part of the kit' in \
        state['errors'][0], state['errors']


def report(*items):
    return {'install': [dict(requested=req, metadata=dict(name=name, version='1',
                                                          requires_dist=deps))
                        for name, req, deps in items]}


def test_closure_walks_only_what_travels():
    lock = [kit.LockEntry('mmengine', '1', 'wheel', '0' * 64, 'x'),
            kit.LockEntry('yapf', '1', 'wheel', '0' * 64, 'y')]
    resolution = report(
        ('mmengine', True, ['yapf', 'rich', 'opencv-python>=3', 'pytest; extra == "tests"']),
        ('yapf', False, ['platformdirs>=3', 'tomli>=2; python_version < "3.11"']),
        ('platformdirs', False, []), ('rich', False, ['markdown-it-py']),
        ('markdown-it-py', False, ['mdurl']), ('mdurl', False, []),
        ('opencv-python', False, ['numpy']), ('numpy', False, []), ('pytest', False, []))
    machine = {'rich', 'opencv-python-headless', 'numpy'}
    # platformdirs is reached through yapf, which travels; rich's needs are the machine's;
    # opencv-python is met by the machine's headless build; extras and unresolved markers
    # (tomli on 3.12) do not count.
    assert kit.closure_gaps(resolution, lock, machine) == ['platformdirs==1']
    lock.append(kit.LockEntry('platformdirs', '1', 'wheel', '0' * 64, 'p'))
    assert kit.closure_gaps(resolution, lock, machine) == []


def test_mmcv_thc_patch(tmp_path):
    check = load('cuda_check')
    src = tmp_path / 'mmcv-2.1.0'
    helper = src / 'mmcv/ops/csrc/common/pytorch_cuda_helper.hpp'
    kernel = src / 'mmcv/ops/csrc/pytorch/cuda/ms_deform_attn_cuda.cu'
    for path in (helper, kernel):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('#include <ATen/ATen.h>\n#include <THC/THCAtomics.cuh>\n')
    torch_include = tmp_path / 'include'
    (torch_include / 'THC').mkdir(parents=True)
    (torch_include / 'THC' / 'THCAtomics.cuh').write_text('')
    assert check.patch_mmcv_sources(src, torch_include) == []  # torch still has it
    (torch_include / 'THC' / 'THCAtomics.cuh').unlink()
    assert len(check.patch_mmcv_sources(src, torch_include)) == 2
    assert '<ATen/cuda/Atomic.cuh>' in kernel.read_text()
    assert 'THC' not in helper.read_text()


def test_the_carry_limit_counts_the_working_tree_too(tmp_path, monkeypatch):
    """64 MiB is for the working tree and the kit together (the tree is ~12 MiB, half of it
    the official fixtures): a kit that fits alone can still be too much."""
    import subprocess
    lock = write_lock(tmp_path, {'a': ('wheel', 'whl', b'a' * 600)})
    subprocess.run(['git', 'init', '-q', str(tmp_path)], check=True)
    (tmp_path / 'tracked.bin').write_bytes(b't' * 500)
    root = tmp_path / 'kit'
    (root / 'wheels').mkdir(parents=True)
    (root / 'wheels' / 'a-1.0.whl').write_bytes(b'a' * 600)
    (tmp_path / '.gitignore').write_text('/kit/\n')
    kit.write_manifest(root, lock)
    assert kit.working_tree_bytes(tmp_path) == 500 + (tmp_path / '.gitignore').stat().st_size \
        + (tmp_path / 'lock').stat().st_size
    kit_alone = kit.kit_bytes(root)
    monkeypatch.setattr(kit, 'MAX_CARRY_BYTES', kit_alone + 100)
    state = kit.check(root, lock)
    assert state['status'] == 'failed', state
    assert 'and the working tree' in state['errors'][0] and 'device tool carries' in state['errors'][0]
    (tmp_path / 'tracked.bin').unlink()
    (tmp_path / 'lock').rename(root.parent / '.lock')  # untracked files count, hidden ones too
    lock = root.parent / '.lock'
    assert kit.check(root, lock)['status'] == 'failed'
    (tmp_path / '.gitignore').write_text('/kit/\n/.lock\n')
    assert kit.check(root, lock)['status'] == 'ok'


def test_the_gpu_stand_in_installs_only_what_the_gpu_machine_has():
    """gpu_python.sh (the rehearsal's and the prebuild's Python) may add only packages of the
    GPU machine's image: anything else would make the rehearsal pass where the GPU run fails."""
    import re
    script = (DEVICE_TOOLS / 'gpu_python.sh').read_text()
    image = re.search(r'^IMAGE=\(([^)]*)\)', script, re.M).group(1).split()
    assert {'numpy', 'opencv-python-headless', 'pytest', 'setuptools'} <= set(image)
    assert [p for p in image if kit.normalize(p) not in kit.machine_packages()] == []
    assert 'torch==2.11.0' in script
