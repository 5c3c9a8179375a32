"""kg2text's own CPU kernels (``kernels.cpp``), compiled with the machine's C++ compiler at first use.

Why a kernel of our own: decoding a batch of beams attends one new token per row over that row's cache, and
torch does it as batched matmuls of tiny blocks (SmolLM2 at batch 32 x beam 5: 480 blocks of 3 x 64 by 64 x T
per layer and step), which on an AMD EPYC (Zen 1) read the cache at a fraction of the memory rate; attention was
14% of a batch-32 beam-5 decode in a profile. ``decode_attention`` reads each row's keys and values once.

The library is built once per source, compiler flags and torch version (about 15 s) into ``cache_dir()/kernels``
and loaded as torch ops (``torch.ops.kg2text.*``). Where there is no compiler or the build fails, ``available()``
says so once on stderr and callers keep their torch code: the same numbers up to rounding, only slower.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from kg2text.backbones import cache_dir
from kg2text.hardware import cpu_info

SOURCE = Path(__file__).with_name("kernels.cpp")


def _compile_command(compiler: str, output: Path) -> list[str]:
    from torch.utils import cpp_extension

    simd = [f"-m{flag}" for flag in ("avx2", "fma") if flag in cpu_info()["flags"]]  # this machine's, not -march
    libraries = cpp_extension.library_paths()
    return [compiler, "-O3", "-std=c++17", "-shared", "-fPIC", "-fopenmp", *simd,
            f"-D_GLIBCXX_USE_CXX11_ABI={int(torch.compiled_with_cxx11_abi())}",
            *(f"-I{path}" for path in cpp_extension.include_paths()), str(SOURCE), "-o", str(output),
            *(f"-L{path}" for path in libraries), "-lc10", "-ltorch_cpu", f"-Wl,-rpath,{libraries[0]}"]


def _library() -> Path:
    """The built library, compiled now if this source, compiler, flags and torch have none yet."""
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        raise OSError("no C++ compiler (g++, or $CXX)")
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join(_compile_command(compiler, Path("x"))).encode()
                         + torch.__version__.encode()).hexdigest()[:16]
    library = cache_dir() / "kernels" / f"kg2text_kernels_{key}.so"
    if not library.exists():
        library.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=library.parent) as tmp:
            staged = Path(tmp) / library.name
            subprocess.run(_compile_command(compiler, staged), check=True, capture_output=True, text=True)
            staged.rename(library)  # atomic: a half-written library never looks built
    return library


@functools.cache
def available() -> bool:
    """Whether the kernels are loaded (built first if needed); False, said once on stderr, where they cannot be."""
    if os.environ.get("KG2TEXT_KERNELS", "1") == "0":
        return False
    try:
        torch.ops.load_library(str(_library()))
    except (OSError, RuntimeError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", "") or error
        print(f"kg2text: own CPU kernels unavailable, using torch's ops instead ({str(detail).strip()[:300]})",
              file=sys.stderr)
        return False
    return True


def decode_attention(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, valid: torch.Tensor,
                     scaling: float) -> torch.Tensor:
    """One query token per row: ``query`` ``(R, H, D)``, ``keys``/``values`` ``(R, KV, T, D)`` views of the cache,
    ``valid`` ``(R, T)`` bool; returns ``(R, 1, H, D)`` as ``kg2text.prefix.grouped_attention`` does."""
    return torch.ops.kg2text.decode_attention(query, keys, values, valid, scaling)
