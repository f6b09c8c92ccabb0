"""The Vitis project of a kernel: kernel top, connectivity per board and a Makefile (v++ -c, v++ -l,
and the AFI step for AWS F1), plus the buffer layout the host runtime packs to.

Written next to the hls4ml project by `faast build`; the C simulation compiles the same kernel top.
"""

from pathlib import Path
from string import Template

from faast.contract.kernel import KernelDescription
from faast.contract.layout import BufferLayout, TensorLanes

TEMPLATES = Path(__file__).parent / "templates"

# Board → Vitis platform, the SLR each DDR bank sits in, and the order compute units take the banks
# (round robin): each CU is placed in its bank's own SLR, so no AXI master crosses SLRs. U250: one
# bank per SLR. AWS F1 (aws-fpga's Vitis/docs/Alveo_to_AWS_F1_Migration.md): DDR[0] is the DDR in
# SLR1's shell region, DDR[2] also in SLR1, DDR[1] in SLR2, DDR[3] in SLR0 — the first CUs take banks
# in distinct SLRs, the shell's own bank last.
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
    if description.io_type == "io_stream" and (len(description.inputs) > 1 or len(description.outputs) > 1):
        raise ValueError(f"'{project}' is io_stream with several inputs or outputs: faast serves those io_parallel")
    make = _stream_processes if description.io_type == "io_stream" else _row_processes
    types, feeds, processes, to_network, from_network = make(description)
    streams = [
        ("word_t", "in_words", _words_spanned(buffers.input)),
        *to_network,
        *from_network,
        ("word_t", "out_words", _words_spanned(buffers.output)),
    ]
    to_names, from_names = [n for _, n, _ in to_network], [n for _, n, _ in from_network]
    fill = {
        "project": project,
        "n_in": buffers.input.elements_per_row,
        "n_out": buffers.output.elements_per_row,
        "in_lane_bits": buffers.input.lane_bits,
        "in_lanes": buffers.input.lanes_per_word,
        "out_lane_bits": buffers.output.lane_bits,
        "feeds": feeds,
        "types": types,
        "processes": processes,
        "streams": "\n".join(
            f'    hls::stream<{element}> {name}("{name}");\n#pragma HLS STREAM variable={name} depth={depth}'
            for element, name, depth in streams
        ),
        "calls": "\n".join(
            [
                f"    feed({', '.join(['in_words', *to_names])}, rows);",
                f"    network({', '.join([*to_names, *from_names])}, rows);",
                f"    drain({', '.join([*from_names, 'out_words'])}, rows);",
            ]
        ),
    }
    (vitis_dir / "kernel_top.cpp").write_text(Template((TEMPLATES / "kernel_top.cpp").read_text()).substitute(fill))
    for board, count in compute_units.items():
        (vitis_dir / f"connectivity.{board}.cfg").write_text(_connectivity(project, board, count))
    (vitis_dir / "Makefile").write_text(_makefile(project, clock_period_ns, default_board))
    (vitis_dir / "aws_f1.sh").write_text((TEMPLATES / "aws_f1.sh").read_text())
    (vitis_dir / "aws_f1.sh").chmod(0o755)


