"""Import mmdet's modules with the OneDL fork's import-time notices left out.

On the OneDL stack, onedl-mmdetection 3.5.1 prints "Could not import OneDL. Skipping OneDL
datasets." twice (``mmdet.datasets`` and ``mmdet.datasets.transforms``, through ``print_log``
without a logger, which prints whatever the level) when its optional ``onedl`` SDK is absent,
and warns that ``faster_coco_eval`` is not installed (``mmdet.evaluation``) -- on every run of
every tool, about features this package does not use. Importing those modules here first, with
exactly these notices dropped, keeps them out of our tools' output; anything else they print or
warn passes through. Nothing is done on the OpenMMLab stack (mmdet prints none of these).
Scoped to the import: stdout and the warning filters are restored afterwards.
"""
import contextlib
import io
import sys
import warnings
from importlib import metadata

ONEDL_SDK_NOTICE = 'Could not import OneDL. Skipping OneDL datasets.'
FASTER_COCO_EVAL_WARNING = 'faster_coco_eval is not installed'


def import_mmdet_without_fork_notices() -> None:
    """Import ``mmdet.datasets`` and ``mmdet.evaluation`` on the OneDL stack (idempotent)."""
    if 'mmdet.datasets' in sys.modules and 'mmdet.evaluation' in sys.modules:
        return
    try:
        metadata.version('onedl-mmdetection')
    except metadata.PackageNotFoundError:
        return  # OpenMMLab's mmdet
    out = io.StringIO()
    with contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.filterwarnings('ignore', message=FASTER_COCO_EVAL_WARNING)
        import mmdet.datasets  # noqa: F401
        import mmdet.evaluation  # noqa: F401
    kept = [line for line in out.getvalue().splitlines() if line != ONEDL_SDK_NOTICE]
    if kept:
        print('\n'.join(kept))
