"""The generated Vitis project against what synthesis and the AWS flow need, without Vitis: the
include path `v++ -c` gets, the row loop's pipeline, each CU's SLR, and the AFI step's waiting."""

import os
import re
import shlex
import shutil
import subprocess

import pytest

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


def dataflow_region(top):
    """The statements of the kernel top's DATAFLOW region: streams, their depths, the calls."""
    body = top[top.index("#pragma HLS DATAFLOW") :]
    return [line.strip() for line in body[: body.index("\n}")].splitlines()[1:]]


def assert_canonical_dataflow(top):
    """Only stream declarations, each with its depth, and calls passing streams and `rows` as they are:
    what Vitis HLS takes as a DATAFLOW region (no arithmetic between the processes)."""
    region = dataflow_region(top)
    streams = re.findall(r'^hls::stream<\w+> (\w+)\("\1"\);$', "\n".join(region), re.M)
    depths = dict(re.findall(r"^#pragma HLS STREAM variable=(\w+) depth=(\d+)$", "\n".join(region), re.M))
    calls = [re.fullmatch(r"(\w+)\(([\w, ]+)\);", line) for line in region if not line.startswith(("hls::", "#"))]
    assert streams and set(depths) == set(streams) and all(int(d) >= 2 for d in depths.values())
    assert all(calls) and [c.group(1) for c in calls] == ["read_words", "feed", "network", "drain", "write_words"]
    for call in calls:
        arguments = call.group(2).split(", ")
        assert arguments[-1] == "rows" and set(arguments[:-1]) <= {*streams, "inputs", "outputs"}
    produced = [a for c in calls for a in c.group(2).split(", ")[:-1] if a in streams]
    assert sorted(produced) == sorted(streams * 2)  # each stream: one producer, one consumer
    return depths


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


def _fake_tool(path, body):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def _afi_project(model_repository, tmp_path, states):
    """A copy of the F1 project with a built xclbin, a stand-in create_vitis_afi.sh and a stand-in
    `aws` that reports `states` one after another (no AWS account is involved)."""
    version = tmp_path / "facile" / "1"
    shutil.copytree(model_repository / "facile" / "1" / "vitis", version / "vitis")
    (version / "hls4ml").symlink_to(model_repository / "facile" / "1" / "hls4ml")
    vitis = version / "vitis"
    build = vitis / "build_aws-f1"
    build.mkdir()
    for name in ("facile_top.xo", "facile.xclbin"):
        (build / name).write_text("built")
    aws_fpga = tmp_path / "aws-fpga"
    _fake_tool(
        aws_fpga / "Vitis" / "tools" / "create_vitis_afi.sh",
        f'echo "$AWS_FPGA_REPO_DIR" > {tmp_path}/seen_repo_dir\n'
        "echo built > facile.awsxclbin\n"
        'echo \'{"FpgaImageId": "afi-0123456789abcdef0"}\' > 26_12_02-183000_afi_id.txt\n',
    )
    (tmp_path / "states").write_text("\n".join(states) + "\n")
    _fake_tool(
        tmp_path / "bin" / "aws",
        f'echo "$@" >> {tmp_path}/aws_calls\nhead -n 1 {tmp_path}/states\nsed -i 1d {tmp_path}/states\n',
    )
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "AWS_FPGA_REPO_DIR": str(aws_fpga)}
    return vitis, env


def _make_afi(vitis, env):
    return subprocess.run(
        ["make", "TARGET_BOARD=aws-f1", "AFI_POLL_S=0", "S3_BUCKET=b", "S3_DCP_KEY=d", "S3_LOGS_KEY=l"],
        cwd=vitis,
        env=env,
        capture_output=True,
        text=True,
    )


def test_the_afi_is_served_only_once_aws_reports_it_available(model_repository, tmp_path):
    vitis, env = _afi_project(model_repository, tmp_path, ["pending", "pending", "available"])
    made = _make_afi(vitis, env)
    assert made.returncode == 0, made.stdout + made.stderr
    assert (tmp_path / "seen_repo_dir").read_text().strip() == env["AWS_FPGA_REPO_DIR"]  # exported to the script
    calls = (tmp_path / "aws_calls").read_text().splitlines()
    assert len(calls) == 3 and all("describe-fpga-images --fpga-image-ids afi-0123456789abcdef0" in c for c in calls)
    assert made.stdout.count("is pending; waiting") == 2
    assert (vitis.parent / "facile.awsxclbin").read_text() == "built\n"


def test_a_failed_afi_stops_the_build_and_serves_nothing(model_repository, tmp_path):
    vitis, env = _afi_project(model_repository, tmp_path, ["pending", "failed"])
    made = _make_afi(vitis, env)
    assert made.returncode != 0 and "AFI afi-0123456789abcdef0 failed" in made.stdout
    assert not (vitis.parent / "facile.awsxclbin").exists()
    assert not (vitis / "build_aws-f1" / "facile.awsxclbin").exists()  # .DELETE_ON_ERROR
