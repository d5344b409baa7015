#!/usr/bin/env bash
# Rerun the reference study on one GPU machine, detached from the shell that starts it, and pack
# its store to bring it back. One `labfolio run` takes every spec (one pool of GPU slots, each
# spec after its previous), started in a new session so that it outlives the shell (an ssh
# logout, a time-limited remote command); `pack` copies its store consistently while runs may
# still be writing.
#
#   examples/results/rerun.sh start [SPEC...]   one detached runner for the specs (default: $STUDY)
#   examples/results/rerun.sh status            the store's runs, GPU load, the runner's last lines
#   examples/results/rerun.sh wait SECONDS [DEST]  wait until the runner has ended or SECONDS passed;
#                                               with DEST, then pack into DEST whether it ended or not:
#                                               end every remote call so, and a machine lost between
#                                               calls (this study lost one twice) loses only the
#                                               minutes since the last call
#   examples/results/rerun.sh stop              Ctrl-C the runner (unfinished runs are marked killed,
#                                               what they logged is kept) and wait for it to end
#   examples/results/rerun.sh pack DEST         DEST/store.tar.xz: no checkpoints, compacted; with
#                                               SPLIT_MB=N, parts of N MiB (cat DEST/store.tar.xz.part_* > store.tar.xz);
#                                               and DEST/rerun.tar.xz: the runner's output and GPU samples
#
# Environment: STORE (study_store), GPUS (0), RUNS_PER_GPU (16), SEEDS (0,1), LABFOLIO_DATA_DIR
# (.devdata: the folder holding cifar10-jpeg-q75.tar.xz, or the official CIFAR-10 tarball, and
# tinyshakespeare.txt), LABFOLIO (the labfolio command, e.g.
# "python3 -m labfolio" where its console script is not installed), SPLIT_MB (0: one file), RUN_ARGS (more
# `labfolio run` options, e.g. "--smoke" with GPUS=none to try the whole cycle on a CPU in a minute),
# MPS (auto: start CUDA's multi-process service first when nvidia-cuda-mps-control is there and the
# runs use GPUs, so that the kernels of runs sharing a GPU run at the same time instead of taking
# turns: 8 ViT runs made 405 steps/s in all under MPS against 291 without, cifar10_sharing_probe;
# 1: start it or say why not; 0: never; stop ends it).
set -euo pipefail

STORE=${STORE:-study_store}
GPUS=${GPUS:-0}
RUNS_PER_GPU=${RUNS_PER_GPU:-16}  # all 16 runs at once: 8 of CIFAR-10, 8 of the GPT
SEEDS=${SEEDS:-0,1}
SPLIT_MB=${SPLIT_MB:-0}
read -r -a RUN_ARGS <<< "${RUN_ARGS:-}"
read -r -a LABFOLIO <<< "${LABFOLIO:-labfolio}"  # a command of several words is fine
export LABFOLIO_DATA_DIR=${LABFOLIO_DATA_DIR:-.devdata}
# the long CIFAR-10 runs first, so that the short GPT runs fill the slots they leave
STUDY=${STUDY:-"examples/results/specs/cifar10_003_100_epochs.yaml examples/results/specs/cifar10_004_100_epochs.yaml examples/results/specs/gpt_shakespeare_mhc.yaml"}
STATE="$STORE/rerun"  # the pid file, the runner's own output and the GPU samples (pack adds them beside the store)

