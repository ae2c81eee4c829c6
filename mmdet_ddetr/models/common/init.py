"""``init_cfg=dict(type='TorchDefault', layer=...)``: keep PyTorch's own initialisation.

Official DETR-family code often leaves a layer exactly as ``torch.nn`` creates it (SMCA-DETR's
1x1 ``input_proj``: kaiming-uniform weight with ``a=sqrt(5)``, bias uniform in
``+-1/sqrt(fan_in)``), while the mmdet module we reuse for it (``ChannelMapper``) re-initialises
it (Xavier-uniform, zero bias). This initializer re-draws the matching layers with their own
``reset_parameters()``, so a config can say "the PyTorch default" instead of approximating it.
"""
from mmengine.model.weight_init import BaseInit, _get_bases_name, update_init_info
from mmengine.registry import WEIGHT_INITIALIZERS
from torch import nn


@WEIGHT_INITIALIZERS.register_module(name='TorchDefault')
class TorchDefaultInit(BaseInit):
    """Re-initialise every matching layer by its own ``reset_parameters()``.

    Args:
        layer: Layer class name(s) to re-initialise (their subclasses match too), e.g.
            ``'Conv2d'``; None = the whole module the ``init_cfg`` belongs to.
    """

    def __init__(self, **kwargs) -> None:
        if 'bias' in kwargs or 'bias_prob' in kwargs:
            raise ValueError('TorchDefault keeps the layer\'s own bias init; remove bias / '
                             'bias_prob from the init_cfg')
        super().__init__(**kwargs)

    def __call__(self, module: nn.Module) -> None:

        def init(m: nn.Module) -> None:
            names = {m.__class__.__name__, *_get_bases_name(m)}
            if (self.wholemodule or set(self.layer) & names) and hasattr(m, 'reset_parameters'):
                m.reset_parameters()

        module.apply(init)
        if hasattr(module, '_params_init_info'):
            update_init_info(module, init_info=self._get_init_info())

    def _get_init_info(self) -> str:
        return f'{self.__class__.__name__}: the layers\' own reset_parameters()'
