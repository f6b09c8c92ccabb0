#!/bin/sh
# The image's entry point: `faast serve` with the arguments given (tritonserver's flags), or, when
# the first argument is a command (tritonserver, faast, sh ...), that command: launchers that run the
# image with `tritonserver --model-repository=...` get faast unchanged.
case "$1" in
    -*|"") exec faast serve "$@" ;;
    *) exec "$@" ;;
esac
