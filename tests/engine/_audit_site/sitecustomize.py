"""Test-only: record every file this process opens for writing under $AUDIT_WATCH_DIR.

Put this folder on PYTHONPATH of a training subprocess; Python imports ``sitecustomize`` at
start-up, before any project code, so the log/config/checkpoint writes of Runner construction are
seen too. ``open`` audit events (PEP 578) fire for every ``open()``/``os.open()``, whatever
library does the writing. The record goes to $AUDIT_OUT_DIR/writes_<RANK>.txt.
"""
import os
import sys

_WATCH = os.environ.get('AUDIT_WATCH_DIR')
_OUT = os.environ.get('AUDIT_OUT_DIR')

if _WATCH and _OUT:
    _watch = os.path.abspath(_WATCH)
    _log = os.path.join(_OUT, f'writes_{os.environ.get("RANK", "norank")}_{os.getpid()}.txt')
    _seen = set()

    def _record(path):
        path = os.path.abspath(os.fsdecode(path))
        if path.startswith(_watch + os.sep) and path not in _seen:
            _seen.add(path)
            with open(_log, 'a') as f:  # outside the watched dir: no recursion
                f.write(path + '\n')

    def _audit(event, args):
        if event in ('os.rename', 'os.remove') and args:
            # os.replace/os.rename (atomic publish) and deletions change the directory too.
            for path in (args[:2] if event == 'os.rename' else args[:1]):
                if isinstance(path, (str, bytes, os.PathLike)):
                    _record(path)
            return
        if event != 'open' or not args:
            return
        path = args[0]
        if not isinstance(path, (str, bytes, os.PathLike)):
            return  # an fd
        mode = args[1] if len(args) > 1 else None
        flags = args[2] if len(args) > 2 else 0
        writing = (isinstance(mode, str) and any(c in mode for c in 'wax+')) or (
            mode is None and isinstance(flags, int)
            and bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)))
        if writing:
            _record(path)

    open(_log, 'a').close()  # proves this process was audited, even if it wrote nothing
    sys.addaudithook(_audit)
