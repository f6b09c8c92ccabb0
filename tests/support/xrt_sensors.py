"""What XRT's `device.get_info` answers for a card's sensors, shaped exactly as XRT 2022.1 writes it
(src/runtime_src/core/common/sensor.cpp's legacy path, info_platform.cpp's add_clock_info, through
boost's write_json: every value a string, a sensor it cannot read written as 0 with is_present
"false"), for the recording pyxrt stand-in's cards. Values are an actively cooled U250's at idle;
an F1 card's management side is AWS's, so its sensor queries fail and XRT writes "N/A" and zeros."""


def _temperature(location_id, description, celsius, error=None):
    entry = {"error_msg": error} if error else {}
    present = "true" if celsius else "false"
    return entry | {
        "location_id": location_id,
        "description": description,
        "temp_C": str(celsius),
        "is_present": present,
    }


def _rail(rail_id, description, volts, amps):
    return {
        "id": rail_id,
        "description": description,
        "voltage": {"volts": f"{volts:.3f}", "is_present": "true" if volts else "false"},
        "current": {"amps": f"{amps:.3f}", "is_present": "true" if amps else "false"},
    }


def _thermals(readings, error=None):
    names = [
        ("pcb_top_front", "PCB Top Front"),
        ("pcb_top_rear", "PCB Top Rear"),
        ("pcb_bottom_front", "PCB Bottom Front"),
        ("cage_temp_0", "Cage0"),
        ("cage_temp_1", "Cage1"),
        ("cage_temp_2", "Cage2"),
        ("cage_temp_3", "Cage3"),
        ("fpga0", "FPGA"),
        ("int_vcc", "Int Vcc"),
        ("fpga_hbm", "FPGA HBM"),
    ]
    return {
        "thermals": [
            _temperature(location, description, readings.get(location, 0), None if location in readings else error)
            for location, description in names
        ]
    }


U250 = {
    "thermal": _thermals(
        {"pcb_top_front": 36, "pcb_top_rear": 33, "pcb_bottom_front": 35, "fpga0": 46, "int_vcc": 42},
        error="No such file or directory",  # a U250 has no HBM and reads no cage temperatures
    ),
    "electrical": {
        "power_rails": [
            _rail("12v_aux", "12 Volts Auxillary", 12.158, 1.034),
            _rail("12v_pex", "12 Volts PCI Express", 12.129, 1.212),
            _rail("3v3_pex", "3.3 Volts PCI Express", 3.302, 0.0),
            _rail("vccint", "Internal FPGA Vcc", 0.851, 9.375),
        ],
        "power_consumption_max_watts": "225",
        "power_consumption_watts": "27.417316",
        "power_consumption_warning": "false",
    },
    "mechanical": {
        "fans": [
            {
                "location_id": "fpga_fan_1",
                "description": "FPGA Fan 1",
                "critical_trigger_temp_C": "90",
                "speed_rpm": "3221",
                "is_present": "true",
            }
        ]
    },
    "platform": {
        "platforms": [
            {
                "static_region": {
                    "vbnv": "xilinx_u250_gen3x16_xdma_shell_4_1",
                    "logic_uuid": "E4DD3A0D2D0A2B6C20A1A45E6F6C0E3B",
                    "jtag_idcode": "0x4b57093",
                    "fpga_name": "xcu250-figd2104-2L-e",
                },
                "off_chip_board_info": {"ddr_size_bytes": "68719476736", "ddr_count": "4"},
                "status": {"mig_calibrated": "true", "p2p_status": "disabled"},
                "clocks": [
                    {"id": "DATA_CLK", "description": "Data", "freq_mhz": "300"},
                    {"id": "KERNEL_CLK", "description": "Kernel", "freq_mhz": "500"},
                ],
            }
        ]
    },
}

F1 = {
    "thermal": _thermals({}, error="Operation not permitted"),
    "electrical": {
        "power_rails": [_rail("12v_aux", "12 Volts Auxillary", 0, 0)],
        "power_consumption_max_watts": "N/A",
        "power_consumption_watts": "N/A",
        "power_consumption_warning": "N/A",
    },
    "mechanical": {
        "fans": [
            {
                "error_msg": "Operation not permitted",
                "location_id": "fpga_fan_1",
                "description": "FPGA Fan 1",
                "critical_trigger_temp_C": "0",
                "speed_rpm": "0",
                "is_present": "false",
            }
        ]
    },
    "platform": {"platforms": [{"static_region": {"vbnv": "xilinx_aws-vu9p-f1_shell-v04261818_201920_3"}}]},
}
