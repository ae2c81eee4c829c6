"""The GPU kit's file checks: lock file, hashes, manifest, dependency closure (stdlib only).

Used by ``prepare.sh`` here (with the package index) and by ``cuda_check.py`` on the GPU machine
(offline, its own Python 3.12), so it imports nothing outside the standard library.

    python tools/device/kit.py missing   [--root .device]   # lock lines still to download
    python tools/device/kit.py check     [--root .device]   # every file present, hashes equal
    python tools/device/kit.py manifest  [--root .device]
    python tools/device/kit.py closure   REPORT.json        # pip --report vs what travels

Layout of the kit folder (``.device/``, ignored by git)::

    wheels/*.whl          the lock's wheels
    sdist/mmcv-2.1.0.tar.gz
    prebuilt/*.whl        optional: the sm_90 mmcv wheel of prebuild_mmcv.py, with its
    prebuilt/BUILD.json   checks; cuda_check installs it only if prebuilt_state() is ok
    MANIFEST.tsv          path, name, version, sha256, size of every file above

The official fixtures travel once, in the working tree (``tests/data/official``); ``check``
verifies them against that folder's ``SHA256SUMS`` there as here.
"""
import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, Iterable, List, NamedTuple, Optional

HERE = Path(__file__).resolve().parent
LOCK = HERE / 'requirements-gpu.lock'
MACHINE_PACKAGES = HERE / 'gpu_machine_packages.txt'
#: The device tool carries at most 64 MiB: the working tree and the kit together.
MAX_CARRY_BYTES = 64 * 2**20
#: What the kit folder holds (see the layout above); anything else would travel with it.
KIT_ENTRIES = ('wheels', 'sdist', 'prebuilt', 'MANIFEST.tsv')
#: The official fixtures, in the working tree, with their SHA256SUMS.
OFFICIAL = HERE.parents[1] / 'tests' / 'data' / 'official'
#: A package the closure asks for that the machine provides under another name.
SUBSTITUTES = {'opencv-python': 'opencv-python-headless'}


class LockEntry(NamedTuple):
    name: str
    version: str
    kind: str  # 'wheel' or 'sdist'
    sha256: str
    file: str

    @property
    def folder(self) -> str:
        return 'wheels' if self.kind == 'wheel' else 'sdist'

    def path(self, root: Path) -> Path:
        return Path(root) / self.folder / self.file