def _words_spanned(lanes: TensorLanes):
    """The most words one row's elements touch, wherever in a word the row starts (at least 2): the
    reader can run one row ahead of the feed, the drain one row ahead of the writer."""
    return max(2, -(-(lanes.elements_per_row + lanes.lanes_per_word - 1) // lanes.lanes_per_word))


def _row_processes(description: KernelDescription):
    """io_parallel: feed, network and drain each pipelined at one row per cycle, as FaaST does (the
    loops over a row's elements unroll under the pipeline); a row of each tensor is one stream element."""
    project, inputs, outputs = description.project, description.inputs, description.outputs
    names = [(f"x{i}", t) for i, t in enumerate(inputs)] + [(f"y{i}", t) for i, t in enumerate(outputs)]
    types = "\n".join(
        f"typedef {t.type_name} {n}_t;\nstruct {n}_row_t {{\n    {n}_t data[{t.size}];\n}};" for n, t in names
    )
    xs, ys = names[: len(inputs)], names[len(inputs) :]
    row_loop = "    for (int row = 0; row < rows; ++row) {\n#pragma HLS PIPELINE II=1\n"
    unpack = "\n".join(
        f"""        {n}_row_t {n};
        for (int i = 0; i < {t.size}; ++i) {{
            {n}.data[i].range({t.fixed.width} - 1, 0) = next_lane(in_words, word, lane).range({t.fixed.width} - 1, 0);
        }}
        {n}_rows.write({n});"""
        for n, t in xs
    )
    pack = "\n".join(
        f"""        {n}_row_t {n} = {n}_rows.read();
        for (int o = 0; o < {t.size}; ++o) {{
            put_lane(out_words, word, lane, ap_uint<{t.fixed.width}>({n}.data[o].range({t.fixed.width} - 1, 0)));
        }}"""
        for n, t in ys
    )
    to_network = [(f"{n}_row_t", f"{n}_rows", 2) for n, _ in xs]
    from_network = [(f"{n}_row_t", f"{n}_rows", 2) for n, _ in ys]
    x_streams = ", ".join(f"hls::stream<{n}_row_t> &{n}_rows" for n, _ in xs)
    y_streams = ", ".join(f"hls::stream<{n}_row_t> &{n}_rows" for n, _ in ys)
    run = "\n".join(
        [
            *(f"        {n}_row_t {n} = {n}_rows.read();" for n, _ in xs),
            *(f"        {n}_row_t {n};" for n, _ in ys),
            f"        {project}({', '.join(f'{n}.data' for n, _ in names)});",
            *(f"        {n}_rows.write({n});" for n, _ in ys),
        ]
    )
    processes = f"""static void feed(hls::stream<word_t> &in_words, {x_streams}, int rows) {{
    word_t word = 0;
    int lane = IN_LANES;
{row_loop}{unpack}
    }}
}}

static void network({x_streams}, {y_streams}, int rows) {{
{row_loop}{run}
    }}
}}

static void drain({y_streams}, hls::stream<word_t> &out_words, int rows) {{
    word_t word = 0;
    int lane = 0;
{row_loop}{pack}
    }}
    if (lane != 0) {{
        out_words.write(word);
    }}
}}"""
    return types, "rows of each input tensor", processes, to_network, from_network


def _stream_processes(description: KernelDescription):
    """io_stream: the network takes one stream element per pixel, holding its channels, and is called
    once per row (image); feed and drain move a pixel per cycle, each stream holding a whole image."""
    project, (x,), (y,) = description.project, description.inputs, description.outputs
    pixel_in, pixel_out = x.type_name, y.type_name
    in_width, out_width = x.fixed.width, y.fixed.width
    in_pixels, out_pixels = x.size // x.shape[-1], y.size // y.shape[-1]  # hls4ml: a pixel holds the last axis
    types = f"""// Pixels per image, each one stream element holding its channels.
static const int IN_PIXELS = {in_pixels};
static const int OUT_PIXELS = {out_pixels};
static_assert(IN_PIXELS * {pixel_in}::size == {x.size} && OUT_PIXELS * {pixel_out}::size == {y.size},
              "the network's stream elements are not the tensors' last axis");"""
    processes = f"""static void feed(hls::stream<word_t> &in_words, hls::stream<{pixel_in}> &in_pixels, int rows) {{
    word_t word = 0;
    int lane = IN_LANES;
    for (int row = 0; row < rows; ++row) {{
        for (int p = 0; p < IN_PIXELS; ++p) {{
#pragma HLS PIPELINE II=1
            {pixel_in} pixel;
            for (int c = 0; c < (int){pixel_in}::size; ++c) {{
                pixel[c].range({in_width} - 1, 0) = next_lane(in_words, word, lane).range({in_width} - 1, 0);
            }}
            in_pixels.write(pixel);
        }}
    }}
}}

static void network(hls::stream<{pixel_in}> &in_pixels, hls::stream<{pixel_out}> &out_pixels, int rows) {{
    for (int row = 0; row < rows; ++row) {{
        {project}(in_pixels, out_pixels);
    }}
}}

static void drain(hls::stream<{pixel_out}> &out_pixels, hls::stream<word_t> &out_words, int rows) {{
    word_t word = 0;
    int lane = 0;
    for (int row = 0; row < rows; ++row) {{
        for (int p = 0; p < OUT_PIXELS; ++p) {{
#pragma HLS PIPELINE II=1
            {pixel_out} pixel = out_pixels.read();
            for (int c = 0; c < (int){pixel_out}::size; ++c) {{
                put_lane(out_words, word, lane, ap_uint<{out_width}>(pixel[c].range({out_width} - 1, 0)));
            }}
        }}
    }}
    if (lane != 0) {{
        out_words.write(word);
    }}
}}"""
    to_network, from_network = (
        [(pixel_in, "in_pixels", max(2, in_pixels))],
        [(pixel_out, "out_pixels", max(2, out_pixels))],
    )
    return types, "pixels", processes, to_network, from_network


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
# Needs Vitis (v++) with the board's platform; AWS F1 also needs aws-fpga's vitis_setup.sh sourced,
# the AWS CLI and S3 (aws_f1.sh checks all of it before v++ starts).
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
ifeq ($(TARGET_BOARD),aws-f1)
# v++ finds a platform given by name only in PLATFORM_REPO_PATHS (and /opt/xilinx/platforms):
# vitis_setup.sh exports AWS_PLATFORM, the .xpfm's path, but not that, so the F1 platform folder is added.
F1_PLATFORMS := $(AWS_FPGA_REPO_DIR)/Vitis/aws_platform
export PLATFORM_REPO_PATHS := $(F1_PLATFORMS)$(if $(PLATFORM_REPO_PATHS),:$(PLATFORM_REPO_PATHS))
endif
SERVED_u250 := ../{project}.xclbin
SERVED_aws-f1 := ../{project}.awsxclbin

.PHONY: all xo xclbin afi clean environment
.DELETE_ON_ERROR:
all: $(SERVED_$(TARGET_BOARD))

# Checked before hours of v++, not after.
environment:
ifeq ($(TARGET_BOARD),aws-f1)
	./aws_f1.sh check $(PLATFORM)
endif

xo: $(BUILD)/$(KERNEL).xo
$(BUILD)/$(KERNEL).xo: kernel_top.cpp $(HLS4ML)/firmware/{project}.cpp | environment
	mkdir -p $(BUILD)
	v++ -c $(VPP_FLAGS) -k $(KERNEL) -o $@ kernel_top.cpp $(HLS4ML)/firmware/{project}.cpp

xclbin: $(BUILD)/{project}.xclbin
$(BUILD)/{project}.xclbin: $(BUILD)/$(KERNEL).xo connectivity.$(TARGET_BOARD).cfg | environment
	v++ -l $(VPP_FLAGS) --config connectivity.$(TARGET_BOARD).cfg -o $@ $<

# The AFI is usable only once AWS reports it `available` (tens of minutes): the awsxclbin is served
# only then; a failed or unavailable AFI, or none within AFI_TIMEOUT_S, stops the build.
afi: $(BUILD)/{project}.awsxclbin
$(BUILD)/{project}.awsxclbin: $(BUILD)/{project}.xclbin | environment
	./aws_f1.sh afi $(BUILD) {project}

../{project}.xclbin: $(BUILD)/{project}.xclbin
	cp $< $@

../{project}.awsxclbin: $(BUILD)/{project}.awsxclbin
	cp $< $@

clean:
	rm -rf build_*
"""
