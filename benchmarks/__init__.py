"""Runnable experiments and throughput measurements (`python -m benchmarks.NAME`)."""

import sys

from jaxsim.distributed import join_from_argv

# A multi-host run joins its job here, before the benchmark modules import jumanji
# (which starts JAX's backend): `--coordinator/--num-processes/--process-id` or the
# JAX_* variables; without them, nothing happens.
join_from_argv(sys.argv)
