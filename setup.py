"""mmdet_ddetr: Deformable DETR and SMCA-DETR as MMDetection 3.x registry components."""
import os
import os.path as osp
import shutil

from setuptools import find_packages, setup

ROOT = osp.dirname(osp.abspath(__file__))


def read_version() -> str:
    scope: dict = {}
    with open(osp.join(ROOT, 'mmdet_ddetr', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


# One of two stacks provides mmcv, mmengine and mmdet: the OpenMMLab releases or the OneDL fork.
# They install the same import names under different distribution names, so install_requires
# names neither (requiring `mmdet` would make pip install mmdet 3.3.0 over onedl-mmdetection);
# the extras hold the ranges we test, requirements/stack-*.txt the exact pins.
STACK_EXTRAS = {
    'openmmlab': ['mmcv>=2.1.0,<2.2.0', 'mmengine>=0.10.7,<0.11', 'mmdet>=3.3.0,<3.4'],
    'onedl': ['onedl-mmcv>=2.3.6,<2.4', 'onedl-mmengine>=0.10.12,<0.11',
              'onedl-mmdetection>=3.5.1,<3.6'],
}


def read_requirements(name: str) -> list:
    with open(osp.join(ROOT, 'requirements', name)) as f:
        return [line.split('#')[0].strip() for line in f
                if line.split('#')[0].strip()]


# What `mim` looks up under <pkg>/.mim: `mim train mmdet_ddetr CONFIG` runs
# `.mim/tools/train.py` on `.mim/configs/...`; `mim search` / `mim list` and mmengine's
# inferencers read `.mim/model-index.yml`, whose metafiles name configs relative to `.mim`.
MIM_FILES = ('configs', 'tools', 'model-index.yml')


def link_mim_files() -> None:
    """Expose MIM_FILES under mmdet_ddetr/.mim as links to the checkout's files.

    A wheel build copies them into the wheel; an editable install leaves them in the checkout,
    where tools/misc/link_package_for_mim.py makes mim find them.
    """
    mim_dir = osp.join(ROOT, 'mmdet_ddetr', '.mim')
    os.makedirs(mim_dir, exist_ok=True)
    for name in MIM_FILES:
        dst = osp.join(mim_dir, name)
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        os.symlink(osp.join('..', '..', name), dst)


if __name__ == '__main__':
    link_mim_files()
    setup(
        name='mmdet_ddetr',
        version=read_version(),
        description='Deformable DETR and SMCA-DETR for MMDetection 3.x',
        packages=find_packages(exclude=('configs', 'tools', 'tests')),
        include_package_data=True,
        package_data={'mmdet_ddetr': ['.mim/configs/**/*', '.mim/tools/**/*',
                                     '.mim/model-index.yml']},
        python_requires='>=3.8',
        install_requires=read_requirements('runtime.txt'),
        extras_require=STACK_EXTRAS,
        zip_safe=False)
