"""The Vitis project of a kernel: kernel top, connectivity per board and a Makefile (v++ -c, v++ -l,
and the AFI step for AWS F1), plus the buffer layout the host runtime packs to.

Written next to the hls4ml project by `faast build`; the C simulation compiles the same kernel top.
"""

from pathlib import Path
from string import Template

from faast.host.fixed import FixedType, lane_bits

TEMPLATES = Path(__file__).parent / "templates"
WORD_BITS = 512

# Board → Vitis platform, the SLR each DDR bank sits in, and the order compute units take the banks
# (round robin): each CU is placed in its bank's own SLR, so no AXI master crosses SLRs. U250: one
# bank per SLR. AWS F1 (aws-fpga's shell): DDR[2] is the shell's DDR in SLR1, DDR[1] in SLR2,
# DDR[3] in SLR0 — the first CUs take banks in distinct SLRs.
BOARDS = {
    "u250": {
        "platform": "xilinx_u250_gen3x16_xdma_4_1_202210_1",
        "bank_slr": {"DDR[0]": "SLR0", "DDR[1]": "SLR1", "DDR[2]": "SLR2", "DDR[3]": "SLR3"},
        "bank_order": ["DDR[0]", "DDR[1]", "DDR[2]", "DDR[3]"],
    },
    "aws-f1": {
        "platform": "xilinx_aws-vu9p-f1_shell-v04261818_201920_3",
        "bank_slr": {"DDR[0]": "SLR1", "DDR[1]": "SLR2", "DDR[2]": "SLR1", "DDR[3]": "SLR0"},
        "bank_order": ["DDR[1]", "DDR[3]", "DDR[2]", "DDR[0]"],
    },
}
DEFAULT_COMPUTE_UNITS = {"u250": 4, "aws-f1": 2}


def buffer_layout(description, rows_per_execution):
    """How the host packs one kernel execution's input rows and unpacks its outputs."""
    layout = {"word_bits": WORD_BITS, "rows_per_execution": rows_per_execution}
    for role, (tensor,) in (("input", description["inputs"]), ("output", description["outputs"])):
        fixed = FixedType.parse(tensor["type"])
        lane = lane_bits(fixed.width)
        layout[role] = {
            "type": tensor["type"],
            "bits": fixed.width,
            "lane_bits": lane,
            "lanes_per_word": WORD_BITS // lane,
            "elements_per_row": tensor["size"],
        }
    FixedType.parse(layout["input"]["type"]).to_bits([0.0])  # fails early for an unsupported input type
    return layout


def write_project(vitis_dir, description, compute_units, clock_period_ns, default_board):
    vitis_dir.mkdir(parents=True, exist_ok=True)
    project = description["project"]
    buffers = description["buffers"]
    fill = {
        "project": project,
        "n_in": buffers["input"]["elements_per_row"],
        "n_out": buffers["output"]["elements_per_row"],
        "in_bits": buffers["input"]["bits"],
        "in_lane_bits": buffers["input"]["lane_bits"],
        "in_lanes": buffers["input"]["lanes_per_word"],
        "out_bits": buffers["output"]["bits"],
        "out_lane_bits": buffers["output"]["lane_bits"],
        "io_stream": int(description["io_type"] == "io_stream"),
    }
    (vitis_dir / "kernel_top.cpp").write_text(Template((TEMPLATES / "kernel_top.cpp").read_text()).substitute(fill))
    for board, count in compute_units.items():
        (vitis_dir / f"connectivity.{board}.cfg").write_text(_connectivity(project, board, count))
    (vitis_dir / "Makefile").write_text(_makefile(project, clock_period_ns, default_board))


def _connectivity(project, board, count):
    top = f"{project}_top"
    names = ".".join(f"{top}_{i}" for i in range(1, count + 1))
    lines = [
        f"# {count} compute units of {top} on {board}, spread over DDR banks and SLRs.",
        "[connectivity]",
        f"nk={top}:{count}:{names}",
    ]
    banks = BOARDS[board]["bank_order"]
    for i in range(1, count + 1):
        bank = banks[(i - 1) % len(banks)]
        slr = BOARDS[board]["bank_slr"][bank]
        lines += [f"sp={top}_{i}.in:{bank}", f"sp={top}_{i}.out:{bank}", f"slr={top}_{i}:{slr}"]
    return "\n".join(lines) + "\n"


