"""Small shared utilities."""
from .atomic_io import atomic_open, atomic_write, fsync_dir

__all__ = ['atomic_open', 'atomic_write', 'fsync_dir']