def normalize(name: str) -> str:
    """PEP 503 name: lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r'[-_.]+', '-', name).lower()


def read_lock(path: Path = LOCK) -> List[LockEntry]:
    """Entries of the lock file; a malformed line raises ``ValueError`` naming it."""
    entries = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.split('#', 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if (len(fields) != 5 or fields[2] not in ('wheel', 'sdist')
                or not re.fullmatch(r'[0-9a-f]{64}', fields[3])):
            raise ValueError(f'{path}:{number}: expected "name version wheel|sdist sha256 file", '
                             f'got {line!r}')
        entries.append(LockEntry(*fields))
    return entries


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def problems(root: Path, entries: Iterable[LockEntry]) -> Dict[LockEntry, str]:
    """Entries whose file is missing or differs from the lock, with what is wrong."""
    found = {}
    for entry in entries:
        path = entry.path(root)
        if not path.is_file():
            found[entry] = f'{path} is missing'
        elif sha256(path) != entry.sha256:
            found[entry] = f'{path} has sha256 {sha256(path)}, the lock says {entry.sha256}'
    return found


def check(root: Path, lock: Path = LOCK, official: Path = OFFICIAL) -> Dict[str, object]:
    """State of the kit folder: ``ok``, ``not-prepared`` (no folder at all) or ``failed``.

    The official fixtures (``official``, in the working tree) are checked against their
    ``SHA256SUMS``.
    """
    root = Path(root)
    if not root.is_dir():
        return dict(status='not-prepared',
                    message=f'{root}/ does not exist: run `bash tools/device/prepare.sh` here '
                            '(needs the package index) before carrying it to the GPU machine')
    errors = list(problems(root, read_lock(lock)).values())
    manifest = root / 'MANIFEST.tsv'
    if not manifest.is_file():
        errors.append(f'{manifest} is missing: re-run tools/device/prepare.sh')
    fixtures, fixture_errors = check_official(official)
    errors += fixture_errors
    errors += [f'{root / name} ({size / 1e6:.1f} MB) is not part of the kit but would travel '
               f'with it: move it out of {root} (builds and environments belong in build/)'
               for name, size in strays(root).items()]
    size = kit_bytes(root)
    tree = working_tree_bytes(root.resolve().parent)
    if size + (tree or 0) > MAX_CARRY_BYTES:
        errors.append(f'{root} holds {size / 2**20:.1f} MiB'
                      + (f' and the working tree {tree / 2**20:.1f} MiB' if tree else '')
                      + f': over the {MAX_CARRY_BYTES / 2**20:.0f} MiB the device tool carries')
    # A prebuilt mmcv that fails its checks is no error of the kit: cuda_check compiles instead.
    return dict(status='failed' if errors else 'ok', errors=errors, fixtures=fixtures,
                bytes=size, tree_bytes=tree, prebuilt=prebuilt_state(root))


def prebuilt_state(root: Path) -> Dict[str, str]:
    """Whether ``prebuilt/`` holds an mmcv wheel that ``cuda_check`` may install unbuilt.

    ``status`` is ``absent`` (no wheel: compile), ``ok`` (``wheel``: its sha256 equals its
    MANIFEST.tsv row and BUILD.json, written by ``prebuild_mmcv.py inspect``, describes that
    file and lists no problems), ``mismatch`` (the hash differs from the manifest or the
    manifest has no row for it) or ``problems`` (BUILD.json missing, for another file, or with
    problems); ``message`` says which file and why.
    """
    folder = Path(root) / 'prebuilt'
    wheels = sorted(folder.glob('mmcv-*.whl')) if folder.is_dir() else []
    if not wheels:
        return dict(status='absent', message=f'no mmcv wheel in {folder}: mmcv is compiled')
    build_json = folder / 'BUILD.json'
    try:
        build = json.loads(build_json.read_text())
    except (OSError, ValueError) as exc:
        build = None
        reason = f'{build_json} is unreadable ({exc.__class__.__name__}: {exc})'
    named = folder / build['wheel'] if build and build.get('wheel') else wheels[-1]
    if named not in wheels:
        return dict(status='problems', wheel=str(named),
                    message=f'BUILD.json describes {named.name}, which is not in {folder} '
                            f'(found {", ".join(w.name for w in wheels)}): mmcv is compiled')
    digest = sha256(named)
    manifest = Path(root) / 'MANIFEST.tsv'
    rows = read_manifest(manifest) if manifest.is_file() else []
    recorded = [r['sha256'] for r in rows if r.get('path') == f'prebuilt/{named.name}']
    if not recorded:
        return dict(status='mismatch', wheel=str(named), sha256=digest,
                    message=f'prebuilt wheel {named} has no row in {manifest}: mmcv is compiled')
    if recorded[0] != digest:
        return dict(status='mismatch', wheel=str(named), sha256=digest,
                    message=f'prebuilt wheel {named} has sha256 {digest}, {manifest.name} says '
                            f'{recorded[0]}: not installed, mmcv is compiled')
    if build is None:
        return dict(status='problems', wheel=str(named), sha256=digest,
                    message=f'{reason}: prebuilt wheel {named.name} not installed, mmcv is '
                            'compiled')
    if build.get('sha256') != digest or build.get('problems'):
        why = (f'its checks were of sha256 {build.get("sha256")}'
               if build.get('sha256') != digest else
               'its checks found: ' + '; '.join(map(str, build['problems'])))
        return dict(status='problems', wheel=str(named), sha256=digest,
                    message=f'prebuilt wheel {named.name}: {why} (BUILD.json); not installed, '
                            'mmcv is compiled')
    return dict(status='ok', wheel=str(named), sha256=digest,
                message=f'prebuilt wheel {named.name}: sha256 matches {manifest.name}, '
                        'BUILD.json lists no problems')


def kit_bytes(root: Path) -> int:
    """Bytes of every file under the kit folder: what ``carry=[".device"]`` takes along."""
    return sum(_tree_bytes(path) for path in Path(root).iterdir())


def _tree_bytes(path: Path) -> int:
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_size if path.is_file() else 0
    return sum(_tree_bytes(child) for child in path.iterdir())


def working_tree_bytes(repo: Path) -> Optional[int]:
    """Bytes of what the device tool copies besides the kit (tracked files and untracked ones
    git does not ignore); ``None`` where git cannot tell (the GPU machine's copy)."""
    try:
        out = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others',
                              '--exclude-standard'], cwd=repo, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    paths = (repo / name for name in out.stdout.decode().split('\0') if name)
    return sum(p.stat().st_size for p in paths if p.is_file() and not p.is_symlink())


def strays(root: Path) -> Dict[str, int]:
    """Entries of the kit folder that are not the kit's (a build tree, a venv): they would
    travel with it all the same; name -> bytes."""
    return {path.name: _tree_bytes(path) for path in sorted(Path(root).iterdir())
            if path.name not in KIT_ENTRIES}