def _makefile(project, clock_period_ns, default_board):
    platforms = "\n".join(f"PLATFORM_{board} := {spec['platform']}" for board, spec in BOARDS.items())
    return f"""# Vitis build of the faast kernel {project}_top (written by `faast build`).
#   make                      # hardware build for TARGET_BOARD (default {default_board}); hours
#   make TARGET_BOARD=aws-f1 S3_BUCKET=... S3_DCP_KEY=... S3_LOGS_KEY=...   # adds the AFI step
# Needs Vitis (v++) with the board's platform; AWS F1 also needs aws-fpga's Vitis setup and the AWS CLI.
# v++ compiles against Vitis HLS's own ap_types: hls4ml's copy (firmware/ap_types) is for C simulation
# only, and its ap_common.h stops synthesis with #error, so it stays out of VPP_FLAGS.
TARGET_BOARD ?= {default_board}
{platforms}
PLATFORM := $(PLATFORM_$(TARGET_BOARD))
KERNEL := {project}_top
HLS4ML := ../hls4ml
BUILD := build_$(TARGET_BOARD)
FREQUENCY_MHZ := {int(round(1000 / clock_period_ns))}
VPP_FLAGS := -t hw --platform $(PLATFORM) --temp_dir $(BUILD)/tmp --kernel_frequency $(FREQUENCY_MHZ) \\
	-I$(HLS4ML) -I$(HLS4ML)/firmware
AWS_FPGA_REPO_DIR ?= $(HOME)/aws-fpga
export AWS_FPGA_REPO_DIR
AFI_POLL_S ?= 60
SERVED_u250 := ../{project}.xclbin
SERVED_aws-f1 := ../{project}.awsxclbin

.PHONY: all xo xclbin afi clean
.DELETE_ON_ERROR:
all: $(SERVED_$(TARGET_BOARD))

xo: $(BUILD)/$(KERNEL).xo
$(BUILD)/$(KERNEL).xo: kernel_top.cpp $(HLS4ML)/firmware/{project}.cpp
\tmkdir -p $(BUILD)
\tv++ -c $(VPP_FLAGS) -k $(KERNEL) -o $@ kernel_top.cpp $(HLS4ML)/firmware/{project}.cpp

xclbin: $(BUILD)/{project}.xclbin
$(BUILD)/{project}.xclbin: $(BUILD)/$(KERNEL).xo connectivity.$(TARGET_BOARD).cfg
\tv++ -l $(VPP_FLAGS) --config connectivity.$(TARGET_BOARD).cfg -o $@ $<

# The AFI is usable only once AWS reports it `available` (tens of minutes): the awsxclbin is served
# only then, and a `failed` AFI stops the build.
afi: $(BUILD)/{project}.awsxclbin
$(BUILD)/{project}.awsxclbin: $(BUILD)/{project}.xclbin
\tcd $(BUILD) && $(AWS_FPGA_REPO_DIR)/Vitis/tools/create_vitis_afi.sh -xclbin={project}.xclbin -o={project} \\
\t\t-s3_bucket=$(S3_BUCKET) -s3_dcp_key=$(S3_DCP_KEY) -s3_logs_key=$(S3_LOGS_KEY)
\tafi=$$(grep -o 'afi-[0-9a-f]*' $(BUILD)/*_afi_id.txt | head -n 1); \\
\twhile state=$$(aws ec2 describe-fpga-images --fpga-image-ids $$afi --query 'FpgaImages[0].State.Code' \\
\t\t--output text) && [ "$$state" != available ]; do \\
\t\t[ "$$state" != failed ] || {{ echo "AFI $$afi failed: see $(S3_LOGS_KEY) in $(S3_BUCKET)"; exit 1; }}; \\
\t\techo "AFI $$afi is $$state; waiting"; sleep $(AFI_POLL_S); \\
\tdone; [ "$$state" = available ]

../{project}.xclbin: $(BUILD)/{project}.xclbin
\tcp $< $@

../{project}.awsxclbin: $(BUILD)/{project}.awsxclbin
\tcp $< $@

clean:
\trm -rf build_*
"""
