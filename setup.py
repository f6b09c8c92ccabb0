"""Builds faast's generated and compiled parts while installing (generated code is never committed):

- protos/*.proto into the faast.protocol package (grpcio-tools), registered in the package's own descriptor
  pool so that it loads beside tritonclient.grpc's copies of the same files;
- faast.host._native, faast's one compiled extension (pybind11, through setuptools' build_ext): the module
  host/native.cpp, built for the architecture's baseline, and the engine it dispatches to,
  host/fastpath.cpp and host/network_pass.cpp (the emulator's compiled loops and its whole-network pass),
  compiled once per instruction set in ENGINES, each time with that set's flags and -DFAAST_ISA=<name>
  into objects of its own, all linked into the one module. At import the module picks the best engine
  the CPU supports (FAAST_ISA=baseline|avx2|avx512 forces one; `faast.host.fastpath.isa()` says which
  runs). Nothing is built with -march=native: the wheel is platform-tagged and runs on every CPU of its
  architecture, each at its own best speed.

Compiling one program with several -m flags has a trap: an inline function or template instantiation
emitted by two objects is a weak symbol, and the linker keeps one copy for everyone, maybe the AVX-512
one. The engine sources are written so that they emit none (host/native.cpp says how), and every
engine object is checked with nm after compiling: a weak symbol, or a global one outside faast::<isa>,
fails the build.
"""

import platform
import re
import shutil
import struct
import subprocess
from pathlib import Path

from pybind11.setup_helpers import Pybind11Extension
from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent
PROTOS = ROOT / "protos"
# Without trapping math gcc vectorizes floor and trunc; every value is exact, so results are unchanged.
# -fno-wrapv: Python's own CFLAGS carry -fwrapv, which the engine's integer loops neither need nor gain from.
FLAGS = ["-O3", "-fno-trapping-math", "-fno-math-errno", "-fno-wrapv"]
ENGINE_SOURCES = ["host/fastpath.cpp", "host/network_pass.cpp"]
X86_64 = platform.machine().lower() in ("x86_64", "amd64") and struct.calcsize("P") == 8


def engines() -> dict[str, list[str]]:
    """Each engine's name (native.cpp's, FAAST_ISA's) and its compiler flags."""
    if not X86_64:
        return {"baseline": []}  # the portable code, for the architecture's baseline
    return {
        "baseline": [],  # x86-64: SSE2
        "avx2": ["-march=x86-64-v3"],  # AVX2, FMA, BMI2..., tuned for no CPU in particular
        # AVX-512 F/BW/CD/DQ/VL (DQ: the int64 <-> double conversions and int64 products the pass is
        # made of) and VNNI (the pair products). Generic tuning: 512-bit vectors, faster here than
        # -march=native's 256.
        "avx512": ["-march=x86-64-v4", "-mavx512vnni"],
    }


class BuildWithGenerated(build_py):
    def run(self):
        super().run()
        self.compile_protos()

    def compile_protos(self):
        from grpc_tools import protoc

        out = Path(self.build_lib) / "faast" / "protocol"
        out.mkdir(parents=True, exist_ok=True)
        protos = sorted(str(p) for p in PROTOS.glob("*.proto"))
        args = ["protoc", f"-I{PROTOS}", f"--python_out={out}", f"--grpc_python_out={out}", *protos]
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed on " + " ".join(protos))
        # protoc writes flat imports ("import model_config_pb2"); inside a package they must be relative.
        names = "|".join(Path(p).stem + "_pb2" for p in protos)
        for generated in out.glob("*_pb2*.py"):
            text = re.sub(rf"^import ({names}) as", r"from . import \1 as", generated.read_text(), flags=re.M)
            if not generated.stem.endswith("_grpc"):
                text = into_private_pool(text, generated.name)
            generated.write_text(text)


def into_private_pool(text: str, name: str) -> str:
    """Registers a generated module's file in faast.protocol.pool's descriptor pool instead of protobuf's
    default one, where tritonclient.grpc registers Triton's files of the same names (grpc_service.proto,
    inference.ModelInferRequest...) and refuses a second copy. Fails the build when protoc's output no
    longer has the two lines rewritten, rather than ship a module that clashes again."""
    rewrites = [
        (r"^from google\.protobuf import descriptor_pool as _descriptor_pool$", "from .pool import POOL as _pool"),
        (r"\b_descriptor_pool\.Default\(\)", "_pool"),
    ]
    for pattern, replacement in rewrites:
        text, count = re.subn(pattern, replacement, text, flags=re.M)
        if count != 1:
            raise RuntimeError(f"{name}: expected one {pattern!r} in protoc's output, found {count}")
    return text


class BuildNative(build_ext):
    """The engine's objects, one set per ISA, linked into the module with its own sources."""

    def build_extension(self, ext):
        objects = []
        for isa, flags in engines().items():
            compiled = self.compiler.compile(
                ENGINE_SOURCES,
                output_dir=str(Path(self.build_temp) / "engine" / isa),
                macros=[("FAAST_ISA", isa)],
                include_dirs=["host"],
                extra_postargs=["-std=c++17", "-fvisibility=hidden", "-g0", *FLAGS, *flags],
                depends=["host/native.h", "host/engine.h"],
            )
            for path in compiled:
                check_isolated(path, isa)
            objects += compiled
        ext.extra_objects = objects
        super().build_extension(ext)


def check_isolated(path: str, isa: str) -> None:
    """Fails the build when an engine object defines a symbol the linker could share with another ISA's
    code: a weak one (an inline or template copy) or a global one outside faast::<isa>."""
    nm = shutil.which("nm")
    if nm is None:
        print(f"warning: no nm to check {path} defines only faast::{isa} symbols")
        return
    listing = subprocess.run([nm, "--defined-only", "-P", path], check=True, capture_output=True, text=True).stdout
    namespace = f"_ZN5faast{len(isa)}{isa}"
    shared = [
        line
        for line in listing.splitlines()
        if (kind := line.split()[1]) in "WwVvu" or (kind.isupper() and not line.startswith(namespace))
    ]
    if shared:
        raise RuntimeError(f"{path} ({isa}) defines symbols the linker could share between ISAs: {shared}")


setup(
    cmdclass={"build_py": BuildWithGenerated, "build_ext": BuildNative},
    ext_modules=[
        Pybind11Extension(
            "faast.host._native",
            ["host/native.cpp"],
            cxx_std=17,
            depends=["host/native.h", "host/engine.h", *ENGINE_SOURCES],
            extra_compile_args=FLAGS,
        )
    ],
)
