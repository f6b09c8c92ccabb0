"""Compiles protos/*.proto into the faast.protocol package, and host/fastpath.cpp with
host/network_pass.cpp (the emulator's compiled loops and its whole-network pass) into
faast/host/libfastpath.so, while building: generated code is never committed, and the library is
built for the machine that installs it (-march=native: its vector instructions)."""

import re
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent
PROTOS = ROOT / "protos"


class BuildWithGenerated(build_py):
    def run(self):
        super().run()
        self.compile_protos()
        library = Path(self.build_lib) / "faast" / "host" / "libfastpath.so"
        # Without trapping math gcc vectorizes floor and trunc; every value is exact, so results are unchanged.
        subprocess.run(
            [
                "g++",
                "-O3",
                "-march=native",
                "-fno-trapping-math",
                "-fno-math-errno",
                "-shared",
                "-fPIC",
                "-o",
                str(library),
                str(ROOT / "host" / "fastpath.cpp"),
                str(ROOT / "host" / "network_pass.cpp"),
            ],
            check=True,
        )

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
            text = generated.read_text()
            generated.write_text(re.sub(rf"^import ({names}) as", r"from . import \1 as", text, flags=re.M))


setup(cmdclass={"build_py": BuildWithGenerated})
