"""Key renaming by ordered regex rules, and the per-layer rules of DETR-family checkpoints."""
import re
from typing import List, Optional, Sequence, Tuple

Rules = List[Tuple[str, str]]

#: The FFN of an official DETR-family layer (``linear1``/``linear2``) in mmcv's ``FFN``.
FFN_PARTS: Rules = [(r'linear1\.', 'ffn.layers.0.0.'), (r'linear2\.', 'ffn.layers.1.')]


def layer_rules(coder: str, parts: Sequence[Tuple[str, str]]) -> Rules:
    """Rules for ``transformer.<coder>.layers.<i>.<part>`` -> ``<coder>.layers.<i>.<ours>``.

    Args:
        coder (str): ``'encoder'`` or ``'decoder'``.
        parts (list[tuple[str, str]]): (official key part regex, our key part), matched after
            the layer index; a part regex must not contain groups.
    """
    return [(rf'^transformer\.{coder}\.layers\.(\d+)\.{part}', rf'{coder}.layers.\1.{ours}')
            for part, ours in parts]


def first_match(key: str, rules: Rules) -> Optional[str]:
    """``key`` renamed by the first rule whose pattern matches it, None if none does."""
    for pattern, repl in rules:
        new, n = re.subn(pattern, repl, key, count=1)
        if n:
            return new
    return None


__all__ = ['Rules', 'FFN_PARTS', 'layer_rules', 'first_match']
