"""The shape of a generated Vitis kernel top's DATAFLOW region, as Vitis HLS requires it."""

import re


def _dataflow_region(top):
    """The statements of the kernel top's DATAFLOW region: streams, their depths, the calls."""
    body = top[top.index("#pragma HLS DATAFLOW") :]
    return [line.strip() for line in body[: body.index("\n}")].splitlines()[1:]]


def assert_canonical_dataflow(top):
    """Only stream declarations, each with its depth, and calls passing streams and `rows` as they are:
    what Vitis HLS takes as a DATAFLOW region (no arithmetic between the processes)."""
    region = _dataflow_region(top)
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
