"""The private MMEngine APIs our engine depends on are all listed in
``mmdet_ddetr/engine/private_api.py``, and each still has the recorded signature."""
import importlib
import inspect
import pkgutil

import pytest
from mmengine.hooks import Hook
from mmengine.runner import Runner

import mmdet_ddetr.engine.hooks as hooks
from mmdet_ddetr.engine.checkpoint_safety import _CheckedHistoryBuffer
from mmdet_ddetr.engine.private_api import PRIVATE_APIS, PrivateAPI
from mmdet_ddetr.engine.runner import RegionalCompileRunner


def our_hooks() -> set:
    """Every hook class defined in a module of mmdet_ddetr.engine.hooks."""
    found = set()
    for info in pkgutil.iter_modules(hooks.__path__):
        module = importlib.import_module(f'{hooks.__name__}.{info.name}')
        found |= {obj for obj in vars(module).values() if isinstance(obj, type)
                  and issubclass(obj, Hook) and obj.__module__ == module.__name__}
    return found


#: Our subclasses of MMEngine classes whose private methods they could override.
OUR_SUBCLASSES = (RegionalCompileRunner, _CheckedHistoryBuffer, *sorted(our_hooks(), key=str))


@pytest.mark.parametrize('api', PRIVATE_APIS, ids=lambda api: f'{api.owner}.{api.name}')
def test_recorded_signature_is_mmengines(api):
    got = str(inspect.signature(api.resolve()))
    assert got == api.signature, (
        f'mmengine changed {api.owner}.{api.name}{api.signature} to {got}, which '
        f'{api.used_by} (mmdet_ddetr/engine/private_api.py): port our code to the new '
        'version, then record the new signature')


def test_a_changed_signature_fails():
    """The check above compares against MMEngine's function, not against itself."""
    api = PRIVATE_APIS[0]
    changed = api._replace(signature='(self, target: str, extra) -> None')
    assert str(inspect.signature(changed.resolve())) != changed.signature
    with pytest.raises(AttributeError):
        PrivateAPI('mmengine.runner.Runner', '_no_such_method', '()', '').resolve()


def private_overrides(cls) -> set:
    """(MMEngine class, name) of every private MMEngine method that ``cls`` defines again."""
    found = set()
    for name in vars(cls):
        if not name.startswith('_') or name.startswith('__'):
            continue
        for base in cls.__mro__[1:]:
            if base.__module__.startswith('mmengine.') and name in vars(base):
                found.add((f'{base.__module__}.{base.__qualname__}', name))
    return found


def test_every_private_override_is_listed():
    assert RegionalCompileRunner.__mro__[1] is Runner
    listed = {(api.owner, api.name) for api in PRIVATE_APIS}
    # MMEngine's classes are re-exported from their packages; compare by the defining class.
    defining = {(f'{api.resolve().__module__}.{api.resolve().__qualname__.rsplit(".", 1)[0]}',
                 api.name) for api in PRIVATE_APIS}
    overridden = set().union(*(private_overrides(cls) for cls in OUR_SUBCLASSES))
    assert overridden, 'expected the known overrides (_maybe_compile, the checkpoint hook)'
    unlisted = overridden - defining
    assert not unlisted, f'private MMEngine methods overridden but not listed in ' \
        f'mmdet_ddetr/engine/private_api.py: {sorted(unlisted)}'
    assert len(listed) == len(PRIVATE_APIS)