def read_manifest(path: Path) -> List[Dict[str, str]]:
    lines = Path(path).read_text().splitlines()
    header = lines[0].split('\t')
    return [dict(zip(header, line.split('\t'))) for line in lines[1:] if line]


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temp file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.')
    try:
        with os.fdopen(fd, 'w') as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def check_official(folder: Path = OFFICIAL):
    """The official fixtures (``*.pt``) listed in ``folder/SHA256SUMS``, and what differs.

    Returns:
        tuple[list[str], list[str]]: the fixture names, and one error per missing or changed
        file (or for a missing SHA256SUMS).
    """
    sums = Path(folder) / 'SHA256SUMS'
    if not sums.is_file():
        return [], [f'{sums} is missing: the official fixtures cannot be verified']
    names, errors = [], []
    for line in sums.read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        if not name.endswith('.pt'):
            continue
        names.append(name)
        path = Path(folder) / name
        if not path.is_file():
            errors.append(f'{path} is missing')
        elif sha256(path) != digest:
            errors.append(f'{path} differs from {sums.name}')
    return names, errors


def write_manifest(root: Path, lock: Path = LOCK) -> Path:
    """MANIFEST.tsv of the lock's files and the prebuilt wheel (path relative to ``root``)."""
    root = Path(root)
    rows = ['path\tname\tversion\tsha256\tsize']
    for entry in read_lock(lock):
        path = entry.path(root)
        rows.append(f'{entry.folder}/{entry.file}\t{entry.name}\t{entry.version}\t'
                    f'{sha256(path)}\t{path.stat().st_size}')
    for path in sorted((root / 'prebuilt').glob('*.whl')):
        rows.append(f'prebuilt/{path.name}\tprebuilt\t-\t{sha256(path)}\t{path.stat().st_size}')
    manifest = root / 'MANIFEST.tsv'
    write_atomic(manifest, '\n'.join(rows) + '\n')
    return manifest


def machine_packages(path: Path = MACHINE_PACKAGES) -> set:
    names = set()
    for line in Path(path).read_text().splitlines():
        names.update(normalize(n) for n in line.split('#', 1)[0].split())
    return names


def closure_gaps(report: Dict, lock_entries: Iterable[LockEntry],
                 on_machine: Optional[set] = None) -> List[str]:
    """Packages of a ``pip install --report`` resolution that would be missing there.

    Walks the resolved dependency graph from the requested packages. A package already on the
    machine is not expanded: its own needs are met there by the versions installed with it
    (the resolver may have picked a newer release with other needs, e.g. python-dateutil 4
    needs tzdata), so only what is reached through packages that travel counts.

    Args:
        report: The JSON report of ``pip install --dry-run --report`` for Python 3.12.
        lock_entries: What travels as files.
        on_machine: Normalised names already installed there (default: the kit's list).

    Returns:
        list[str]: ``name==version`` of every reached package that neither travels nor is on
        the machine (empty when the kit is complete).
    """
    on_machine = machine_packages() if on_machine is None else on_machine
    travels = {normalize(e.name) for e in lock_entries}
    resolved = {normalize(i['metadata']['name']): i for i in report.get('install', [])}

    def provided(name: str) -> bool:
        return name in on_machine or SUBSTITUTES.get(name) in on_machine

    todo = [name for name, item in resolved.items() if item.get('requested')]
    seen, gaps = set(todo), []
    while todo:
        name = todo.pop()
        if provided(name):
            continue
        if name not in travels:
            gaps.append(f'{name}=={resolved[name]["metadata"]["version"]}')
        for requirement in resolved[name]['metadata'].get('requires_dist') or []:
            if 'extra ==' in requirement.replace('extra==', 'extra =='):
                continue
            dep = normalize(re.match(r'[A-Za-z0-9._-]+', requirement).group(0))
            # Only what pip resolved: it has evaluated the markers for Python 3.12.
            if dep in resolved and dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return sorted(gaps)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('command', choices=['missing', 'check', 'manifest', 'closure'])
    parser.add_argument('report', nargs='?', help='pip --report JSON (closure only)')
    parser.add_argument('--root', default='.device', help='kit folder (default .device)')
    parser.add_argument('--lock', default=str(LOCK))
    args = parser.parse_args(argv)
    entries = read_lock(args.lock)
    if args.command == 'missing':
        for entry in problems(Path(args.root), entries):
            print(' '.join(entry))
        return 0
    if args.command == 'manifest':
        print(write_manifest(Path(args.root), args.lock))
        return 0
    if args.command == 'closure':
        if not args.report:
            parser.error('closure needs the path of a pip --report JSON')
        with open(args.report) as f:
            gaps = closure_gaps(json.load(f), entries)
        for gap in gaps:
            print(f'missing on the GPU machine and not in the lock: {gap}', file=sys.stderr)
        return 1 if gaps else 0
    state = check(Path(args.root), args.lock)
    print(json.dumps(state, indent=1))
    return {'ok': 0, 'not-prepared': 3}.get(state['status'], 1)


if __name__ == '__main__':
    sys.exit(main())
