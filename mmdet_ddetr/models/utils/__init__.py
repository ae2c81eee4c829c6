"""Helpers shared by the model components."""
from .build import build_module

__all__ = ['build_module']
