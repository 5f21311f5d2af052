"""Build hook for hpckpt's one C extension (metadata lives in setup.cfg).

``hpckpt.io._crc32c`` is CRC-32C with AVX-512 VPCLMULQDQ. It is optional: where it
does not compile (no C compiler, not x86-64 GCC/Clang), hpckpt installs without it
and checksums with the ``crc32c`` package, which gives the same values.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "hpckpt.io._crc32c",
            sources=["hpckpt/io/_crc32c.c"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
