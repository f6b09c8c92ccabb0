#!/usr/bin/env bash
# The AWS F1 steps of the Vitis build (written by `faast build`; the Makefile runs them):
#
#   aws_f1.sh check PLATFORM     before v++: the environment aws-fpga's vitis_setup.sh sets up, and S3
#   aws_f1.sh afi BUILD NAME     aws-fpga's create_vitis_afi.sh on BUILD/NAME.xclbin, then waits until
#                                AWS reports the AFI this run created `available` (AFI_POLL_S between
#                                checks, at most AFI_TIMEOUT_S)
#
# Facts from aws-fpga (Vitis/tools/create_vitis_afi.sh, vitis_setup.sh, hdk/docs/describe_fpga_images.md):
# create_vitis_afi.sh stops when to_aws/ exists, writes create-fpga-image's JSON answer to
# <timestamp>_afi_id.txt, and stamps tool_version=v$RELEASE_VER into the AFI's manifest; vitis_setup.sh
# sets RELEASE_VER from $XILINX_VITIS's folder name, accepts Vitis 2019.2 to 2021.2 and downloads the
# platform's XSA into Vitis/aws_platform; an AFI is pending, then available, failed or unavailable.
set -euo pipefail
fail() { echo "aws_f1.sh: $*" >&2; exit 1; }

check() {
    local platform=$1
    [ -n "${XILINX_VITIS:-}" ] || fail "XILINX_VITIS is not set: source Vitis's settings64.sh"
    [ -n "${RELEASE_VER:-}" ] || fail "RELEASE_VER is not set: source aws-fpga's vitis_setup.sh"
    local vitis=${XILINX_VITIS%/}
    vitis=${vitis##*/}
    [ "$RELEASE_VER" = "${vitis:0:6}" ] \
        || fail "RELEASE_VER=$RELEASE_VER but XILINX_VITIS is Vitis ${vitis:0:6}: source vitis_setup.sh again in this shell"
    case $RELEASE_VER in
        2019.2 | 2020.1 | 2020.2 | 2021.1 | 2021.2) ;;
        *) fail "Vitis $RELEASE_VER: aws-fpga's F1 flow takes 2019.2, 2020.1, 2020.2, 2021.1 or 2021.2" ;;
    esac
    local xsa=$AWS_FPGA_REPO_DIR/Vitis/aws_platform/$platform/hw/$platform.xsa
    [ -f "$xsa" ] || fail "no $xsa: source aws-fpga's vitis_setup.sh (it downloads the platform)"
    [ -x "$AWS_FPGA_REPO_DIR/Vitis/tools/create_vitis_afi.sh" ] || fail "no create_vitis_afi.sh in AWS_FPGA_REPO_DIR=$AWS_FPGA_REPO_DIR"
    command -v aws > /dev/null || fail "the AWS CLI (aws) is not on PATH"
    [ -n "${S3_BUCKET:-}" ] && [ -n "${S3_DCP_KEY:-}" ] \
        || fail "set S3_BUCKET and S3_DCP_KEY (and S3_LOGS_KEY for the AFI's logs): the AFI step needs them"
}

# The state code of an AFI and its message, from describe-fpga-images' JSON.
afi_state() {
    aws ec2 describe-fpga-images --fpga-image-ids "$1" --output json | python3 -c '
import json, sys
images = json.load(sys.stdin)["FpgaImages"]
state = images[0]["State"] if images else {"Code": "missing", "Message": "not listed in this region"}
print(state["Code"], state.get("Message", ""))'
}

afi() {
    local build=$1 name=$2
    local poll=${AFI_POLL_S:-60} timeout=${AFI_TIMEOUT_S:-14400}
    cd "$build"
    # A re-run (after a failed or abandoned AFI): the DCP staged for the last upload and the
    # awsxclbin of an AFI that never became available go; the old *_afi_id.txt stay as the record.
    rm -rf to_aws "$name.awsxclbin"
    touch .afi_started
    "$AWS_FPGA_REPO_DIR/Vitis/tools/create_vitis_afi.sh" -xclbin="$name.xclbin" -o="$name" \
        -s3_bucket="$S3_BUCKET" -s3_dcp_key="$S3_DCP_KEY" ${S3_LOGS_KEY:+-s3_logs_key="$S3_LOGS_KEY"}
    local written
    written=$(find . -maxdepth 1 -name '*_afi_id.txt' -newer .afi_started | sort | tail -n 1)
    [ -n "$written" ] || fail "create_vitis_afi.sh wrote no <timestamp>_afi_id.txt in $build"
    local afi
    afi=$(grep -o '"FpgaImageId": *"afi-[0-9a-f]*"' "$written" | grep -o 'afi-[0-9a-f]*') \
        || fail "no FpgaImageId in $build/$written"
    echo "AFI $afi ($build/$written)"
    local deadline=$((SECONDS + timeout)) state message
    while true; do
        read -r state message < <(afi_state "$afi") || fail "aws ec2 describe-fpga-images $afi failed"
        case $state in
            available) echo "AFI $afi is available"; return 0 ;;
            pending) ;;
            failed | unavailable | missing)
                fail "AFI $afi is $state${message:+ ($message)}: see ${S3_LOGS_KEY:-the logs} in $S3_BUCKET" ;;
            *) fail "AFI $afi is in a state aws-fpga does not document: $state" ;;
        esac
        [ $SECONDS -lt $deadline ] || fail "AFI $afi is still $state after ${timeout}s (AFI_TIMEOUT_S): check it with" \
            "aws ec2 describe-fpga-images --fpga-image-ids $afi, or make again for a new one"
        echo "AFI $afi is $state; waiting ${poll}s"
        sleep "$poll"
    done
}

case ${1:-} in
    check) check "$2" ;;
    afi) afi "$2" "$3" ;;
    *) fail "usage: aws_f1.sh check PLATFORM | aws_f1.sh afi BUILD NAME" ;;
esac
