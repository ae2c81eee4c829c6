"""Build-time checks that a detector and its head belong together.

This package's detectors give their heads arguments and inputs that only their own heads take
(DDETR: ``embed_dims``, the head width from the transformer; SMCA: the Gaussian-centre
``references``), and this package's heads rely on them. Paired with mmdet's counterpart, the
model would build and then fail at the first forward with an opaque ``TypeError`` or a shape
mismatch; these checks stop the build with the type to use instead.
"""
from typing import Sequence

from mmdet.registry import MODELS


def check_head_type(detector: str, bbox_head: dict, expected: type, counterpart: str) -> None:
    """Raise ``TypeError`` unless ``bbox_head['type']`` is ``expected`` or a subclass of it.

    Args:
        detector: The detector's type name, for the message.
        bbox_head: The detector's ``bbox_head`` config.
        expected: The head class the detector needs.
        counterpart: What to do with the other head instead (e.g. mmdet's detector for it).
    """
    head_type = bbox_head.get('type')
    if head_type is None:
        return  # the registry's own error names it
    head_cls = head_type if isinstance(head_type, type) else MODELS.get(head_type)
    if head_cls is None or issubclass(head_cls, expected):
        return  # unknown names too: the registry's own error names them
    raise TypeError(
        f"{detector} needs bbox_head=dict(type='{expected.__name__}', ...) (or a subclass); "
        f"got '{head_cls.__name__}' from {head_cls.__module__.split('.')[0]}. {counterpart}")


def check_built_by_detector(head: str, detector: str, given: Sequence[str],
                            required: Sequence[str]) -> None:
    """Raise ``TypeError`` when a head that ``detector`` sizes misses the arguments it sets.

    Args:
        head: The head's type name.
        detector: The detector of this package that builds the head.
        given: Names of the arguments the head was built with.
        required: The arguments ``detector`` always passes.
    """
    missing = [name for name in required if name not in given]
    if missing:
        raise TypeError(
            f"{head} got no {', '.join(missing)}: {detector} sets "
            f"{', '.join(required)} when it builds the head, other detectors (mmdet's "
            f"DETR family) do not. Use it as the head of type='{detector}', or pass them when "
            'building the head alone.')


__all__ = ['check_head_type', 'check_built_by_detector']
