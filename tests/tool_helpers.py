"""Helpers of the command-line tool tests: import a tool script as a module, and run code on a
simulated full disk."""
import importlib.util
import subprocess
import sys
import textwrap

from tests.conftest import REPO

_PRELUDE = '''
import resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
'''


def load_tool(relative_path: str):
    """The tool script ``REPO/relative_path`` (e.g. ``'tools/test.py'``) as a module, so that a
    test can call its ``main(argv)`` in-process and patch its globals."""
    path = REPO / relative_path
    spec = importlib.util.spec_from_file_location(path.stem + '_tool', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_on_full_disk(code: str, limit: int = 4096) -> subprocess.CompletedProcess:
    """Run ``code`` in a subprocess, from the repository root, that cannot write a file past
    ``limit`` bytes, the way a full disk stops it: ``RLIMIT_FSIZE`` with ``SIGXFSZ`` ignored
    makes such a write fail with ``OSError(EFBIG)`` (a tiny tmpfs for a real ENOSPC needs
    root)."""
    script = _PRELUDE.format(limit=limit) + textwrap.dedent(code)
    return subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
