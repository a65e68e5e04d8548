"""Build hook for the optional native extension ``poodle_vllm._native`` (csrc/).

All project metadata lives in pyproject.toml; this file only adds the C extension.
The extension is optional: without a compiler, or if the build fails for any reason,
the install continues and ``poodle_vllm.native`` uses its pure-Python fallback.

    .venv/bin/python setup.py build_ext --inplace      # build in the source tree
    POODLE_NO_NATIVE=1 pip install .                    # skip the extension
    POODLE_NATIVE_NO_OPENSSL=1 ...                      # embedded SHA-256, no libcrypto link
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """``build_ext`` that warns instead of failing when the native extension cannot be built."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any failure must not break the install
            self._warn(exc)

    def build_extension(self, ext: Extension) -> None:
        # First try with OpenSSL's SHA-256 (hardware accelerated), then the embedded one.
        if not os.environ.get("POODLE_NATIVE_NO_OPENSSL"):
            macros, libs = list(ext.define_macros), list(ext.libraries)
            ext.define_macros.append(("POODLE_USE_OPENSSL", "1"))
            ext.libraries.append("crypto")
            try:
                super().build_extension(ext)
                return
            except Exception as exc:  # noqa: BLE001
                print(f"note: building without OpenSSL ({exc!r})", file=sys.stderr)
                ext.define_macros, ext.libraries = macros, libs
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._warn(exc)

    @staticmethod
    def _warn(exc: BaseException) -> None:
        print(
            f"WARNING: optional native extension not built ({exc!r}); "
            "poodle_vllm.native falls back to pure Python.",
            file=sys.stderr,
        )


def _extensions() -> list[Extension]:
    if os.environ.get("POODLE_NO_NATIVE"):
        return []
    compile_args = [] if sys.platform == "win32" else ["-O3", "-std=c99"]
    return [
        Extension(
            "poodle_vllm._native",
            sources=["csrc/block_hash.c"],
            extra_compile_args=compile_args,
            optional=True,
        )
    ]


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
