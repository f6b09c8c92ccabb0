#!/usr/bin/env bash
# Hardware acceptance kit: what a user with an Alveo U250 or an AWS F1 instance runs, and sends back.
#
#   bench/hardware.sh --board u250|aws-f1 [--out DIR] [--xclbin DIR] [--skip-resnet50]
#   bench/hardware.sh --board u250 --dry-run          # CI: the whole kit on stand-in cards
#
# 1. validates the card (xbutil validate, xbutil examine); on F1 first starts XRT's mpd service;
# 2. builds FACILE (and ResNet-50) with `faast build --target BOARD` and its Vitis project (`make`:
#    hours, needs Vitis and the platform; F1 also S3_BUCKET, S3_DCP_KEY, S3_LOGS_KEY and aws-fpga),
#    or takes prebuilt images from --xclbin DIR (DIR/facile.xclbin or .awsxclbin, DIR/resnet50.*);
# 3. `faast devices`: the card must be the device the model lands on;
# 4. serves the repository, checks the card's answers against the emulator bit for bit on edge rows;
#    then, on a copy of FACILE with every execution shadow-validated and failover to the engine, the
#    card's sensors on /metrics, the engine's re-check of the card, and (dry run: a stand-in card
#    pulled out and put back) answers on the engine while the card is gone;
# 5. measures throughput and latency with `faast bench` (batch 16000 for FACILE, as FaaST's Table I);
# 6. writes DIR/hardware.md beside Table I (U250 86M, F1 36M inf/s). Send back the whole DIR.
#
# --dry-run puts the stand-ins of pyxrt and of XRT's library, under the real pynq
# (tests/support/standin_site), in place of XRT and a card whose kernel is the C simulation: it proves the kit runs end to end, nothing about
# hardware, and every file it writes says so. ResNet-50 is left out of the dry run (its build alone
# takes longer than the CI budget).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bin=${FAAST_BIN:-$root/.venv/bin}
board=u250 out=hardware_out dry=0 prebuilt="" resnet50=1
while [ $# -gt 0 ]; do
    case $1 in
        --board) board=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --xclbin) prebuilt=$(cd "$2" && pwd); shift 2 ;;
        --skip-resnet50) resnet50=0; shift ;;
        --dry-run) dry=1; resnet50=0; shift ;;
        *) echo "usage: $0 --board u250|aws-f1 [--out DIR] [--xclbin DIR] [--skip-resnet50] [--dry-run]" >&2; exit 2 ;;
    esac
done
case $board in
    u250) shell=xilinx_u250_gen3x16_xdma_shell_4_1 image=xclbin ;;
    aws-f1) shell=xilinx_aws-vu9p-f1_shell-v04261818_201920_3 image=awsxclbin ;;
    *) echo "unknown board $board: u250 or aws-f1" >&2; exit 2 ;;
esac
mkdir -p "$out"
out=$(cd "$out" && pwd)
repo=$out/repository
step() { echo "== $*" | tee -a "$out/steps.log"; }
fail() { echo "FAILED: $*" | tee -a "$out/steps.log" >&2; exit 1; }

if [ $dry = 1 ]; then
    echo "DRY RUN on stand-in cards ($shell): not a hardware result" > "$out/DRY_RUN"
    "$bin/python" -P -c "import json, sys; sys.path.insert(0, '$root/tests'); from support import xrt_sensors; \
print(json.dumps([{'name': sys.argv[1], **getattr(xrt_sensors, sys.argv[2])}]))" "$shell" \
        "$([ "$board" = aws-f1 ] && echo F1 || echo U250)" > "$out/standin_cards.json"
    export FAAST_STANDIN_CARDS=$out/standin_cards.json
    export PYTHONPATH=$root/tests/support/standin_site${PYTHONPATH:+:$PYTHONPATH}
fi

step "1. the card"
if [ $dry = 1 ]; then
    echo "dry run: no card, so no xbutil validate" > "$out/validate.txt"
else
    if [ "$board" = aws-f1 ]; then
        # On F1, XRT reaches the card through its Message Proxy Daemon: aws-fpga's vitis_setup.sh
        # says to start it with `systemctl is-active --quiet mpd || sudo systemctl start mpd`.
        systemctl is-active --quiet mpd || sudo systemctl start mpd \
            || fail "cannot start XRT's mpd service (sudo systemctl start mpd): F1's card needs it"
        systemctl is-active --quiet mpd || fail "XRT's mpd service is not active: see systemctl status mpd"
        echo "mpd is active" | tee -a "$out/steps.log"
    fi
    xbutil examine > "$out/examine.txt" 2>&1 || fail "xbutil examine: see $out/examine.txt (is XRT sourced?)"
    xbutil validate > "$out/validate.txt" 2>&1 || fail "xbutil validate: see $out/validate.txt"
fi

