"""`faast build KERNEL --out REPO`: a kernel folder → a Triton model-repository entry.

    REPO/<name>/config.pbtxt          Triton model configuration (tensor names, batch size, device)
    REPO/<name>/1/kernel.json         the kernel's description, read by the host runtime
    REPO/<name>/1/hls4ml/             the generated hls4ml project (build output, never committed)
    REPO/<name>/1/csim.so             C simulation: hls4ml firmware + a batched entry point

The hls4ml conversion runs in a child process (TensorFlow stays out of this one); compiling and
writing the configuration need only the serving dependencies.
"""

import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from google.protobuf import text_format

from faast.protocol import model_config as mc

from .spec import KernelSpec

TEMPLATES = Path(__file__).parent / "templates"
VERSION = "1"


def build(kernel_dir, repository):
    spec = KernelSpec.read(kernel_dir)
    version_dir = Path(repository).resolve() / spec.name / VERSION
    project_dir = version_dir / "hls4ml"
    if project_dir.exists():
        shutil.rmtree(project_dir)
    version_dir.mkdir(parents=True, exist_ok=True)
    print(f"converting {spec.path} with hls4ml into {project_dir}", flush=True)
    subprocess.run([sys.executable, "-P", "-m", "faast.kernels.convert", str(spec.path), str(project_dir)], check=True)
    shutil.copy(project_dir / "kernel.json", version_dir / "kernel.json")
    print("compiling the C simulation library", flush=True)
    compile_csim(project_dir, spec.name, version_dir / "csim.so")
    (version_dir.parent / "config.pbtxt").write_text(text_format.MessageToString(model_config(spec)))
    print(f"wrote {version_dir.parent}")


def _cxx_standard():
    """The C++ standard hls4ml's own build_lib.sh picks, so csim and predict() compile alike."""
    probe = subprocess.run(["g++", "-Werror", "-fsyntax-only", "-std=c++23", "-xc++", "-", "-o", "/dev/null"],
                           input=b"", capture_output=True)
    return "-std=c++23" if probe.returncode == 0 else "-std=c++11"


def compile_csim(project_dir, project, library):
    weights = f'"{project_dir / "firmware" / "weights"}"'
    flags = ["-O3", "-fPIC", _cxx_standard(), "-fno-gnu-unique", "-w", "-Ifirmware/ap_types/",
             f"-DWEIGHTS_DIR={weights}", f"-DFAAST_TOP_FLOAT={project}_float"]
    sources = [f"firmware/{project}.cpp", f"{project}_bridge.cpp", str(TEMPLATES / "csim_batch.cpp")]
    objects = [f"faast_csim_{i}.o" for i in range(len(sources))]

    def compile_one(source, obj):
        subprocess.run(["g++", *flags, "-c", source, "-o", obj], cwd=project_dir, check=True)

    with ThreadPoolExecutor() as pool:
        list(pool.map(compile_one, sources, objects))
    subprocess.run(["g++", "-shared", *objects, "-o", str(library)], cwd=project_dir, check=True)
    for obj in objects:
        (project_dir / obj).unlink()


def model_config(spec):
    serving = spec.serving
    config = mc.ModelConfig(name=spec.name, backend="faast", max_batch_size=serving["max_batch_size"])
    for tensor, target in ((serving["input"], config.input), (serving["output"], config.output)):
        target.add(name=tensor["name"], data_type=mc.DataType.Value("TYPE_" + tensor["datatype"]),
                   dims=tensor["dims"])
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)
    config.parameters["device"].string_value = serving["device"]
    return config
