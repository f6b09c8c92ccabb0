"""XRT device: Alveo cards (U250, AWS F1) through XRT's own Python binding, `pyxrt`.

pyxrt ships with XRT (not on PyPI). One compute unit per kernel instance per card; each buffer is
an XRT buffer object in the CU's memory bank. Untested on hardware here: the tests drive this code
against a recording stand-in of pyxrt (tests/support/recording_pyxrt.py).
"""

from .device import ComputeUnit, Device, DeviceBuffer, DeviceError, board, import_vendor

KERNEL_TIMEOUT_MS = 10_000


def _pyxrt():
    return import_vendor("pyxrt", "device 'xrt' needs XRT's Python binding pyxrt (source /opt/xilinx/xrt/setup.sh)")


class XrtComputeUnit(ComputeUnit):
    def __init__(self, pyxrt, device, kernel, name):
        self.pyxrt = pyxrt
        self.device = device
        self.kernel = kernel
        self.name = name

    def allocate(self, nbytes):
        bo = self.pyxrt.bo(self.device, nbytes, self.pyxrt.bo.normal, self.kernel.group_id(0))
        return DeviceBuffer(bo.map(), bo)

    def execute(self, inputs, outputs, rows, in_bytes, out_bytes):
        sync = self.pyxrt.xclBOSyncDirection
        inputs.handle.sync(sync.XCL_BO_SYNC_BO_TO_DEVICE, in_bytes, 0)
        run = self.kernel(inputs.handle, outputs.handle, rows)
        state = run.wait(KERNEL_TIMEOUT_MS)
        if state != self.pyxrt.ert_cmd_state.ERT_CMD_STATE_COMPLETED:
            raise DeviceError(f"kernel {self.name} did not complete within {KERNEL_TIMEOUT_MS} ms (state {state})")
        outputs.handle.sync(sync.XCL_BO_SYNC_BO_FROM_DEVICE, out_bytes, 0)


class XrtDevice(Device):
    kind = "xrt"

    def __init__(self, kernel):
        pyxrt = _pyxrt()
        xclbin = kernel.xclbin()
        image = pyxrt.xclbin(str(xclbin))
        platform = image.get_xsa_name()
        count = len(pyxrt.enumerate_devices())
        if count == 0:
            raise DeviceError("device 'xrt' found no Alveo card")
        cu_names = [
            cu.get_name().split(":")[-1]
            for k in image.get_kernels()
            if k.get_name() == kernel.top
            for cu in k.get_cus()
        ]
        if not cu_names:
            raise DeviceError(f"{xclbin.name} holds no compute unit of kernel {kernel.top}")
        compute_units = []
        for index in range(count):
            device = pyxrt.device(index)
            card = device.get_info(pyxrt.xrt_info_device.name)
            if board(platform) != board(card):
                raise DeviceError(f"{xclbin.name} is built for platform {platform}, but card {index} is {card}")
            uuid = device.load_xclbin(image)
            for name in cu_names:
                instance = pyxrt.kernel(device, uuid, f"{kernel.top}:{{{name}}}", pyxrt.kernel.cu_access_mode.shared)
                compute_units.append(XrtComputeUnit(pyxrt, device, instance, f"card{index}/{name}"))
        super().__init__(kernel, compute_units)

    @staticmethod
    def available():
        try:
            pyxrt = _pyxrt()
        except DeviceError as error:
            return False, str(error)
        count = len(pyxrt.enumerate_devices())
        return count > 0, f"XRT lists {count} card(s)"


DRIVER = XrtDevice
