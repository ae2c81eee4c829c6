"""Generate the embedded synthetic shapes dataset (COCO format).

Example::

    python tools/misc/generate_synthetic_dataset.py --out data/synthetic --seed 0 \
        --num-train 800 --num-val 100 --img-size 128

Re-running with the same arguments is a no-op once the dataset is complete (see manifest.json).
A non-empty --out folder that the generator did not create (no .mmdet_ddetr_synthetic marker)
is refused and left untouched.
"""
import argparse
import importlib
import os.path as osp
import sys
import types

# realpath: `mim run` starts this file through site-packages/mmdet_ddetr/.mim/tools (a link).
REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.realpath(__file__))))


def _load_generator():
    """Import ``mmdet_ddetr/datasets/synthetic.py`` without ``mmdet_ddetr/__init__.py``.

    Importing it through the package would run ``mmdet_ddetr/__init__.py``, which registers
    the models and so imports torch, mmcv and mmdet: seconds of start-up, and impossible
    before the install finishes. The generator itself only needs numpy, OpenCV and the
    package's atomic writer, so the package folder is mounted under another name whose
    ``__init__`` is never run (its subpackages' relative imports still resolve).
    """
    name = '_mmdet_ddetr_light'
    if name not in sys.modules:
        package = types.ModuleType(name)
        package.__path__ = [osp.join(REPO_ROOT, 'mmdet_ddetr')]
        sys.modules[name] = package
    return importlib.import_module(f'{name}.datasets.synthetic')


_synthetic = _load_generator()
SyntheticConfig = _synthetic.SyntheticConfig
generate_synthetic_dataset = _synthetic.generate_synthetic_dataset


def _positive_int(min_value: int):
    """argparse type: an integer >= ``min_value``, with a readable error otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'expected an integer, got {text!r}')
        if value < min_value:
            raise argparse.ArgumentTypeError(f'must be >= {min_value}, got {value}')
        return value

    return parse


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a number, got {text!r}')
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f'must be in (0, 1], got {value}')
    return value


def parse_args(argv=None) -> argparse.Namespace:
    defaults = SyntheticConfig()
    parser = argparse.ArgumentParser(
        description='Generate the synthetic shapes detection dataset (COCO format).')
    parser.add_argument('--out', default='data/synthetic', help='dataset root folder')
    parser.add_argument('--seed', type=_positive_int(0), default=defaults.seed)
    parser.add_argument('--num-train', type=_positive_int(1), default=defaults.num_train,
                        help='number of training images')
    parser.add_argument('--num-val', type=_positive_int(1), default=defaults.num_val,
                        help='number of validation images')
    parser.add_argument('--img-size', type=_positive_int(32), default=defaults.img_size,
                        help='side of the square images in pixels')
    parser.add_argument('--min-objects', type=_positive_int(1), default=defaults.min_objects)
    parser.add_argument('--max-objects', type=_positive_int(1), default=defaults.max_objects)
    parser.add_argument('--min-rel-size', type=_fraction, default=defaults.min_rel_size,
                        help='smallest object extent, as a fraction of the image side')
    parser.add_argument('--max-rel-size', type=_fraction, default=defaults.max_rel_size,
                        help='largest object extent, as a fraction of the image side')
    parser.add_argument('--min-visible', type=_fraction, default=defaults.min_visible,
                        help='fraction of each object that stays visible under occluders')
    parser.add_argument('--force', action='store_true',
                        help='regenerate even if a complete dataset already exists')
    parser.add_argument('--quiet', action='store_true', help='print nothing but errors')
    args = parser.parse_args(argv)
    try:
        _config_from_args(args).validate()
    except ValueError as exc:
        # Cross-argument checks (e.g. min > max) reported like argparse's own errors (exit 2).
        parser.error(str(exc))
    return args


def _config_from_args(args: argparse.Namespace) -> 'SyntheticConfig':
    return SyntheticConfig(
        seed=args.seed, num_train=args.num_train, num_val=args.num_val, img_size=args.img_size,
        min_objects=args.min_objects, max_objects=args.max_objects,
        min_rel_size=args.min_rel_size, max_rel_size=args.max_rel_size,
        min_visible=args.min_visible)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        generate_synthetic_dataset(args.out, _config_from_args(args), force=args.force,
                                   verbose=not args.quiet)
    except _synthetic.ForeignFolderError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