runner_pids() {
    local pidfile
    for pidfile in "$STATE"/*.pid; do
        [ -e "$pidfile" ] || continue
        local pid
        pid=$(cat "$pidfile")
        if kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
    done
}

start() {
    mkdir -p "$STATE"
    if [ -n "$(runner_pids)" ]; then
        echo "rerun: a runner is still running (pid $(runner_pids | tr '\n' ' ')): stop it first" >&2
        exit 1
    fi
    local specs=("$@")
    [ ${#specs[@]} -gt 0 ] || read -r -a specs <<< "$STUDY"
    for spec in "${specs[@]}"; do
        [ -f "$spec" ] || { echo "rerun: no spec at $spec" >&2; exit 2; }
    done
    "${LABFOLIO[@]}" run "${specs[@]}" --dry-run --gpus "$GPUS" --seeds "$SEEDS" --store "$STORE" \
        ${RUN_ARGS[@]+"${RUN_ARGS[@]}"} > /dev/null \
        || { echo "rerun: the specs do not validate; see: ${LABFOLIO[*]} run ${specs[*]} --dry-run" >&2; exit 2; }
    local mps=${MPS:-auto}
    if [ "$mps" = auto ]; then
        mps=0
        if [ "$GPUS" != none ] && command -v nvidia-cuda-mps-control > /dev/null; then mps=1; fi
    fi
    if [ "$mps" = 1 ]; then
        if command -v nvidia-cuda-mps-control > /dev/null; then
            nvidia-cuda-mps-control -d && touch "$STATE/mps" && echo "rerun: CUDA MPS started"
        else
            echo "rerun: MPS=1 but nvidia-cuda-mps-control is not installed: the runs take turns on the GPU" >&2
        fi
    fi
    # one runner, one pool: RUNS_PER_GPU runs of all the specs at once, each spec after its previous
    PYTHONUNBUFFERED=1 setsid nohup "${LABFOLIO[@]}" run "${specs[@]}" --gpus "$GPUS" --runs-per-gpu "$RUNS_PER_GPU" \
        --seeds "$SEEDS" --store "$STORE" ${RUN_ARGS[@]+"${RUN_ARGS[@]}"} >> "$STATE/runner.log" 2>&1 < /dev/null &
    echo $! > "$STATE/runner.pid"
    echo "rerun: ${specs[*]} started (pid $!, log $STATE/runner.log)"
    if command -v nvidia-smi > /dev/null; then
        setsid nohup nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used --format=csv,noheader \
            -l 5 >> "$STATE/gpu.csv" 2> /dev/null < /dev/null &
        echo $! > "$STATE/gpu_sampler"
    fi
}

status() {
    "${LABFOLIO[@]}" runs --store "$STORE" --limit 40 || true
    if [ -s "$STATE/gpu.csv" ]; then
        awk -F', ' '{ sub(/ %/, "", $3); busy += $3; n++ } END { if (n) printf "GPU busy %.0f%% on average over %d samples\n", busy / n, n }' "$STATE/gpu.csv"
    fi
    local log
    for log in "$STATE"/*.log; do
        [ -e "$log" ] || continue
        echo "== $log"
        tail -n 4 "$log"
    done
    echo "runner still running: $([ -n "$(runner_pids)" ] && echo yes || echo no)"
}

wait_for() {
    local limit=${1:?wait needs SECONDS}
    local dest=${2:-}
    local deadline=$((SECONDS + limit))
    while [ -n "$(runner_pids)" ] && [ $SECONDS -lt $deadline ]; do sleep 5; done
    echo "rerun: runner $([ -n "$(runner_pids)" ] && echo "still running" || echo "ended")"
    if [ -n "$dest" ]; then pack "$dest"; fi
}

stop() {
    local pids
    pids=$(runner_pids)
    if [ -n "$pids" ]; then
        # the runner's own Ctrl-C path: runs are marked killed, their logs and points kept
        kill -INT $pids 2>/dev/null || true
        local deadline=$((SECONDS + 120))
        while [ -n "$(runner_pids)" ] && [ $SECONDS -lt $deadline ]; do sleep 2; done
        pids=$(runner_pids)
        if [ -n "$pids" ]; then
            echo "rerun: the runner is still up after 120 s, sending SIGTERM: $pids" >&2
            kill -TERM $pids 2>/dev/null || true
        fi
    fi
    if [ -f "$STATE/mps" ]; then
        echo quit | nvidia-cuda-mps-control || true
        rm -f "$STATE/mps"
    fi
    if [ -f "$STATE/gpu_sampler" ]; then
        kill "$(cat "$STATE/gpu_sampler")" 2>/dev/null || true
        rm -f "$STATE/gpu_sampler"
    fi
    echo "rerun: stopped"
}

pack() {
    local dest=${1:?pack needs DEST}
    mkdir -p "$dest"
    rm -f "$dest/store.tar.xz" "$dest"/store.tar.xz.part_* "$dest/rerun.tar.xz"
    if [ -d "$STATE" ]; then tar -C "$STORE" -cJf "$dest/rerun.tar.xz" --exclude='*.pid' --exclude=gpu_sampler rerun; fi
    "${LABFOLIO[@]}" snapshot "$dest/store.tar.xz" --store "$STORE" --no-checkpoints --compact
    if [ "$SPLIT_MB" -gt 0 ]; then
        split -b "${SPLIT_MB}M" -d "$dest/store.tar.xz" "$dest/store.tar.xz.part_"
        rm "$dest/store.tar.xz"
        ls -l "$dest"/store.tar.xz.part_*
    else
        ls -l "$dest/store.tar.xz"
    fi
}

command=${1:-}
shift || true
case "$command" in
    start) start "$@" ;;
    status) status ;;
    wait) wait_for "$@" ;;
    stop) stop ;;
    pack) pack "$@" ;;
    *) sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
