"""argparse value types shared by the command-line tools: a bad value is reported by argparse
with the option name and what was expected."""
import argparse
from typing import Callable, TypeVar

T = TypeVar('T', int, float)


def checked(cast: Callable[[str], T], type_name: str, ok: Callable[[T], bool],
            requirement: str) -> Callable[[str], T]:
    """argparse type: ``cast(text)`` that must satisfy ``ok``.

    A value that does not parse is reported as ``expected <type_name>, got '<text>'``, one that
    parses but fails ``ok`` as ``<requirement>, got <value>``.
    """

    def parse(text: str) -> T:
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'expected {type_name}, got {text!r}')
        if not ok(value):
            raise argparse.ArgumentTypeError(f'{requirement}, got {value}')
        return value

    return parse


#: An integer >= 1.
positive_int = checked(int, 'a positive integer', lambda v: v >= 1,
                       'expected a positive integer')
#: A number >= 0.
non_negative_float = checked(float, 'a number', lambda v: v >= 0, 'expected a number >= 0')


def add_verbose_argument(parser: argparse.ArgumentParser) -> None:
    """``--verbose``: for tools that build models outside a Runner (see :func:`quiet_init_log`)."""
    parser.add_argument('--verbose', action='store_true',
                        help="also print mmengine's initialisation log (one entry per "
                        'parameter: thousands of lines for an R50 model)')


def quiet_init_log(verbose: bool) -> None:
    """Keep mmengine's current logger at WARNING unless ``verbose``: ``init_weights`` logs every
    parameter at INFO, which buries a tool's own output."""
    if verbose:
        return
    import logging

    from mmengine.logging import MMLogger
    MMLogger.get_current_instance().setLevel(logging.WARNING)
