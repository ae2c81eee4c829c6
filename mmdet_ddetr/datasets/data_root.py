"""Where the configs' data lives, the one setting that moves it, and the error when it is missing.

The shipped dataset configs keep mmdet's convention: ``data_root`` is relative to the current
directory (``data/synthetic/``, ``data/coco/``). mmengine substitutes a config variable into the
dicts that use it while it parses the file, so after parsing ``--cfg-options data_root=PATH``
changes the top-level key only: the dataloaders' ``dataset.data_root`` and the evaluators'
``ann_file`` keep the parse-time path (five keys to override by hand).

Mechanism: ``configs/_base_/datasets/*.py`` read the root through mmengine's own
environment-variable substitution, ``'{{$MMDET_DDETR_DATA_ROOT:data/synthetic}}/'``, which is
applied to the file's text *before* it is executed, so the one value reaches every dict built
from ``data_root``. It was chosen because it is the only point that every way of running a
config passes through: this package's tools, ``mim train/test mmdet_ddetr``, mmdet's own
tools/train.py (which only calls ``Config.fromfile``, ``merge_from_dict`` and the Runner), and
the tools that read a config without a Runner (draw_predictions, visualize_attention,
export_onnx). The alternatives each miss some of them: rewriting the config after the merge
needs code in every tool (mmdet's cannot be changed); a dataset or metric cannot see the
top-level key (it is built from its own sub-dict); a custom Runner is skipped by tools that do
not run one.

``--cfg-options data_root=PATH`` is the same setting: :func:`load_config` (used by tools/train.py
and tools/test.py, which ``mim train/test`` run) sets the variable while the file is parsed and
then checks that the value reached every path, so a config that hard-codes its paths fails with
the keys to set instead of silently reading the old data.
"""
import os
import os.path as osp
from contextlib import contextmanager
from typing import Iterator, List, Optional, Tuple

#: Environment variable read by the shipped dataset configs (mmengine's ``{{$VAR:default}}``).
DATA_ROOT_ENV = 'MMDET_DDETR_DATA_ROOT'
#: The config key that names the dataset folder.
DATA_ROOT_KEY = 'data_root'
#: The generator, relative to the repository root (``mim run mmdet_ddetr`` finds it by name).
GENERATOR_SCRIPT = 'tools/misc/generate_synthetic_dataset.py'


def generate_command(data_root: str = 'data/synthetic') -> str:
    """The command that writes the embedded synthetic dataset the shipped configs expect.

    The arguments are the generator's defaults, which are what ``tools/demo.sh`` passes and
    what the quickstart configs are sized for (128 px images).
    """
    from .synthetic import SyntheticConfig  # numpy + OpenCV only
    d = SyntheticConfig()
    out = data_root.rstrip('/') or '/'
    return (f'python {GENERATOR_SCRIPT} --out {out} --seed {d.seed} --num-train {d.num_train} '
            f'--num-val {d.num_val} --img-size {d.img_size}')


def missing_dataset_message(missing: str, data_root: str, synthetic: bool = True) -> str:
    """What to do when ``missing`` (a file or folder of the dataset under ``data_root``) is absent.

    Names the key (``data_root``), the two ways to set it and, for the synthetic dataset, the
    command that generates it.
    """
    where = '' if osp.isabs(data_root) else f', relative to the current directory {os.getcwd()}'
    lines = [
        f'dataset not found: {missing} does not exist ({DATA_ROOT_KEY}={data_root!r}{where}).']
    if synthetic:
        lines.append(f'Generate the embedded synthetic dataset there:\n  '
                     f'{generate_command(data_root)}\n'
                     '(from outside the repository: mim run mmdet_ddetr '
                     f'{osp.splitext(osp.basename(GENERATOR_SCRIPT))[0]} --out ...)')
    lines.append(
        f'or set {DATA_ROOT_KEY} to the folder that holds it: --cfg-options '
        f'{DATA_ROOT_KEY}=PATH (tools/train.py, tools/test.py, draw_predictions.py, mim '
        f'train/test mmdet_ddetr) or '
        f'{DATA_ROOT_ENV}=PATH in the environment (any tool, mmdet\'s tools/train.py too).')
    return '\n'.join(lines)


def check_dataset_files(data_root: str, paths: List[str], synthetic: bool = True) -> None:
    """Raise ``FileNotFoundError`` with :func:`missing_dataset_message` for the first missing path.

    Args:
        data_root: The dataset's ``data_root`` as configured.
        paths: Files or folders the dataset needs (already joined with ``data_root``).
        synthetic: Whether the dataset is the embedded one (adds the generate command).
    """
    for path in paths:
        if path and not osp.exists(path):
            raise FileNotFoundError(missing_dataset_message(path, data_root, synthetic))


@contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    """``os.environ[name] = value`` for the duration of the block."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


def data_paths(cfg) -> List[Tuple[str, str]]:
    """``(key, path)`` of every dataset root and evaluator annotation file in ``cfg``.

    Keys are dotted (``train_dataloader.dataset.data_root``, ``val_evaluator.ann_file``), found
    at any depth so that wrapped datasets (``RepeatDataset``, ``ConcatDataset``) and evaluator
    lists are included.
    """
    found: List[Tuple[str, str]] = []

    def walk(node, key: str, wanted: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == wanted and isinstance(v, str):
                    found.append((f'{key}.{k}', v))
                else:
                    walk(v, f'{key}.{k}', wanted)
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                walk(v, f'{key}[{i}]', wanted)

    for top in cfg.keys():
        if top.endswith('_dataloader'):
            walk(cfg[top], top, DATA_ROOT_KEY)
        elif top.endswith('_evaluator'):
            walk(cfg[top], top, 'ann_file')
    return found


def load_config(filename: str, cfg_options: Optional[dict] = None):
    """``Config.fromfile(filename)`` + ``merge_from_dict(cfg_options)``, where
    ``cfg_options['data_root']`` relocates every dataloader's and evaluator's path.

    Args:
        filename: Config file.
        cfg_options: ``--cfg-options`` as parsed by mmengine's ``DictAction``.

    Returns:
        mmengine.Config: The merged config.

    Raises:
        ValueError: ``data_root`` was given but a dataset or evaluator path of the config does
            not follow it (the config sets that path itself); the message names the keys.
    """
    from mmengine.config import Config
    options = dict(cfg_options or {})
    data_root = options.pop(DATA_ROOT_KEY, None)
    if data_root is None:
        cfg = Config.fromfile(filename)
    else:
        # The configs append the '/' themselves (a value with one still works: 'a//b' is 'a/b').
        with _environment(DATA_ROOT_ENV, str(data_root).rstrip('/') or '/'):
            cfg = Config.fromfile(filename)
        _check_data_root_reached(cfg, filename, str(data_root))
    if options:
        cfg.merge_from_dict(options)
    return cfg


def _check_data_root_reached(cfg, filename: str, data_root: str) -> None:
    root = osp.abspath(data_root)
    stale = [(key, path) for key, path in data_paths(cfg)
             if osp.commonpath([root, osp.abspath(path)]) != root]
    if stale:
        keys = '\n'.join(f'  {key} = {path!r}' for key, path in stale)
        raise ValueError(
            f'--cfg-options {DATA_ROOT_KEY}={data_root} does not reach these paths of '
            f'{filename}, which sets them itself:\n{keys}\n'
            'Set them with --cfg-options too, or build them from '
            f"data_root = '{{{{${DATA_ROOT_ENV}:...}}}}/' as configs/_base_/datasets/*.py do.")
