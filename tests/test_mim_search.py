"""`mim search` / `mim list` find this checkout's model-index, and the install keeps them able to.

The installed `mmdet_ddetr` may be another checkout (site-packages holds a link to it), so the
real `mim` runs below see a stand-in install of this checkout: a site folder with mmdet_ddetr's
distribution metadata and a `mmdet_ddetr` folder whose `.mim` setup.py links, put first on
PYTHONPATH -- the layout tools/misc/link_package_for_mim.py gives an editable install.
tests/test_mim_install.py does the same after a real fresh install (slow).
"""
import os
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

MIM = Path(sys.executable).with_name('mim')
sys.path.insert(0, str(REPO / 'tools' / 'misc'))
import link_package_for_mim  # noqa: E402


def make_checkout(root: Path) -> Path:
    """A checkout with this one's setup.py, model-index.yml, configs/ and tools/, and an
    empty package folder (mim reads files, it does not import the package)."""
    root.mkdir()
    (root / 'mmdet_ddetr').mkdir()
    for name in ('setup.py', 'model-index.yml'):
        shutil.copy2(REPO / name, root / name)
    for name in ('configs', 'tools'):
        os.symlink(REPO / name, root / name)
    return root


def link_mim_files(checkout: Path) -> None:
    runpy.run_path(str(checkout / 'setup.py'))['link_mim_files']()


def test_setup_links_model_index_under_mim(tmp_path):
    checkout = make_checkout(tmp_path / 'checkout')
    link_mim_files(checkout)
    mim_dir = checkout / 'mmdet_ddetr' / '.mim'
    assert (mim_dir / 'model-index.yml').read_text() == (REPO / 'model-index.yml').read_text()
    # every path in it resolves from .mim, where mim and mmengine look them up
    from modelindex.load_model_index import load
    index = load(str(mim_dir / 'model-index.yml'))
    assert len(index.models) >= 16
    assert all((mim_dir / model.config).is_file() for model in index.models)


def test_link_script_adds_what_an_older_install_lacks(tmp_path):
    """`make install` on an env made before model-index.yml existed only runs the link
    script: it must add .mim/model-index.yml, and --check must name it until then."""
    checkout = make_checkout(tmp_path / 'checkout')
    link_mim_files(checkout)
    (checkout / 'mmdet_ddetr' / '.mim' / 'model-index.yml').unlink()
    with pytest.raises(link_package_for_mim.LinkError, match=r'lacks model-index\.yml'):
        link_package_for_mim.link_mim_files(str(checkout), check_only=True)
    link_package_for_mim.link_mim_files(str(checkout))
    assert (checkout / 'mmdet_ddetr' / '.mim' / 'model-index.yml').is_file()


def test_link_script_names_a_missing_source(tmp_path):
    checkout = make_checkout(tmp_path / 'checkout')
    (checkout / 'model-index.yml').unlink()
    with pytest.raises(link_package_for_mim.LinkError, match=r'has no model-index\.yml'):
        link_package_for_mim.link_mim_files(str(checkout))


def test_link_script_names_an_older_setup_py(tmp_path):
    """An env installed from another, older checkout: say so instead of a KeyError."""
    checkout = make_checkout(tmp_path / 'checkout')
    (checkout / 'setup.py').write_text('def link_mim_files():\n    pass\n')
    with pytest.raises(link_package_for_mim.LinkError, match=r'predates this script'):
        link_package_for_mim.link_mim_files(str(checkout))


def stand_in_install(tmp_path: Path) -> Path:
    """A site folder where importlib.metadata and pkg_resources find mmdet_ddetr's metadata
    next to a `mmdet_ddetr` link to a checkout of this one."""
    checkout = make_checkout(tmp_path / 'checkout')
    link_mim_files(checkout)
    site = tmp_path / 'site'
    dist_info = site / 'mmdet_ddetr-0.0.0+test.dist-info'
    dist_info.mkdir(parents=True)
    (dist_info / 'METADATA').write_text(
        'Metadata-Version: 2.1\nName: mmdet_ddetr\nVersion: 0.0.0+test\n')
    (dist_info / 'top_level.txt').write_text('mmdet_ddetr\n')
    os.symlink(checkout / 'mmdet_ddetr', site / 'mmdet_ddetr', target_is_directory=True)
    return site


def run_mim(site: Path, *args: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(site), COLUMNS='400')
    proc = subprocess.run([str(MIM), *args], env=env, cwd=site, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f'mim {" ".join(args)}: {proc.stdout[-3000:]}{proc.stderr}'
    return proc.stdout


@pytest.mark.slow
def test_mim_search_and_list_show_every_model(tmp_path):
    site = stand_in_install(tmp_path)
    names = sorted(p.stem for family in ('deformable_detr', 'smca_detr')
                   for p in (REPO / 'configs' / family).glob('*.py'))

    # mim sees the stand-in (its version), listed because its .mim has a model-index.yml
    listed = [line.split() for line in run_mim(site, 'list').splitlines()]
    assert ['mmdet-ddetr', '0.0.0+test'] in [row[:2] for row in listed], listed  # pip's spelling

    out = run_mim(site, 'search', 'mmdet_ddetr', '--valid-config')
    listed = out[out.index('valid config ids:'):]
    assert all(f"'{name}'" in listed for name in names), listed

    out = run_mim(site, 'search', 'mmdet_ddetr', '--field', 'coco/box_ap', 'epochs')
    assert re.search(r'config id: deformable-detr-refine-twostage_r50_16xb2-50e_coco\n'
                     r'coco/box_ap +46\.2\nepochs +50\n', out), out

    out = run_mim(site, 'search', 'mmdet_ddetr', '--config',
                  'smca-detr_r18_1xb4-quickstart_synthetic')
    assert 'config id: smca-detr_r18_1xb4-quickstart_synthetic' in out
    # the number the metafile gives (re-measured runs change it), as mim prints it
    metafile = yaml.safe_load((REPO / 'configs' / 'smca_detr' / 'metafile.yml').read_text())
    quickstart, = [m for m in metafile['Models']
                   if m['Name'] == 'smca-detr_r18_1xb4-quickstart_synthetic']
    box_ap = quickstart['Results'][0]['Metrics']['box AP']
    assert re.search(rf'synthetic shapes/box_ap +{re.escape(str(box_ap))}\n', out), out
    assert re.search(r'results_source +measured', out), out
