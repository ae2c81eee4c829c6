"""``tools/device/prebuild_mmcv.py``'s accounting and linkage checks on made-up inputs (the
build itself takes hours: it is run by hand, see tools/device/README.md)."""
import importlib.util
from pathlib import Path

DEVICE_TOOLS = Path(__file__).resolve().parents[2] / 'tools' / 'device'
spec = importlib.util.spec_from_file_location('prebuild_mmcv', DEVICE_TOOLS / 'prebuild_mmcv.py')
prebuild = importlib.util.module_from_spec(spec)
spec.loader.exec_module(prebuild)


def test_build_time_adds_up_resumed_runs_from_ninjas_log(tmp_path):
    """Each run restarts ninja's clock; entries come in the order compiles finish. Run 1: two
    jobs, 3 s of wall with 5.5 object-seconds; run 2 (resumed): 4 s of wall, 5.5 object-s."""
    log = tmp_path / prebuild.MMCV / 'build' / 'temp.linux-x86_64-cpython-312' / '.ninja_log'
    log.parent.mkdir(parents=True)
    rows = [(0, 1000, 'a.o'), (1000, 2500, 'b.o'), (0, 3000, 'c.o'),  # run 1
            (0, 2000, 'd.o'), (500, 4000, 'e.o')]                     # run 2
    log.write_text('# ninja log v5\n' + ''.join(f'{s}\t{e}\t0\t/x/{o}\tabc\n' for s, e, o in rows))
    assert prebuild.ninja_times(tmp_path) == dict(objects=5, runs=2, wall_seconds=7,
                                                  object_seconds=11)
    assert prebuild.ninja_times(tmp_path / 'elsewhere') == {}


def test_needed_libraries_are_traced_to_the_package_that_ships_them():
    """What the GPU machine's package list is checked against: torch's own libraries come
    from the torch distribution, the C runtime from the system, an unknown one from nothing."""
    found = prebuild.library_providers(['libc.so.6', 'libc10.so', 'libnowhere.so'])
    assert found == {'libc.so.6': 'system', 'libc10.so': 'torch', 'libnowhere.so': None}
    assert prebuild.ALLOWED_NEEDED.match('libcudart.so.13')
    assert not prebuild.ALLOWED_NEEDED.match('libcudart.so.12')


def test_compile_env_puts_nvccs_own_toolkit_first(tmp_path, monkeypatch):
    """Where nvcc is a wrapper script (/usr/local/bin/nvcc here), torch's CUDA_HOME has no CUDA
    headers and mmcv's .cpp files found cuda_runtime_api.h only in torch's pip headers, which
    lack crt/host_defines.h (the build failed on info.cpp). The toolkit nvcc reports comes
    first; the compile commands (and so ninja's resumption) do not change: no CUDA_HOME."""
    import cuda_check  # tools/device is on sys.path once prebuild_mmcv is loaded
    fake = tmp_path / 'bin' / 'nvcc'
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "#$ TOP=/opt/cuda-13.0/bin/.." >&2\n')
    fake.chmod(0o755)
    assert cuda_check.cuda_toolkit(str(fake)) == Path('/opt/cuda-13.0')
    site = tmp_path / 'site'
    (site / 'nvidia' / 'cu13' / 'include').mkdir(parents=True)
    monkeypatch.setattr(cuda_check, 'cuda_toolkit', lambda: Path('/opt/cuda-13.0'))
    env = cuda_check.mmcv_compile_env({'CPATH': '/mine'}, site)
    assert env['CPATH'].split(':') == ['/opt/cuda-13.0/include',
                                       str(site / 'nvidia' / 'cu13' / 'include'), '/mine']
    assert env['LIBRARY_PATH'] == '/opt/cuda-13.0/lib64'
    assert 'CUDA_HOME' not in env and env['TORCH_CUDA_ARCH_LIST'] == '9.0'


def test_msda_kernels_are_read_from_cuobjdumps_function_list():
    """Lines as cuobjdump 13 prints them for the wheel built here: the kernels are local
    symbols of the device code, not exported ones (``nm -D`` cannot see them)."""
    listing = ('Resource usage:\n'
               ' Function _Z31ms_deformable_im2col_gpu_kernelIfEviPKT_PKlS4_S2_S2_iiiiiiiPS0_:\n'
               ' Function _Z31ms_deformable_im2col_gpu_kernelIN3c104HalfEEviPKT_PKlS6_S4_S4_iii:\n'
               ' Function _Z34ms_deformable_col2im_gpu_kernel_gmIdEviPKT_PKlS4_S2_S2_iiiiiiiS2_P:\n'
               ' Function _Z9other_kernelIfEvi:\n')
    assert prebuild.msda_kernels(listing) == {
        'ms_deformable_im2col_gpu_kernel<float>', 'ms_deformable_im2col_gpu_kernel<c10::Half>',
        'ms_deformable_col2im_gpu_kernel_gm<double>'}
    missing = [k for k in prebuild.EXPECTED_KERNELS if k not in prebuild.msda_kernels(listing)]
    assert missing == ['ms_deformable_im2col_gpu_kernel<double>',
                       'ms_deformable_col2im_gpu_kernel_gm<float>',
                       'ms_deformable_col2im_gpu_kernel_gm<c10::Half>']
