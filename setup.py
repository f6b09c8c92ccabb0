"""Compiles protos/*.proto into the faast.protocol package while building, so generated code is
never committed or edited by hand."""

import re
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PROTOS = Path(__file__).parent / "protos"


class BuildWithProtos(build_py):
    def run(self):
        super().run()
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


setup(cmdclass={"build_py": BuildWithProtos})
