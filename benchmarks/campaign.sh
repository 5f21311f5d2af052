#!/usr/bin/env bash
# The measurements behind docs/performance.md, one after the other on this machine.
# Every command and its verbose output go to benchmarks/results/runs.log; each suite
# writes its JSON next to it. Usage: bash benchmarks/campaign.sh [name ...]
# (names: bw1 bw2 bw4 bw8 big sweep cold 2d small reshard async multilevel iomodes
#  iomodes-smooth scale-model scale-sweep soak plot; default: all)
set -uo pipefail
cd "$(dirname "$0")/.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader
PY=${PY:-.venv/bin/python}
OUT=benchmarks/results
LOG=$OUT/runs.log
mkdir -p "$OUT"

run() {  # run NRANKS SUITE ARGS...
    local n=$1; shift
    local cmd=(mpirun --oversubscribe -n "$n" "$PY" -m mpi4py -m benchmarks "$@" -v)
    {
        echo "### $(date +%H:%M:%S) head $(git rev-parse --short HEAD) dirty=$(git status --porcelain hpckpt | wc -l) load: $(cut -d' ' -f1-3 /proc/loadavg) :: ${cmd[*]}"
        "${cmd[@]}" 2>&1
        echo "### done $(date +%H:%M:%S)"
    } | tee -a "$LOG"
}

log() {  # log CMD...: a command that launches its own jobs
    {
        echo "### $(date +%H:%M:%S) head $(git rev-parse --short HEAD) dirty=$(git status --porcelain hpckpt | wc -l) load: $(cut -d' ' -f1-3 /proc/loadavg) :: $*"
        "$@" 2>&1
        echo "### done $(date +%H:%M:%S)"
    } | tee -a "$LOG"
}

want() { [ $# -eq 0 ] || [[ " $* " == *" $STEP "* ]]; }
ALL="$*"
for STEP in bw1 bw2 bw4 bw8 big sweep cold 2d small reshard async multilevel iomodes iomodes-smooth \
    scale-model scale-sweep soak plot; do
    want $ALL || continue
    case $STEP in
        bw1|bw2|bw4|bw8)
            n=${STEP#bw}
            run "$n" bandwidth --sizes 1G --reps 7 --json-out "$OUT/bandwidth-1G-$n.json" ;;
        big)
            run 4 bandwidth --sizes 512M,2G,4G --reps 5 \
                --competitors hpckpt,hpckpt-nocrc,mpiio,posix,torch-dcp \
                --json-out "$OUT/bandwidth-big-4.json" ;;
        sweep)
            run 4 bandwidth --sizes 1M,16M,64M,256M --reps 5 --json-out "$OUT/bandwidth-sweep-4.json" ;;
        cold)
            run 4 bandwidth --sizes 1G --reps 5 --cold --json-out "$OUT/bandwidth-1G-4-cold.json" ;;
        2d)
            run 4 bandwidth --sizes 1G --reps 5 --mesh 2d --json-out "$OUT/bandwidth-1G-4-2d.json" ;;
        small)
            run 4 small --counts 100,2000,20000 --reps 3 --json-out "$OUT/small-4.json" ;;
        reshard)
            run 4 reshard --sizes 256M --reps 5 --json-out "$OUT/reshard-256M-4.json" ;;
        async)
            run 4 async --sizes 1G --reps 7 --json-out "$OUT/async-1G-4.json" ;;
        multilevel)  # 4 ranks as 2 emulated nodes; local tier in /dev/shm, parallel FS: --dir
            run 4 multilevel --sizes 1G --reps 5 --dir "${HPCKPT_BENCH_DIR:-/var/tmp}" \
                --json-out "$OUT/multilevel-1G-4.json" ;;
        iomodes)  # hpckpt's io modes against IOR (POSIX, MPIIO, HDF5); launches its own jobs
            log "$PY" -m benchmarks iomodes --ranks 1,2,4 --size 512M --reps 5 --dir "${HPCKPT_BENCH_DIR:-/var/tmp}" \
                --json-out "$OUT/iomodes-512M.json" --plot "$OUT/iomodes.png" ;;
        iomodes-smooth)  # compression on the heat solver's smooth field
            log "$PY" -m benchmarks iomodes --ranks 4 --size 512M --reps 5 --data smooth \
                --competitors hpckpt,hpckpt-hdf5,hpckpt-gzip,hpckpt-shuffle-gzip,hpckpt-shuffle-gzip4 \
                --dir "${HPCKPT_BENCH_DIR:-/var/tmp}" --json-out "$OUT/iomodes-smooth-512M-4.json" ;;
        scale-model)  # index size, parse time, per-rank memory up to 100,000 simulated ranks
            log "$PY" -m benchmarks scale-model --json-out "$OUT/scale-model.json" ;;
        scale-sweep)  # coordination on 2..64 real (oversubscribed) ranks
            log "$PY" -m benchmarks scale-sweep --ranks 2,4,8,16,32,64 --json-out "$OUT/scale-sweep.json" ;;
        soak)  # 60 random SIGKILLs of a training job on 2-4 ranks (issue 11)
            log env PYTHONPATH=. "$PY" benchmarks/soak.py --kills 60 --seed 1 ;;
        plot)
            "$PY" -m benchmarks plot "$OUT"/bandwidth-1G-{1,2,4,8}.json "$OUT/bandwidth-sweep-4.json" \
                "$OUT/bandwidth-big-4.json" --size 1G --ranks 4 -o "$OUT/bandwidth.png" | tee -a "$LOG" ;;
    esac
done
