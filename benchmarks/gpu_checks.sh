#!/bin/bash
# The measurements still open that need one GPU, each bounded in time, in the order
# of what the open issues lack. Usage, from the repository root on a GPU machine:
#
#   OUT=results_dir bash benchmarks/gpu_checks.sh [cleanup4096] [er105] [cleanup20k]
#
# cleanup4096  issue 5: the Cleanup 7x7 IQ-Flow step at 4096 seeds (remat, groups of 512)
#              beside 64, 256 and 1024 in the same run (ROWS overrides), in seed-episodes
#              per second (about 4 minutes)
# er105        issue 3: ER(10, 5) IQ-Flow at 64 seeds, all 20,000 episodes (about 8
#              minutes on an H200 alone); not checkpointed: 64 seeds' state with the whole
#              run's replay is 16.6 GB, three kept checkpoints most of the machine's disk
# cleanup20k   issue 4: Cleanup 7x7 IQ-Flow at 64 seeds, 20,000 episodes (about 12 minutes
#              of step on an H200 plus evaluation and compilation; checkpointed into
#              $CKPT, so on a machine that keeps its disk the same command continues it)
#
# Each job is stopped by SIGINT at its time limit (LIMIT_S, default 540 s, and never past
# DEADLINE_S seconds after this script started, if set), keeps what it finished and writes
# its JSON to $OUT. JAX's memory pool is raised to 95% of the GPU.
set -u
OUT=${OUT:?set OUT to the folder for the JSON and logs}
T0=$(date +%s)
mkdir -p "$OUT"
limit() {  # seconds the next job may run
  local left=${LIMIT_S:-540}
  if [ -n "${DEADLINE_S:-}" ]; then
    local until_deadline=$(( DEADLINE_S - ($(date +%s) - T0) ))
    [ "$until_deadline" -lt "$left" ] && left=$until_deadline
  fi
  echo $(( left > 1 ? left : 1 ))
}
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false XLA_PYTHON_CLIENT_MEM_FRACTION=0.95
common=(--wandb-mode disabled --no-progress)
for job in "${@:-cleanup4096}"; do
  start=$(date +%s)
  case $job in
    cleanup4096)
      # shellcheck disable=SC2086  # ROWS is a list of rows
      timeout -s INT -k 30 "$(limit)" python -m benchmarks.step_profile --env cleanup_7x7 \
        --seeds ${ROWS:-64 256 1024:remat 4096:remat:group=512} --unroll 20 \
        --chunk-episodes 5 --timed-chunks 3 --compile-threads 4 --matmul-size 8192 \
        --out "$OUT/step_profile_cleanup_7x7_4096.json" ;;
    er105)
      timeout -s INT -k 30 "$(limit)" python -m benchmarks.escape_room --n 10 --m 5 \
        --alg iqflow --seeds 64 "${common[@]}" --plots "$OUT/plots" \
        --out "$OUT/escape_room_10_5_iqflow_64.json" ;;
    cleanup20k)
      timeout -s INT -k 60 "$(limit)" python -m benchmarks.cleanup --alg iqflow --seeds 64 \
        --episodes 20000 --checkpoint-dir "${CKPT:-runs/ckpt/cleanup_iq64}" \
        $( [ -d "${CKPT:-runs/ckpt/cleanup_iq64}/iqflow" ] && echo --resume ) \
        "${common[@]}" --plots "$OUT/plots" --out "$OUT/cleanup_7x7_iqflow_64.json" ;;
    *) echo "unknown job $job (cleanup4096, er105, cleanup20k)"; exit 2 ;;
  esac
  echo "$job rc=$? in $(( $(date +%s) - start )) s" | tee -a "$OUT/gpu_checks.log"
done
