"""The Vitis project of a kernel: kernel top, connectivity per board and a Makefile (v++ -c, v++ -l,
and the AFI step for AWS F1), plus the buffer layout the host runtime packs to.

Written next to the hls4ml project by `faast build`; the C simulation compiles the same kernel top.
"""

from pathlib import Path
from string import Template

from faast.contract.kernel import KernelDescription
from faast.contract.layout import BufferLayout, Segment, TensorLanes

TEMPLATES = Path(__file__).parent / "templates"

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


def buffer_layout(description: KernelDescription, rows_per_execution: int) -> BufferLayout:
    """How the host packs one kernel execution's input rows and unpacks its outputs: per side, one
    lane width for the widest tensor, each tensor's elements at its offset in the row."""
    layout = BufferLayout(
        rows_per_execution,
        TensorLanes.of([(t.name, t.fixed, t.size) for t in description.inputs]),
        TensorLanes.of([(t.name, t.fixed, t.size) for t in description.outputs]),
    )
    for segment in layout.input.segments:
        segment.type.to_bits([0.0])  # fails early for an unsupported input type
    return layout


def write_project(vitis_dir, description: KernelDescription, compute_units, clock_period_ns, default_board):
    vitis_dir.mkdir(parents=True, exist_ok=True)
    project = description.project
    buffers = description.layout
    io_stream = description.io_type == "io_stream"
    inputs, outputs = buffers.input.segments, buffers.output.segments
    if io_stream and (len(inputs) > 1 or len(outputs) > 1):
        raise ValueError(f"'{project}' is io_stream with several inputs or outputs: faast serves those io_parallel")
    fill = {
        "project": project,
        "n_in": buffers.input.elements_per_row,
        "n_out": buffers.output.elements_per_row,
        "in_lane_bits": buffers.input.lane_bits,
        "in_lanes": buffers.input.lanes_per_word,
        "out_lane_bits": buffers.output.lane_bits,
        "io_stream": int(io_stream),
        "network": _network(project, description, io_stream),
        "unpack_inputs": "\n".join(
            [
                *(_unpack(f"x{i}", t) for i, t in enumerate(inputs)),
                *(_declare(f"y{i}", t) for i, t in enumerate(outputs)),
            ]
        ),
        "pack_outputs": "\n".join(_pack(f"y{i}", t) for i, t in enumerate(outputs)),
        "arguments": ", ".join([*(f"x{i}" for i in range(len(inputs))), *(f"y{i}" for i in range(len(outputs)))]),
    }
    (vitis_dir / "kernel_top.cpp").write_text(Template((TEMPLATES / "kernel_top.cpp").read_text()).substitute(fill))
    for board, count in compute_units.items():
        (vitis_dir / f"connectivity.{board}.cfg").write_text(_connectivity(project, board, count))
    (vitis_dir / "Makefile").write_text(_makefile(project, clock_period_ns, default_board))


def _network(project, description: KernelDescription, io_stream):
    """The element types of every tensor and run_network(x0.., y0..), calling the hls4ml top."""
    inputs, outputs = description.inputs, description.outputs
    names = [(f"x{i}", t) for i, t in enumerate(inputs)] + [(f"y{i}", t) for i, t in enumerate(outputs)]
    if not io_stream:
        typedefs = "".join(f"typedef {t.type_name} {n}_t;\n" for n, t in names)
        parameters = ", ".join(f"{n}_t {n}[{t.size}]" for n, t in names)
        return f"{typedefs}\nstatic void run_network({parameters}) {{ {project}({', '.join(n for n, _ in names)}); }}"
    (_, x), (_, y) = names
    pixel_in, pixel_out = x.type_name, y.type_name
    return f"""// io_stream network: one stream element per pixel, holding its channels.
typedef {pixel_in}::value_type x0_t;
typedef {pixel_out}::value_type y0_t;

static void run_network(x0_t x0[{x.size}], y0_t y0[{y.size}]) {{
    hls::stream<{pixel_in}> in_pixels("in_pixels");
    hls::stream<{pixel_out}> out_pixels("out_pixels");
    for (int p = 0; p < {x.size} / (int){pixel_in}::size; ++p) {{
        {pixel_in} pixel;
        for (int c = 0; c < (int){pixel_in}::size; ++c) {{
            pixel[c] = x0[p * {pixel_in}::size + c];
        }}
        in_pixels.write(pixel);
    }}
    {project}(in_pixels, out_pixels);
    for (int p = 0; p < {y.size} / (int){pixel_out}::size; ++p) {{
        {pixel_out} pixel = out_pixels.read();
        for (int c = 0; c < (int){pixel_out}::size; ++c) {{
            y0[p * {pixel_out}::size + c] = pixel[c];
        }}
    }}
}}"""


def _declare(name, segment: Segment):
    """One output tensor of the row, as the network writes it."""
    return f"""        {name}_t {name}[{segment.size}];
#pragma HLS ARRAY_PARTITION variable={name} complete"""


def _unpack(name, segment: Segment):
    """One input tensor's elements of the row, read lane by lane from the input words."""
    return f"""        {name}_t {name}[{segment.size}];
#pragma HLS ARRAY_PARTITION variable={name} complete
        for (int i = 0; i < {segment.size}; ++i) {{
            if (in_lane == IN_LANES) {{
                in_word = in_words.read();
                in_lane = 0;
            }}
            {name}[i].range({segment.type.width} - 1, 0) =
                in_word.range(in_lane * IN_LANE_BITS + {segment.type.width} - 1, in_lane * IN_LANE_BITS);
            ++in_lane;
        }}"""


def _pack(name, segment: Segment):
    """One output tensor's elements of the row, written lane by lane into the output words."""
    return f"""        for (int o = 0; o < {segment.size}; ++o) {{
            out_word.range(out_lane * OUT_LANE_BITS + {segment.type.width} - 1, out_lane * OUT_LANE_BITS) =
                {name}[o].range({segment.type.width} - 1, 0);
            if (++out_lane == OUT_LANES) {{
                out_words.write(out_word);
                out_word = 0;
                out_lane = 0;
            }}
        }}"""


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
        lines += [f"sp={top}_{i}.inputs:{bank}", f"sp={top}_{i}.outputs:{bank}", f"slr={top}_{i}:{slr}"]
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
