"""The generated Vitis project against what synthesis and the AWS flow need, without Vitis: the
include path `v++ -c` gets, the row loop's pipeline, each CU's SLR, and the AFI step's waiting."""

import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
from support.kernel_top import assert_canonical_dataflow

from faast.kernels.vitis import BOARDS


def _make_dry_run(vitis, board):
    return subprocess.run(
        ["make", "-n", f"TARGET_BOARD={board}"], cwd=vitis, capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_the_vpp_compile_include_path_holds_no_csim_only_header(model_repository, tmp_path, board):
    """Preprocess the kernel top as synthesis would (__SYNTHESIS__ defined) with exactly the -I flags
    the Makefile gives `v++ -c`, and the vendor's HLS headers (stood in by empty files of the same
    names) where Vitis puts them: hls4ml's ap_types must not be reached (its ap_common.h #errors)."""
    version = model_repository / "facile" / "1"
    compile_line = next(line for line in _make_dry_run(version / "vitis", board).splitlines() if "v++ -c" in line)
    includes = [word for word in shlex.split(compile_line) if word.startswith("-I")]
    assert includes and not any("ap_types" in word for word in includes)
    vendor = tmp_path / "vitis_hls_include"
    ap_types = version / "hls4ml" / "firmware" / "ap_types"
    for header in ap_types.rglob("*.h"):
        stand_in = vendor / header.relative_to(ap_types)
        stand_in.parent.mkdir(parents=True, exist_ok=True)
        stand_in.write_text("// vendor header stand-in\n")
    preprocessed = subprocess.run(
        ["g++", "-std=c++17", "-E", "-H", "-D__SYNTHESIS__", *includes, "-isystem", str(vendor), "kernel_top.cpp"],
        cwd=version / "vitis",
        capture_output=True,
        text=True,
    )
    assert preprocessed.returncode == 0, preprocessed.stderr[-2000:]
    used = [line.lstrip(". ") for line in preprocessed.stderr.splitlines() if line.startswith(".")]
    assert any(str(vendor) in header for header in used)  # ap_int.h came from the vendor's place
    assert not any("ap_types" in header for header in used)


def test_the_csim_include_path_is_the_one_synthesis_refuses(model_repository):
    """The check above has teeth: hls4ml's ap_types under __SYNTHESIS__ stops with #error."""
    version = model_repository / "facile" / "1"
    result = subprocess.run(
        ["g++", "-std=c++17", "-E", "-D__SYNTHESIS__", "-I../hls4ml", "-I../hls4ml/firmware",
         "-I../hls4ml/firmware/ap_types", "kernel_top.cpp"],
        cwd=version / "vitis",
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert result.returncode != 0 and "#error" in result.stderr


def test_the_io_parallel_top_is_a_dataflow_of_processes_pipelined_one_row_per_cycle(model_repository):
    top = (model_repository / "facile" / "1" / "vitis" / "kernel_top.cpp").read_text()
    depths = assert_canonical_dataflow(top)
    # FACILE: 15 16-bit inputs in 32 lanes, so a row spans at most 2 words; a row per stream element.
    assert depths == {"in_words": "2", "x0_rows": "2", "y0_rows": "2", "out_words": "2"}
    for process in ("feed", "network", "drain"):
        body = top[top.index(f"static void {process}(") :]
        body = body[: body.index("\n}\n")]
        assert "for (int row = 0; row < rows; ++row) {\n#pragma HLS PIPELINE II=1" in body, process


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_each_compute_unit_sits_in_the_slr_of_its_memory_bank(model_repository, board):
    text = (model_repository / "facile" / "1" / "vitis" / f"connectivity.{board}.cfg").read_text()
    banks = dict(re.findall(r"^sp=(\w+)\.inputs:(\S+)$", text, re.M))
    assert banks == dict(re.findall(r"^sp=(\w+)\.outputs:(\S+)$", text, re.M))
    slrs = dict(re.findall(r"^slr=(\w+):(SLR\d)$", text, re.M))
    assert banks and set(banks) == set(slrs)
    for cu, bank in banks.items():
        assert slrs[cu] == BOARDS[board]["bank_slr"][bank], f"{cu} on {board}: {bank} is not in {slrs[cu]}"
    if board == "aws-f1":  # aws-fpga's shell: DDR[2] is in SLR1, DDR[1] in SLR2, DDR[3] in SLR0
        assert len(set(slrs.values())) == len(slrs)  # the 2 CUs in distinct SLRs


def _fake_tool(path, body, interpreter="/bin/sh"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!{interpreter}\n" + body)
    path.chmod(0o755)


# The AWS CLI stood in: `aws ec2 create-fpga-image` answers a new AFI id each call, `aws ec2
# describe-fpga-images` the next state of `states`, both as JSON shaped like the real answers
# (aws-fpga's hdk/docs/describe_fpga_images.md); every call is recorded.
AWS_CLI = """
import json, pathlib, sys
here = pathlib.Path(__file__).resolve().parent.parent
with open(here / "aws_calls", "a") as calls:
    calls.write(" ".join(sys.argv[1:]) + "\\n")
command = sys.argv[1:3]
if command == ["ec2", "create-fpga-image"]:
    count = len((here / "aws_calls").read_text().split("create-fpga-image")) - 1
    print(json.dumps({"FpgaImageId": f"afi-0{count:016x}", "FpgaImageGlobalId": f"agfi-0{count:016x}"}, indent=4))
elif command == ["ec2", "describe-fpga-images"]:
    afi = sys.argv[sys.argv.index("--fpga-image-ids") + 1]
    states = (here / "states").read_text().split()
    (here / "states").write_text("\\n".join(states[1:]))
    state = {"Code": states[0]}
    if states[0] == "failed":
        state["Message"] = "DCP_NOT_FOUND"
    image = {"FpgaImageId": afi, "FpgaImageGlobalId": afi.replace("afi-", "agfi-"), "Name": "facile",
             "ShellVersion": "0x04261818", "State": state, "CreateTime": "2026-12-08T00:00:00.000Z"}
    print(json.dumps({"FpgaImages": [image]}, indent=4))
"""

# aws-fpga's create_vitis_afi.sh (v1.4.24) stood in, as it behaves by its source: it stops without
# RELEASE_VER or when to_aws/ exists, uploads the DCP, writes create-fpga-image's answer to
# <timestamp>_afi_id.txt and the awsxclbin (the real one needs XRT's /opt/xilinx/xrt/bin/xclbinutil).
CREATE_VITIS_AFI = """
[ -n "$RELEASE_VER" ] || { echo "Env variable RELEASE_VER not set"; exit 1; }
for arg; do case $arg in -xclbin=*) xclbin=${arg#*=} ;; -o=*) out=${arg#*=} ;; esac; done
[ -e "$xclbin" ] || { echo "File '$xclbin' not found"; exit 1; }
[ ! -d to_aws ] || { echo "Directory to_aws already exists"; exit 1; }
timestamp=$(date +%y_%m_%d-%H%M%S)
mkdir to_aws && cp "$xclbin" "to_aws/${timestamp}_SH_CL_routed.dcp"
aws s3 cp "${timestamp}_Developer_Vitis_Kernel.tar" s3://bucket/dcp/
aws ec2 create-fpga-image --name "$out" > "${timestamp}_afi_id.txt"
echo "agfi" > "$out.awsxclbin"
"""

# v++ stood in: records PLATFORM_REPO_PATHS and its arguments, writes its -o file.
VPP = """
echo "PLATFORM_REPO_PATHS=$PLATFORM_REPO_PATHS $*" >> "$(dirname "$0")/../vpp_calls"
while [ $# -gt 0 ]; do [ "$1" = -o ] && echo built > "$2"; shift; done
"""


def _f1_project(model_repository, tmp_path, states):
    """A copy of FACILE's Vitis project and an environment as aws-fpga's vitis_setup.sh leaves it
    (Vitis 2021.2, the platform downloaded), with v++, the AWS CLI and create_vitis_afi.sh stood in."""
    version = tmp_path / "facile" / "1"
    shutil.copytree(model_repository / "facile" / "1" / "vitis", version / "vitis")
    (version / "hls4ml").symlink_to(model_repository / "facile" / "1" / "hls4ml")
    aws_fpga = tmp_path / "aws-fpga"
    platform = BOARDS["aws-f1"]["platform"]
    xsa = aws_fpga / "Vitis" / "aws_platform" / platform / "hw" / f"{platform}.xsa"
    xsa.parent.mkdir(parents=True)
    xsa.write_text("platform")
    _fake_tool(aws_fpga / "Vitis" / "tools" / "create_vitis_afi.sh", CREATE_VITIS_AFI, "/bin/bash")
    _fake_tool(tmp_path / "bin" / "aws", AWS_CLI, sys.executable)
    _fake_tool(tmp_path / "bin" / "v++", VPP)
    (tmp_path / "states").write_text("\n".join(states))
    env = {
        **os.environ,
        "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
        "AWS_FPGA_REPO_DIR": str(aws_fpga),
        "XILINX_VITIS": "/tools/Xilinx/Vitis/2021.2",
        "RELEASE_VER": "2021.2",
        "PLATFORM_REPO_PATHS": "/opt/xilinx/platforms",
        "AFI_POLL_S": "0",
        "S3_BUCKET": "bucket",
        "S3_DCP_KEY": "dcp",
        "S3_LOGS_KEY": "logs",
    }
    return version / "vitis", env


def _make_f1(vitis, env):
    return subprocess.run(["make", "TARGET_BOARD=aws-f1"], cwd=vitis, env=env, capture_output=True, text=True)


def _calls(tmp_path, name):
    path = tmp_path / name
    return path.read_text().splitlines() if path.exists() else []


def test_the_f1_build_finds_its_platform_and_serves_the_afi_once_available(model_repository, tmp_path):
    vitis, env = _f1_project(model_repository, tmp_path, ["pending", "pending", "available"])
    made = _make_f1(vitis, env)
    assert made.returncode == 0, made.stdout + made.stderr
    compile_call, link_call = _calls(tmp_path, "vpp_calls")
    platforms = f"PLATFORM_REPO_PATHS={tmp_path}/aws-fpga/Vitis/aws_platform:/opt/xilinx/platforms"
    for call in (compile_call, link_call):  # where v++ finds the platform it is given by name
        assert call.startswith(f"{platforms} -") and f"--platform {BOARDS['aws-f1']['platform']}" in call
    calls = _calls(tmp_path, "aws_calls")
    assert calls[0].startswith("s3 cp") and calls[1].startswith("ec2 create-fpga-image --name facile")
    assert calls[2:] == ["ec2 describe-fpga-images --fpga-image-ids afi-00000000000000001 --output json"] * 3
    assert made.stdout.count("AFI afi-00000000000000001 is pending; waiting 0s") == 2
    assert (vitis.parent / "facile.awsxclbin").read_text() == "agfi\n"


def test_a_rerun_after_a_failed_afi_waits_for_its_own_new_afi(model_repository, tmp_path):
    vitis, env = _f1_project(model_repository, tmp_path, ["pending", "failed"])
    made = _make_f1(vitis, env)
    assert made.returncode != 0
    assert "AFI afi-00000000000000001 is failed (DCP_NOT_FOUND): see logs in bucket" in made.stderr
    assert not (vitis.parent / "facile.awsxclbin").exists()
    assert not (vitis / "build_aws-f1" / "facile.awsxclbin").exists()  # .DELETE_ON_ERROR
    assert (vitis / "build_aws-f1" / "to_aws").is_dir()  # what stops create_vitis_afi.sh on a re-run

    (tmp_path / "states").write_text("pending\navailable")
    earlier = len(_calls(tmp_path, "aws_calls"))
    again = _make_f1(vitis, env)
    assert again.returncode == 0, again.stdout + again.stderr
    described = [call for call in _calls(tmp_path, "aws_calls")[earlier:] if "describe-fpga-images" in call]
    assert described == ["ec2 describe-fpga-images --fpga-image-ids afi-00000000000000002 --output json"] * 2
    assert (vitis.parent / "facile.awsxclbin").read_text() == "agfi\n"
    assert len(_calls(tmp_path, "vpp_calls")) == 2  # the xclbin was not built again


@pytest.mark.parametrize(
    "states, timeout, error",
    [
        (["unavailable"], "600", "is unavailable"),
        (["pending"] * 3, "0", "is still pending after 0s (AFI_TIMEOUT_S)"),
    ],
)
def test_an_afi_that_cannot_become_available_stops_the_wait(model_repository, tmp_path, states, timeout, error):
    vitis, env = _f1_project(model_repository, tmp_path, states)
    made = _make_f1(vitis, {**env, "AFI_TIMEOUT_S": timeout})
    assert made.returncode != 0 and f"AFI afi-00000000000000001 {error}" in made.stderr
    assert len([call for call in _calls(tmp_path, "aws_calls") if "describe-fpga-images" in call]) == 1
    assert not (vitis.parent / "facile.awsxclbin").exists()


@pytest.mark.parametrize(
    "change, error",
    [
        ({"RELEASE_VER": ""}, "RELEASE_VER is not set: source aws-fpga's vitis_setup.sh"),
        ({"RELEASE_VER": "2020.2"}, "RELEASE_VER=2020.2 but XILINX_VITIS is Vitis 2021.2"),
        ({"XILINX_VITIS": "/tools/Xilinx/Vitis/2023.1", "RELEASE_VER": "2023.1"}, "Vitis 2023.1: aws-fpga's F1 flow"),
        (
            {"AWS_FPGA_REPO_DIR": "/nowhere"},
            "no /nowhere/Vitis/aws_platform/xilinx_aws-vu9p-f1_shell-v04261818_201920_3",
        ),
        ({"S3_DCP_KEY": ""}, "set S3_BUCKET and S3_DCP_KEY"),
    ],
)
def test_the_f1_environment_is_checked_before_vpp_starts(model_repository, tmp_path, change, error):
    vitis, env = _f1_project(model_repository, tmp_path, ["available"])
    made = _make_f1(vitis, {**env, **change})
    assert made.returncode != 0 and error in made.stderr
    assert _calls(tmp_path, "vpp_calls") == [] and _calls(tmp_path, "aws_calls") == []
