"""Shared test setup: fp32 CPU, JAX's persistent compilation cache, small shapes."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests run tiny shapes, where LLVM's optimization passes cost more compile time than they save:
# without them a cold-cache run takes about half as long (subprocesses inherit the flag).
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402

# Outside the checkout, so fresh clones on the same machine reuse compiled executables.
_CACHE = os.environ.get("ATTN_ZOO_JAX_CACHE", os.path.expanduser("~/.cache/attn_zoo/jax"))
jax.config.update("jax_compilation_cache_dir", os.path.abspath(_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

# XLA:CPU maps a few memory regions per live compiled executable. Past vm.max_map_count (65,530 by
# default) LLVM cannot allocate code memory and the process dies: a single-process run of
# test_conformance.py added ~140 maps a test and died at its 351st, in the persistent cache's
# write (with xdist each worker compiles half). So every CHECK_EVERY tests, once the process holds
# over half the limit, JAX's caches are dropped (that frees them; the persistent cache makes
# recompiling cheap).
CHECK_EVERY = 20
_tests_done = 0


def _map_budget():
    try:
        with open("/proc/sys/vm/max_map_count") as f:
            return int(f.read()) // 2
    except (OSError, ValueError):  # not Linux: no such limit to watch
        return None


_MAP_BUDGET = _map_budget()


def pytest_runtest_teardown(item, nextitem):
    global _tests_done
    _tests_done += 1
    if _MAP_BUDGET is None or _tests_done % CHECK_EVERY:
        return
    with open("/proc/self/maps", "rb") as f:
        if f.read().count(b"\n") > _MAP_BUDGET:
            jax.clear_caches()


def pytest_sessionfinish(session, exitstatus):
    """`-k NAME` that selects nothing: say how a plugin's tests come to exist."""
    keyword = session.config.getoption("keyword", "")
    if exitstatus == 5 and keyword:
        from attn_zoo import attention
        session.config.pluginmanager.get_plugin("terminalreporter").write_line(
            f"no test matched -k {keyword!r}. A plugin's conformance tests exist only when it is loaded: "
            f"ATTN_ZOO_PLUGINS=path/to/my_attn.py python -m pytest tests/test_conformance.py -k NAME "
            f"(a module name on PYTHONPATH works too). Registered: {', '.join(attention.names())}")
