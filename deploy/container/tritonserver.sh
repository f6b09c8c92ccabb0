#!/bin/sh
# `tritonserver FLAGS...` inside the image is faast serve, which takes tritonserver's whole command
# line (faast/tritonserver_flags.py): cmsTriton and any launcher that execs tritonserver run faast.
exec faast serve "$@"
