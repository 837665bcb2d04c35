#!/bin/bash
# The measurements that need one GPU, in the order issue 18 asks for them, each a
# piece of at most LIMIT_S seconds (default 540) that keeps what it finished. Usage,
# from the repository root on a GPU machine:
#
#   OUT=results_dir bash benchmarks/gpu_checks.sh [JOB ...]      (default: profile step)
#
# profile     the kernels one Cleanup 7x7 IQ-Flow episode step launches on this GPU, from
#             its compiled HLO, today's replay sampler beside the reference (one-by-one)
#             one; and a jax.profiler trace of one 64-seed chunk ($OUT/trace)
# step        the step at 64, 256, 1,024 and 4,096 seeds, today's code beside the
#             reference sampler in one run, float32 matmuls (ROWS overrides the rows)
# c7_ALG[_RECIPE]
#             Cleanup 7x7, SEEDS seeds x EPISODES episodes (64 x 20,000), e.g. c7_iqflow,
#             c7_id, c7_ac, c7_shared, c7_iqflow_authors: checkpointed into
#             $CKPT/<job>; run the same job again (same OUT or not) and it resumes there
# fig8        Fig. 8's four cost settings as one sweep program, checkpointed likewise
# er105       ER(10, 5) IQ-Flow, SEEDS x EPISODES (about 8 minutes on an H200): saved only
#             when stopped, since 64 seeds' state with the whole run's replay is 16.6 GB
#             and three kept checkpoints would fill most of the disk
# erNM_RECIPE IQ-Flow on ER(5, 2) (er52_) or ER(10, 5) (er105_) under RECIPE (authors or
#             id_authors), SEEDS x EPISODES (20,000: issue 15's table), saved like er105
# fig10[_RECIPE]
#             Fig. 10: fresh agents under the frozen incentive network of the c7_iqflow
#             (c7_iqflow_RECIPE) job's checkpoint, beside both shared-reward baselines,
#             SEEDS x 1,000 episodes (EPISODES overrides); run that job first
# learners_ENV
#             issue 19's table at full scale, ENV one of ipd, er, cleanup: every mechanism
#             x learner, SEEDS seeds x the paper's length (EPISODES, default IPD 3,000,
#             ER(5, 2) 25,000, Cleanup 20,000), checkpointed and resumed like c7_ALG;
#             LEARNERS_FLAGS adds flags, e.g. "--mechanism iqflow id --learner ppo"
#
# The learning jobs use float32 matmuls (PRECISION=default gives the GPU's TF32), so
# their numbers are the CPU's, seed for seed, up to the devices' rounding.
#
# Each job is stopped by SIGINT at its limit (LIMIT_S, and never past DEADLINE_S seconds
# after this script started, if set); the runner then checkpoints, writes its JSON to
# $OUT and exits. JAX's memory pool is raised to 95% of the GPU.
#
# Dry run on a CPU at tiny sizes (what CI's machine can do in a few minutes):
#   OUT=/tmp/dry SEEDS=2 EPISODES=4 ROWS="2 2:reference" KROWS="2 2:reference" \
#     SMALL=1 bash benchmarks/gpu_checks.sh profile step c7_iqflow c7_iqflow fig8 er105
#   (issue 15's: c7_iqflow_authors fig10_authors er52_id_authors er105_authors likewise)
#   (learners_ENV likewise, e.g. with LEARNERS_FLAGS="--mechanism none id --learner ppo")
set -u
OUT=${OUT:?set OUT to the folder for the JSON and logs}
KROWS=${KROWS:-64 64:reference}
SEEDS=${SEEDS:-64}
CKPT=${CKPT:-runs/ckpt/gpu}
T0=$(date +%s)
mkdir -p "$OUT" "$CKPT"
limit() {  # seconds the next job may run
  local left=${LIMIT_S:-540}
  if [ -n "${DEADLINE_S:-}" ]; then
    local until_deadline=$(( DEADLINE_S - ($(date +%s) - T0) ))
    [ "$until_deadline" -lt "$left" ] && left=$until_deadline
  fi
  echo $(( left > 1 ? left : 1 ))
}
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false XLA_PYTHON_CLIENT_MEM_FRACTION=0.95
common=(--wandb-mode disabled --no-progress --seeds "$SEEDS"
        --matmul-precision "${PRECISION:-float32}")
