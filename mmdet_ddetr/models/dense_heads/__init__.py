from .ddetr_head import DDETRHead

__all__ = ['DDETRHead']