models=(facile)
[ $resnet50 = 1 ] && models+=(resnet50)
for model in "${models[@]}"; do
    step "2. build $model for $board"
    variant=()
    [ "$model" = resnet50 ] && variant=(--variant full)
    "$bin/faast" build "kernels/$model" --out "$repo" --target "$board" "${variant[@]}" > "$out/build_$model.log" 2>&1 \
        || fail "faast build $model: see $out/build_$model.log"
    version=$repo/$model/1
    if [ $dry = 1 ]; then
        "$bin/python" -P -c "import sys; from pathlib import Path; sys.path.insert(0, '$root/tests'); \
from support.cards import fake_xclbin; fake_xclbin(Path(sys.argv[1]), platform=sys.argv[2], name=sys.argv[3])" "$version" \
            "$(sed -n "s/^PLATFORM_$board := //p" "$version/vitis/Makefile")" "$model.$image"
    elif [ -n "$prebuilt" ]; then
        cp "$prebuilt/$model.$image" "$version/" || fail "no $prebuilt/$model.$image"
    else
        make -C "$version/vitis" TARGET_BOARD="$board" > "$out/vitis_$model.log" 2>&1 \
            || fail "Vitis build of $model: see $out/vitis_$model.log"
    fi
done

step "2b. facile_guarded: FACILE with shadow validation of every execution and failover to the engine"
rm -rf "$repo/facile_guarded"
cp -r "$repo/facile" "$repo/facile_guarded"
sed -i 's/^name: "facile"$/name: "facile_guarded"/' "$repo/facile_guarded/config.pbtxt"
cat >> "$repo/facile_guarded/config.pbtxt" <<'GUARDS'
parameters { key: "shadow_validation" value { string_value: "1" } }
parameters { key: "failover" value { string_value: "engine" } }
GUARDS

step "3. faast devices"
"$bin/faast" devices "$repo" > "$out/devices.txt" 2>&1 || fail "faast devices: see $out/devices.txt"
cat "$out/devices.txt"
for model in "${models[@]}"; do
    grep -Eq "^  $model/1 -> (xrt|pynq):" "$out/devices.txt" || fail "no card would serve $model: see $out/devices.txt"
done

step "4. serve and check the card's answers bit for bit"
read -r grpc http metrics < <("$bin/python" -c "
import socket
sockets = [socket.socket() for _ in range(3)]
for s in sockets:
    s.bind(('127.0.0.1', 0))
print(*[s.getsockname()[1] for s in sockets])")
"$bin/faast" serve --model-repository "$repo" --grpc-port "$grpc" --http-port "$http" --metrics-port "$metrics" \
    > "$out/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
"$bin/python" -c "
import sys, time, urllib.request
deadline = time.time() + 600
while time.time() < deadline:
    try:
        urllib.request.urlopen('http://127.0.0.1:$http/v2/health/ready', timeout=2)
        sys.exit(0)
    except OSError:
        time.sleep(1)
sys.exit(1)" || fail "faast serve did not become ready: see $out/serve.log"
grep -E "device auto for '(facile|resnet50)'" "$out/serve.log" | tee -a "$out/steps.log" || true
for model in "${models[@]}"; do
    "$bin/python" bench/hardware_check.py exact --url "127.0.0.1:$grpc" --model "$model" \
        --version-dir "$repo/$model/1" --rows "$([ "$model" = resnet50 ] && echo 64 || echo 4096)" \
        --out "$out/exact_$model.json" || fail "$model: the card's answers differ from the emulator ($out/exact_$model.json)"
done

step "4b. card telemetry, shadow validation and failover (facile_guarded)"
"$bin/python" bench/hardware_check.py exact --url "127.0.0.1:$grpc" --model facile_guarded \
    --version-dir "$repo/facile_guarded/1" --rows 4096 --out "$out/exact_facile_guarded.json" \
    || fail "facile_guarded: the card's answers differ from the emulator ($out/exact_facile_guarded.json)"
pulled=()
[ $dry = 1 ] && pulled=(--failover-cards "$out/standin_cards.json")
"$bin/python" bench/hardware_check.py guards --metrics-url "http://127.0.0.1:$metrics/metrics" \
    --url "127.0.0.1:$grpc" --model facile_guarded --version-dir "$repo/facile_guarded/1" "${pulled[@]}" \
    --out "$out/guards.json" || fail "card telemetry, shadow validation or failover: see $out/guards.json"

step "5. throughput and latency"
if [ $dry = 1 ]; then
    levels=(--batch 1000 --concurrency 1,2 --duration 1 --processes 1)
else
    levels=(--batch 16000 --concurrency 1,2,4,8,16,32 --duration 10)
fi
"$bin/faast" bench "127.0.0.1:$grpc" --model facile "${levels[@]}" --out "$out/bench_facile" > "$out/bench_facile.log" 2>&1 \
    || fail "faast bench facile: see $out/bench_facile.log"
benches=("$out/bench_facile/bench.json")
if [ $resnet50 = 1 ]; then
    "$bin/faast" bench "127.0.0.1:$grpc" --model resnet50 --batch 16 --concurrency 1,2,4,8 --duration 10 \
        --out "$out/bench_resnet50" > "$out/bench_resnet50.log" 2>&1 || fail "faast bench resnet50: see $out/bench_resnet50.log"
    benches+=("$out/bench_resnet50/bench.json")
fi

step "6. report"
dry_flag=()
[ $dry = 1 ] && dry_flag=(--dry-run)
"$bin/python" bench/hardware_check.py report --board "$board" --out "$out" "${dry_flag[@]}" "${benches[@]}"
step "done: send back $out (hardware.md, devices.txt, validate.txt, examine.txt, exact_*.json, guards.json, bench_*/, serve.log)"