# SMALL=1: chunks and evaluations small enough for a dry run's few episodes.
[ -n "${SMALL:-}" ] && common+=(--chunk-episodes 2 --eval-period 2)
resumable() {  # JOB EVERY LENGTH ARGS...: a learning benchmark of EPISODES (default
  local job=$1 every=$2 length=${EPISODES:-$3}; shift 3  # LENGTH) episodes checkpointed
  # every EVERY chunks, resumed if its checkpoint exists
  local dir="$CKPT/$job"
  local again=()  # resume only from a written checkpoint (a step folder, ALG/STEP or
  # ENV/ALG/STEP), not from the empty folders a piece stopped while compiling leaves
  # behind, nor a save cut short
  [ -n "$(find "$dir" -mindepth 2 -maxdepth 3 -type d -name '[0-9]*' ! -name '*tmp*' \
          2>/dev/null)" ] && again=(--resume)
  timeout -s INT -k 60 "$(limit)" python -m "$@" "${common[@]}" --episodes "$length" \
    --checkpoint-dir "$dir" \
    --checkpoint-every "$every" ${again[@]+"${again[@]}"} --plots "$OUT/plots/$job" \
    --out "$OUT/$job.json"
}
jax_info() {
  python -c "import jax, jaxlib; print('jax', jax.__version__, 'jaxlib', jaxlib.__version__, \
jax.devices())" | tee -a "$OUT/gpu_checks.log"
}
jax_info
[ $# -eq 0 ] && set -- profile step
for job in "$@"; do
  start=$(date +%s)
  case $job in
    profile)  # two commands within one limit
      budget=$(limit)
      # shellcheck disable=SC2086  # KROWS is a list of rows
      timeout -s INT -k 30 "$budget" python -m benchmarks.kernel_count --env cleanup_7x7 \
        --seeds $KROWS --unroll 20 --out "$OUT/kernels_cleanup_7x7.json" &&
      left=$(( budget - ($(date +%s) - start) )) &&
      timeout -s INT -k 30 "$(( left > 1 ? left : 1 ))" python -m benchmarks.step_profile \
        --env cleanup_7x7 \
        --seeds "${KROWS%% *}" --unroll 20 --chunk-episodes 5 --timed-chunks 2 \
        --matmul-precision float32 --trace-dir "$OUT/trace" \
        --out "$OUT/step_profile_trace.json" ;;
    step)
      # shellcheck disable=SC2086  # ROWS is a list of rows
      timeout -s INT -k 30 "$(limit)" python -m benchmarks.step_profile --env cleanup_7x7 \
        --seeds ${ROWS:-64 64:reference 256 256:reference 1024:remat 1024:remat:reference \
                       4096:remat:group=512 4096:remat:group=512:reference} \
        --unroll 20 --chunk-episodes 5 --timed-chunks 3 --compile-threads 4 \
        --matmul-size 8192 --matmul-precision float32 --out "$OUT/step_profile_cleanup_7x7.json" ;;
    c7_*)  # c7_ALG or c7_ALG_RECIPE, RECIPE one of paper, authors, id_authors
      alg=${job#c7_}
      recipe=paper
      for known in id_authors authors paper; do
        case $alg in *_"$known") recipe=$known; alg=${alg%_"$known"}; break ;; esac
      done
      resumable "$job" 10 20000 benchmarks.cleanup --map 7x7 --alg "$alg" --recipe "$recipe" ;;
    fig8)
      resumable "$job" 10 20000 benchmarks.cleanup --map 7x7 --alg iqflow \
        --sweep c1=0,0.25 c2=0,1.4924e-4 ;;
    er105)
      resumable "$job" 1000000 20000 benchmarks.escape_room --n 10 --m 5 --alg iqflow ;;
    er52_authors|er52_id_authors|er105_authors|er105_id_authors)
      room=${job%%_*}; recipe=${job#*_}
      n=$([ "$room" = er52 ] && echo 5 || echo 10); m=$([ "$room" = er52 ] && echo 2 || echo 5)
      resumable "$job" 1000000 20000 benchmarks.escape_room --n "$n" --m "$m" --alg iqflow \
        --recipe "$recipe" ;;
    fig10|fig10_authors)
      recipe=paper source=c7_iqflow
      [ "$job" = fig10_authors ] && recipe=authors source=c7_iqflow_authors
      if [ ! -d "$CKPT/$source/iqflow" ]; then
        echo "$job: no checkpoint at $CKPT/$source/iqflow; run the $source job first" \
          | tee -a "$OUT/gpu_checks.log"
        continue
      fi
      resumable "$job" 10 1000 benchmarks.cleanup --map 7x7 --alg pretrained \
        --recipe "$recipe" --mechanism-from "$CKPT/$source/iqflow" ;;
    learners_ipd|learners_er|learners_cleanup)
      env=${job#learners_}
      length=$(case $env in ipd) echo 3000 ;; er) echo 25000 ;; *) echo 20000 ;; esac)
      # shellcheck disable=SC2086  # LEARNERS_FLAGS is a list of flags
      resumable "$job" 10 "$length" benchmarks.learners --env "$env" ${LEARNERS_FLAGS:-} ;;
    *) echo "unknown job $job (profile, step, c7_ALG[_RECIPE], fig8, er105, erNM_RECIPE," \
            "fig10[_RECIPE], learners_ENV)"
       exit 2 ;;
  esac
  echo "$job rc=$? in $(( $(date +%s) - start )) s" | tee -a "$OUT/gpu_checks.log"
done
