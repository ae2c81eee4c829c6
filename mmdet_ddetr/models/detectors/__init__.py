from .ddetr import DDETR

__all__ = ['DDETR']
