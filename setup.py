#!/usr/bin/env python
"""Build the compiled extension ``freqfusion_d2._C`` (metadata: pyproject.toml).

The C++ CPU kernels are always built. The CUDA kernels are added when a GPU is visible and
``CUDA_HOME`` is found, or when ``FORCE_CUDA=1`` (e.g. on a build machine without a GPU; set
``TORCH_CUDA_ARCH_LIST``, such as ``"8.0;9.0"``, for the architectures you need). ``MAX_JOBS``
limits parallel compilation, as for any torch extension. Build against the installed torch:
``pip install --no-build-isolation -e .``.
"""

import glob
import os

import torch
from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join("freqfusion_d2", "layers", "csrc")


def want_cuda():
    if os.getenv("FORCE_CUDA", "0") == "1":
        return True
    return torch.cuda.is_available() and CUDA_HOME is not None


def nvidia_wheel_includes():
    """Header folders of the ``nvidia-*`` pip wheels that torch's CUDA headers may include.

    A system CUDA toolkit can lack the cuSPARSE/cuBLAS headers that torch's own headers pull in;
    the wheels torch depends on ship them.
    """
    try:
        import nvidia
    except ImportError:
        return []
    found = []
    for root in nvidia.__path__:
        found += glob.glob(os.path.join(root, "*", "include"))
        found += glob.glob(os.path.join(root, "cu*", "include"))
    return sorted({p for p in found if os.path.isdir(p)})


def get_extensions():
    sources = [os.path.join(CSRC, "vision.cpp")]
    sources += sorted(glob.glob(os.path.join(CSRC, "*", "*.cpp")))
    define_macros = []
    extra_compile_args = {"cxx": ["-O3"]}
    include_dirs = [os.path.join(HERE, CSRC)]
    extension = CppExtension
    if want_cuda():
        extension = CUDAExtension
        sources += sorted(glob.glob(os.path.join(CSRC, "*", "*.cu")))
        define_macros.append(("WITH_CUDA", None))
        extra_compile_args["nvcc"] = ["-O3", "--expt-relaxed-constexpr"]
        extra_compile_args["nvcc"] += os.getenv("NVCC_FLAGS", "").split()
        include_dirs += nvidia_wheel_includes()
    return [
        extension(
            "freqfusion_d2._C",
            sources,
            include_dirs=include_dirs,
            define_macros=define_macros,
            extra_compile_args=extra_compile_args,
        )
    ]


setup(
    packages=find_packages(exclude=("configs", "tests", "tests.*", "benchmarks")),
    ext_modules=get_extensions(),
    cmdclass={"build_ext": BuildExtension},
)
