"""Device runtimes that execute a built kernel: C simulation now, FPGA drivers later."""
