"""Let ``mim train/test/run mmdet_ddetr`` find this checkout after an editable install.

Run by ``tools/install.sh`` right after ``pip install -e .``; idempotent.

Why: mim (openmim 0.3.9, ``mim.utils.get_installed_path``) looks for configs and tools in
``<distribution location>/mmdet_ddetr/.mim``, the location being the folder that holds the
distribution's metadata. A PEP 660 editable install -- what ``pip install -e .`` does with a
``pyproject.toml`` or setuptools >= 80, and the only editable install pip >= 25.3 still has --
writes that metadata to site-packages and imports the package through an import hook, so
``site-packages/mmdet_ddetr`` does not exist and mim reports "can not find the config file in
codebase mmdet_ddetr" from every directory.

What: ``site-packages/mmdet_ddetr`` becomes a symbolic link to the checkout's package folder,
whose ``.mim/configs``, ``.mim/tools`` and ``.mim/model-index.yml`` link to the checkout's
(made by setup.py, or here for an env installed before an entry existed).
Imports then find the package through the link -- the same files the import hook maps -- and
mim finds the configs and tools. The link is added to the distribution's RECORD, the list of
installed files that ``pip uninstall`` removes, so uninstalling removes it with the rest. A
regular (non-editable) install ships a real ``mmdet_ddetr/.mim`` and needs nothing.
"""
import argparse
import csv
import io
import json
import os
import os.path as osp
import runpy
import sys
from importlib import metadata
from urllib.parse import unquote, urlparse

DIST_NAME = 'mmdet_ddetr'
PACKAGE = 'mmdet_ddetr'


class LinkError(RuntimeError):
    """The install is not in a state this script can (or should) fix."""


def editable_source(dist: metadata.Distribution) -> str:
    """The checkout an editable install points at (from PEP 610's ``direct_url.json``), or ''
    for a regular install."""
    text = dist.read_text('direct_url.json')
    if not text:
        return ''
    info = json.loads(text)
    if not info.get('dir_info', {}).get('editable', False):
        return ''
    url = urlparse(info['url'])
    if url.scheme != 'file':
        raise LinkError(f'editable install from {info["url"]!r}: expected a local folder')
    return unquote(url.path)


def record_file(dist: metadata.Distribution) -> str:
    """Path of the distribution's RECORD (the files ``pip uninstall`` removes)."""
    for file in dist.files or ():
        if file.name == 'RECORD' and file.parent.name.endswith('.dist-info'):
            return str(dist.locate_file(file))
    raise LinkError(f'{DIST_NAME} has no RECORD; reinstall it with `pip install -e .`')


def recorded_paths(record: str) -> set:
    with open(record, newline='') as f:
        return {row[0] for row in csv.reader(f) if row}


def add_to_record(record: str, path: str) -> None:
    """Append ``path`` (relative to site-packages, no hash: it is a link) to RECORD."""
    from mmdet_ddetr.utils.atomic_io import atomic_open  # installed by now
    with open(record, newline='') as f:
        text = f.read()
    if text and not text.endswith('\n'):
        text += '\n'
    row = io.StringIO()
    csv.writer(row, lineterminator='\n').writerow([path, '', ''])
    with atomic_open(record, 'w', newline='') as f:
        f.write(text + row.getvalue())


def link_mim_files(source: str, check_only: bool = False) -> None:
    """Make the checkout's ``mmdet_ddetr/.mim`` hold every entry of setup.py's ``MIM_FILES``.

    setup.py links them on ``pip install -e .``; an env installed before an entry was added
    (e.g. ``model-index.yml``, which ``mim search`` reads) gets it here, from setup.py's own
    ``link_mim_files`` (``make install`` on a complete env runs only this script).

    Raises:
        LinkError: If ``check_only`` and an entry is missing, or an entry is still missing
            after linking (its source is not in the checkout).
    """
    setup_py = osp.join(source, 'setup.py')
    setup = runpy.run_path(setup_py)  # `setup()` itself runs only as __main__
    if 'MIM_FILES' not in setup:
        raise LinkError(f'{setup_py} predates this script (no MIM_FILES): update {source}, '
                        'the checkout this env is installed from, and run `make install` there')
    mim_dir = osp.join(source, PACKAGE, '.mim')
    missing = [name for name in setup['MIM_FILES'] if not osp.exists(osp.join(mim_dir, name))]
    if not missing:
        return
    if check_only:
        raise LinkError(f'{mim_dir} lacks {", ".join(missing)}: run `make install`')
    setup['link_mim_files']()
    missing = [name for name in missing if not osp.exists(osp.join(mim_dir, name))]
    if missing:
        raise LinkError(f'{source} has no {", ".join(missing)} for {mim_dir} to link to; '
                        'is it a complete checkout?')


def link_package(check_only: bool = False) -> str:
    """Make ``<site-packages>/mmdet_ddetr`` lead to the installed checkout's package.

    Args:
        check_only: Report what is missing instead of fixing it.

    Returns:
        A one-line description of the state.

    Raises:
        LinkError: If the package is not installed, the checkout lacks a ``.mim`` entry that
            cannot be linked, something other than our link occupies the path, or
            (``check_only``) the link or a ``.mim`` entry is missing.
    """
    try:
        dist = metadata.distribution(DIST_NAME)
    except metadata.PackageNotFoundError:
        raise LinkError(f'{DIST_NAME} is not installed in {sys.prefix}: run `make install`')
    source = editable_source(dist)
    if not source:
        return f'{DIST_NAME} is a regular install: mim uses its own mmdet_ddetr/.mim'
    package_dir = osp.join(source, PACKAGE)
    link_mim_files(source, check_only)
    site_dir = str(dist.locate_file(''))
    link = osp.join(site_dir, PACKAGE)
    if osp.isdir(link) and not osp.islink(link) and osp.samefile(link, package_dir):
        # The metadata sits in the checkout (legacy `setup.py develop`): mim finds it there.
        return f'mim finds {package_dir} directly'
    record = record_file(dist)
    linked = osp.islink(link) and os.readlink(link) == package_dir
    recorded = PACKAGE in recorded_paths(record)
    if linked and recorded:
        return f'{link} -> {package_dir}'
    if check_only:
        raise LinkError(f'{link} does not lead to {package_dir}: run `make install`')
    if osp.lexists(link) and not osp.islink(link):
        raise LinkError(f'{link} exists and is not a link made by this script; '
                        f'`pip uninstall {DIST_NAME}` and run `make install` again')
    if not linked:
        # Replace an older link (another checkout) in one step: make the new one, rename it.
        tmp = f'{link}.{os.getpid()}.tmp'
        os.symlink(package_dir, tmp, target_is_directory=True)
        os.replace(tmp, link)
    if not recorded:
        add_to_record(record, PACKAGE)
    return f'{link} -> {package_dir} (created)'


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--check', action='store_true',
                        help='only check; exit 1 if the link is missing')
    args = parser.parse_args(argv)
    try:
        print(f'[install] mim: {link_package(check_only=args.check)}')
    except LinkError as exc:
        print(f'[install] mim: {exc}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
