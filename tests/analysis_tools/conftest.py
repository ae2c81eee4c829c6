"""Analysis-tool tests run tiny models: one intra-op thread is faster than several (and much
faster on a CPU shared with other jobs, where extra OpenMP threads only wait for each other).
``mmdet_tool`` locates the analysis tools that the installed mmdet ships."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def mmdet_tool():
    """``mmdet_tool('analysis_tools/get_flops.py')``: path of a tool shipped in the installed
    mmdet's ``.mim/tools`` (what ``mim run mmdet ...`` runs); fails if it is not shipped."""
    from pathlib import Path

    import mmdet

    def find(relpath: str) -> Path:
        path = Path(mmdet.__file__).parent / '.mim' / 'tools' / relpath
        if not path.is_file():
            pytest.fail(f'the installed mmdet does not ship {relpath} under {path.parent}; '
                        'reinstall mmdet from its wheel (which includes .mim/tools)')
        return path

    return find
