"""podman as it runs on this project's machines (Debian 12 VMs, root, cgroup v1, no CAP_SYS_RESOURCE).

What podman's defaults hit here, and the options that avoid it:
- Raising a limit needs CAP_SYS_RESOURCE, which the VM withholds (CapEff 0x1fffeffffff: bit 24 is
  clear). podman asks the runtime to set RLIMIT_NOFILE to 1048576 and the build RLIMIT_NPROC to 32768,
  and crun and runc fail with "setrlimit `RLIMIT_NOFILE`: Operation not permitted"; even the host's
  own values (NOFILE 20000, NPROC 96363) are refused, explicit lower ones (4096) are not.
- crun refuses the hybrid cgroup v1/v2 layout with the host network ("cgroups in hybrid mode not
  supported, drop all controllers from cgroupv2"): runc runs.
- Storage: vfs in its own root, so an overlay store made elsewhere on the machine does not clash, and
  images (the mmdebstrap base) stay cached between runs.
The host network spares a CNI setup; servers in containers bind ports the tests pick.
"""

PODMAN = [
    "podman",
    "--root",
    "/var/tmp/faast-podman/storage",
    "--runroot",
    "/run/faast-podman",
    "--storage-driver",
    "vfs",
    "--runtime",
    "runc",
]
RUN_OPTIONS = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096", "--network", "host"]
