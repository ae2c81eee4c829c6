"""tools/deployment/export_onnx.py refuses bad arguments as usage errors (exit 2) before it
builds, traces or exports anything."""
import importlib.util
import os.path as osp

import pytest

from tests.conftest import REPO

CONFIG = str(REPO / 'configs/deformable_detr/deformable-detr_r18_1xb8-quickstart_synthetic.py')


def _tool():
    spec = importlib.util.spec_from_file_location(
        'export_onnx_tool', REPO / 'tools' / 'deployment' / 'export_onnx.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOOL = _tool()


def _usage_error(capsys, argv):
    with pytest.raises(SystemExit) as info:
        TOOL.parse_args(argv)
    assert info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize('extra, message', [
    (['--tolerance', '0'], '--tolerance: expected a number > 0, got 0.0'),
    (['--tolerance=-1e-4'], '--tolerance: expected a number > 0, got -0.0001'),
    (['--dynamic', '--shape', '64', '96'],
     '--dynamic with --shape 64 96: each side must be >= 65'),
    (['--dynamic', '--verify', '--shape', '96', '96'],
     '--dynamic --verify checks at 128x64: --shape W must be >= 97'),
    (['--checkpoint', 'no/such.pth'], "--checkpoint 'no/such.pth' does not exist"),
])
def test_bad_arguments_are_usage_errors(capsys, tmp_path, extra, message):
    """Failed before: each was accepted by the parser and failed (or, for the tolerance,
    passed meaninglessly) only after the model was built and exported."""
    err = _usage_error(capsys, [CONFIG, '--out', str(tmp_path / 'm.onnx'), *extra])
    assert message in err


def test_missing_output_folder_is_a_usage_error(capsys, tmp_path):
    """Failed before: the export ran for minutes, then the atomic write found no folder."""
    out = tmp_path / 'missing' / 'm.onnx'
    err = _usage_error(capsys, [CONFIG, '--out', str(out)])
    assert f'folder {osp.dirname(out)} does not exist (create it first)' in err


def test_missing_config_is_a_usage_error(capsys, tmp_path):
    err = _usage_error(capsys, [str(tmp_path / 'nope.py'), '--out', str(tmp_path / 'm.onnx')])
    assert 'does not exist' in err and 'nope.py' in err


def test_valid_arguments_pass(tmp_path):
    args = TOOL.parse_args([CONFIG, '--out', str(tmp_path / 'm.onnx'), '--dynamic', '--verify',
                            '--shape', '96', '128', '--tolerance', '1e-3'])
    assert args.tolerance == 1e-3 and args.shape == [96, 128]
