#!/bin/bash
# Short runs of every benchmark and algorithm (matrix games, ER, Cleanup 7x7 and 10x10,
# a sweep, seed groups, 4 forced devices, a stop and resume, Fig. 10), for a bit-for-bit
# check that a change of the host side changes no number: run it on a checkout of the
# old code and of the new, then `python benchmarks/parity_compare.py OLD NEW`.
# Usage: benchmarks/parity.sh REPO OUTDIR [CORE]   (REPO: a checkout, e.g. a git worktree)
set -u
REPO=$1; OUT=$(realpath -m $2); CORE=${3:-1}
mkdir -p $OUT; rm -rf $OUT/ckpt
cd $REPO
. "${VENV:-.venv}/bin/activate"
export TF_CPP_MIN_LOG_LEVEL=3 PYTHONPATH=$REPO
C="--wandb-mode disabled --no-progress"
t() { name=$1; shift; /usr/bin/time -f "$name %e s" taskset -c $CORE "$@" > $OUT/$name.log 2>&1 || echo "FAILED $name"; tail -n 1 $OUT/$name.log; }
t matrix python -m benchmarks.matrix_games --game all --alg both --seeds 3 --episodes 60 --eval-period 30 $C --plots $OUT/p_matrix --out $OUT/matrix.json
t matrix_authors python -m benchmarks.matrix_games --game ipd --alg both --recipe authors --seeds 2 --episodes 60 $C --plots $OUT/p_ma --out $OUT/matrix_authors.json
t er_sweep python -m benchmarks.escape_room --alg iqflow --seeds 2 --episodes 200 --chunk-episodes 100 --eval-period 100 --sweep c1=0,0.5 $C --plots $OUT/p_esw --out $OUT/er_sweep.json
t matrix_robust python -m benchmarks.matrix_games --game chicken --alg iqflow --seeds 2 --episodes 60 --variant robust $C --plots $OUT/p_mr --out $OUT/matrix_robust.json
XLA_FLAGS=--xla_force_host_platform_device_count=4 t matrix_4dev python -m benchmarks.matrix_games --game ipd --alg both --seeds 4 --episodes 60 $C --plots $OUT/p_m4 --out $OUT/matrix_4dev.json
t er python -m benchmarks.escape_room --n 5 --m 2 --alg all --recipe paper authors id_authors --seeds 2 --episodes 200 --chunk-episodes 100 --eval-period 100 $C --plots $OUT/p_er --out $OUT/er.json
t er105 python -m benchmarks.escape_room --n 10 --m 5 --alg id --recipe authors --seeds 2 --episodes 100 --chunk-episodes 50 --eval-period 50 $C --plots $OUT/p_er105 --out $OUT/er105.json
t cleanup python -m benchmarks.cleanup --alg all --seeds 2 --episodes 20 --chunk-episodes 10 --eval-period 10 --agent-reset-period 10 $C --checkpoint-dir $OUT/ckpt/c7 --plots $OUT/p_c --out $OUT/cleanup.json
t cleanup_authors python -m benchmarks.cleanup --alg iqflow --recipe authors --seeds 2 --episodes 20 --chunk-episodes 10 --eval-period 10 $C --plots $OUT/p_ca --out $OUT/cleanup_authors.json
t cleanup_fig10 python -m benchmarks.cleanup --alg pretrained --mechanism-from $OUT/ckpt/c7/iqflow --seeds 2 --episodes 20 --chunk-episodes 10 --eval-period 10 $C --plots $OUT/p_cf --out $OUT/cleanup_fig10.json
t cleanup10 python -m benchmarks.cleanup --map 10x10 --alg iqflow --seeds 2 --episodes 10 --chunk-episodes 10 --eval-period 10 $C --plots $OUT/p_c10 --out $OUT/cleanup10.json
t cleanup_group python -m benchmarks.cleanup --alg id --seeds 4 --seed-group 2 --episodes 10 --chunk-episodes 10 --eval-period 10 $C --plots $OUT/p_cg --out $OUT/cleanup_group.json
t er_stop python -m benchmarks.escape_room --alg iqflow --seeds 2 --episodes 200 --chunk-episodes 100 --eval-period 100 --checkpoint-dir $OUT/ckpt/er --stop-after 100 $C --plots $OUT/p_es --out $OUT/er_stop.json
t er_resume python -m benchmarks.escape_room --alg iqflow --seeds 2 --episodes 200 --chunk-episodes 100 --eval-period 100 --checkpoint-dir $OUT/ckpt/er --resume $C --plots $OUT/p_es --out $OUT/er_resume.json
echo done > $OUT/DONE
