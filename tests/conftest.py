import os

import pytest

# Tests never need the network, and must not pick up a user's W&B settings.
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_DISABLE_WEAVE", "true")
# The suite compiles far more than it runs (tiny configs): LLVM at -O0 compiles its
# programs about 40% faster (tests/test_engine.py + test_iqflow.py from a cold cache:
# 173 s -> 99 s on 2 cores). Tests compare numbers only between programs compiled
# alike (child processes inherit these flags). A level the user sets is kept.
# XLA's legacy CPU elemental emitters instead of its MLIR fusion emitters compile
# another ~25% faster (the tiny Cleanup and ER IQ-Flow runs of tests/golden.py: 13.8 ->
# 11.0 s and 7.5 -> 5.2 s; the whole suite 1,107 -> 837 s of CPU) and give the same
# numbers for a program (the paper-recipe fingerprints, recorded with the default
# emitters, still match bit for bit), but not the same across device layouts (4
# devices x 2 seeds against 1 x 8 differ by an ulp in a few parameters, where the
# users' compiler gives none): the tests of that run their programs in child processes
# without this flag (tests/test_sharding.py, run_children).
for flag in ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false"):
    if flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
# Many tests run the same tiny configs: a persistent compilation cache (in the
# checkout, ignored by git, shared by pytest-xdist's workers) compiles each program
# once per machine. IQFLOW_COMPILATION_CACHE=0 makes every test compile afresh.
os.environ.setdefault("IQFLOW_COMPILATION_CACHE", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".pytest_xla_cache"))

from jaxsim.runner import enable_compilation_cache  # noqa: E402

enable_compilation_cache()


def pytest_collection_modifyitems(config, items):
    """Heavy tests first, the heaviest (`heavy(minutes)`) first of all; otherwise in
    file order (a stable sort)."""
    def minutes(item) -> float:
        mark = item.get_closest_marker("heavy")
        return 0.0 if mark is None else float(mark.args[0]) if mark.args else 1.0

    items.sort(key=lambda item: -minutes(item))


@pytest.fixture
def signals_before_training(monkeypatch):
    """`send(signum, times)`: the runner's next run receives `times` signals just before
    its first chunk (where a signal sent during compilation is handled, since
    compilation cannot be cut short). Undone after the test."""
    import signal

    import jaxsim.runner

    real_tqdm = jaxsim.runner.tqdm

    def send(signum: int = signal.SIGINT, times: int = 1):
        def progress_bar_after_signals(*args, **kwargs):
            for _ in range(times):  # a second signal raises KeyboardInterrupt here
                os.kill(os.getpid(), signum)
            return real_tqdm(*args, **kwargs)

        monkeypatch.setattr(jaxsim.runner, "tqdm", progress_bar_after_signals)

    return send
