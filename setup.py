"""Build script for the native extension ``emclassify._C``.

The extension holds the fused inference ops registered with
``TORCH_LIBRARY(emclassify, ...)`` (see ``csrc/``). It is built against the
torch that is already installed, so install with::

    pip install torch==2.13.0 pybind11 ninja setuptools wheel
    pip install --no-build-isolation -e .

CUDA kernels are added when the installed torch has CUDA (or ``FORCE_CUDA=1``).
``EMCLASSIFY_BUILD_NATIVE=0`` skips the extension altogether; a failed compile
is reported loudly but does not fail the install: at run time every op then
falls back to the pure-PyTorch reference (``emclassify --version`` says which).
"""
import glob
import os
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _env_flag(name: str, default: str = "0") -> bool:
    return os.environ.get(name, default).strip().lower() in {"1", "true", "yes", "on"}


def _native_extensions():
    if not _env_flag("EMCLASSIFY_BUILD_NATIVE", "1"):
        print("emclassify: EMCLASSIFY_BUILD_NATIVE=0, skipping the native extension", file=sys.stderr)
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension
    except ImportError:
        raise SystemExit(
            "emclassify: torch must be installed before building (pip install torch==2.13.0), "
            "and pip must be run with --no-build-isolation so it is used."
        )

    cpp_sources = sorted(glob.glob(os.path.join("csrc", "*.cpp"))) + sorted(
        glob.glob(os.path.join("csrc", "cpu", "*.cpp"))
    )
    # CUDA builds add the raw-pointer kernels (.cu) and their dispatcher glue (.cpp).
    cuda_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu"))) + sorted(
        glob.glob(os.path.join("csrc", "cuda", "*.cpp"))
    )
    # A CPU-only torch cannot link CUDA code, whatever FORCE_CUDA says.
    use_cuda = torch.version.cuda is not None and (torch.cuda.is_available() or _env_flag("FORCE_CUDA"))

    openmp = ["-fopenmp"] if sys.platform.startswith("linux") else (["/openmp"] if os.name == "nt" else [])
    cxx_flags = ["-O3", "-std=c++20"] if os.name != "nt" else ["/O2", "/std:c++20"]
    extra = {"cxx": cxx_flags + openmp}
    macros = [("Py_LIMITED_API", "0x030A0000")]
    link = ["-fopenmp"] if sys.platform.startswith("linux") else []
    if use_cuda:
        extra["nvcc"] = ["-O3", "-std=c++17"]
        macros.append(("EMCLASSIFY_WITH_CUDA", "1"))
        ext = CUDAExtension(
            "emclassify._C",
            cpp_sources + cuda_sources,
            extra_compile_args=extra,
            extra_link_args=link,
            define_macros=macros,
            py_limited_api=True,
        )
    else:
        ext = CppExtension(
            "emclassify._C",
            cpp_sources,
            extra_compile_args=extra,
            extra_link_args=link,
            define_macros=macros,
            py_limited_api=True,
        )

    class OptionalBuildExtension(BuildExtension):
        """Build the extension; on a compiler failure warn and install without it."""

        def run(self):
            try:
                super().run()
            except Exception as exc:  # noqa: BLE001 - any compiler/toolchain failure
                self._report(exc)

        def build_extension(self, extension):
            try:
                super().build_extension(extension)
            except Exception as exc:  # noqa: BLE001
                self._report(exc)

        @staticmethod
        def _report(exc):
            bar = "=" * 78
            print(
                f"\n{bar}\nemclassify: building the native extension failed:\n  {exc}\n"
                "Installing without it; every op will use the pure-PyTorch reference "
                f"(same predictions, slower).\n{bar}\n",
                file=sys.stderr,
            )

    return [ext], {"build_ext": OptionalBuildExtension.with_options(no_python_abi_suffix=True)}


ext_modules, cmdclass = _native_extensions()
setup(
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    options={"bdist_wheel": {"py_limited_api": "cp310"}} if ext_modules else {},
)
