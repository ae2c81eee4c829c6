from .ddetr import DDETR, valid_ratio

__all__ = ['DDETR', 'valid_ratio']
