"""The benchmark: crossover logic on known rows, a tiny end-to-end run writing md/csv/png, and the
package's layering (a JAX-free common module at the bottom, no cycles, no private imports)."""
import argparse
import ast
import os
import pathlib
import subprocess
import sys

import pytest

from attn_zoo import attention
from attn_zoo.bench import attention_alone, common, train_step
from attn_zoo.bench import run as bench


def _row(variant, n, t):
    return {"variant": variant, "length": n, "fwdbwd_s": t}


def test_crossover_is_first_length_from_which_variant_stays_faster():
    rows = [_row("xla", 1024, 1.0), _row("xla", 2048, 4.0), _row("xla", 4096, 16.0),
            _row("blockwise", 1024, 2.0), _row("blockwise", 2048, 3.0), _row("blockwise", 4096, 8.0),
            _row("fast", 1024, 3.0), _row("fast", 2048, 3.0), _row("fast", 4096, 3.0),
            _row("always", 1024, 0.5), _row("always", 2048, 1.0), _row("always", 4096, 2.0),
            _row("never", 1024, 9.0), _row("never", 2048, 9.0), _row("never", 4096, 99.0)]
    got = attention_alone.crossovers(rows)
    assert got["fast"] == "2048"  # best exact baseline at 2048 is blockwise (3.0): ties count
    assert got["always"] == "≤ 1024"
    assert got["never"] == "> 4096"


def test_tiny_run_writes_table_csv_and_plot(tmp_path):
    args = argparse.Namespace(variants="local", lengths="64", batch=1, heads=2, head_dim=8,
                              dtype="float32", causal=True, repeats=1, baselines="xla",
                              timeout=300, out=str(tmp_path), name="bench", mode="attention",
                              allocator="auto")
    rows = bench.main(args)
    assert {r["variant"] for r in rows} == {"xla", "local"}
    assert {r["malloc"] for r in rows} == {common.malloc_preload("auto")[0]}  # the preload took effect
    assert all("error" not in r for r in rows), rows
    text = (tmp_path / "bench.md").read_text()
    assert "| local |" in text and "Crossover" in text
    assert (tmp_path / "bench.csv").read_text().count("\n") == 3
    assert (tmp_path / "bench.png").stat().st_size > 1000


def test_workers_run_under_the_chosen_malloc(monkeypatch):
    assert common.malloc_preload("system") == ("system", None)
    name, lib = common.malloc_preload("auto")
    assert (name == "system") == (lib is None) and name in ("system", *common.ALLOCATORS)
    envs = []

    def fake_run(cmd, env, **kw):
        envs.append(env)
        return subprocess.CompletedProcess(cmd, 0, stdout='{"variant": "gemm"}\n', stderr="")

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    monkeypatch.setenv("LD_PRELOAD", "libother.so")
    bench.run_one({"variant": "gemm"}, 9, preload="libtcmalloc_minimal.so.4")
    bench.run_one({"variant": "gemm"}, 9)
    assert envs[0]["LD_PRELOAD"] == "libtcmalloc_minimal.so.4 libother.so"  # the user's stays
    assert envs[1]["LD_PRELOAD"] == "libother.so"


def test_failed_worker_is_reported_and_the_run_goes_on():
    row = bench.run_one({"variant": "no_such_variant", "length": 8, "batch": 1, "heads": 1,
                         "head_dim": 4, "dtype": "float32", "causal": False, "repeats": 1}, 300)
    assert row["error"].startswith("failed"), row
    assert "no_such_variant" in row["error"], row  # the exception line, not JAX's traceback notice


def test_a_length_limited_variant_past_its_limit_reports_the_limit():
    row = bench.run_one({"variant": "linformer", "length": 64, "batch": 1, "heads": 1, "head_dim": 4,
                         "dtype": "float32", "causal": False, "repeats": 1,
                         "options": {"max_length": 32, "proj_dim": 8}}, 300)
    assert row["error"].startswith("failed: ValueError") and "max_length=32" in row["error"], row


def test_lengths_past_a_timeout_or_oom_are_not_run(tmp_path, monkeypatch):
    calls = []

    def fake_run_one(cfg, timeout, preload=None):
        calls.append((cfg["variant"], cfg.get("length")))
        if cfg["variant"] == "gemm":
            return {"variant": "gemm", "gemm_gflops": 100.0}
        error = "out of memory" if cfg["variant"] == "local" else "failed: something else"
        return {**cfg, "error": error}

    monkeypatch.setattr(bench, "run_one", fake_run_one)
    args = argparse.Namespace(variants="local", lengths="128,64,256", batch=1, heads=1, head_dim=4,
                              dtype="float32", causal=False, repeats=1, baselines="xla",
                              timeout=9, out=str(tmp_path), name="b", mode="attention", allocator="system")
    rows = bench.main(args)
    assert ("local", 64) in calls and ("local", 128) not in calls  # lengths run shortest first
    assert [c for c in calls if c[0] == "xla"] == [("xla", 64), ("xla", 128), ("xla", 256)]
    local = {r["length"]: r["error"] for r in rows if r["variant"] == "local"}
    assert local == {64: "out of memory", 128: "not run: out of memory at N=64",
                     256: "not run: out of memory at N=64"}


def test_train_step_mode_times_a_model_step_per_variant(tmp_path):
    args = argparse.Namespace(variants="local,dense", lengths="64", batch=2, repeats=1, rounds=1,
                              config="configs/text.py:smoke", timeout=300, out=str(tmp_path),
                              name="eff", mode="train-step", allocator="auto")
    rows = bench.main(args)
    # the reference and the no-attention ceiling first, even when not asked for
    assert [r["variant"] for r in rows] == ["dense", "none", "local"]
    assert all("error" not in r and r["step_s"] > 0 and r["num_params"] > 0 for r in rows), rows
    text = (tmp_path / "eff.md").read_text()
    assert "| local | 64 |" in text and "speedup vs dense" in text
    assert "fraction of GEMM" in text and "Model: `configs/text.py:smoke` (1 layer," in text, text
    assert all(r["gemm_gflops"] > 0 and r["xla_gflop"] > 0 and 0 < r["fraction"] for r in rows), rows
    assert (tmp_path / "eff.csv").read_text().count("\n") == 4
    assert len((tmp_path / "eff.jsonl").read_text().splitlines()) == 3
    assert "none" not in attention.names()  # registered in the worker process only


def test_attention_flops_count_each_visible_pair_of_each_head():
    big = 2**30
    assert train_step.band_pairs(4, 4, -big, big) == 16  # full: L·S
    assert train_step.band_pairs(4, 4, 0, big) == 10  # causal: L(L+1)/2
    assert train_step.band_pairs(5, 5, -1, 1) == 13  # |i - j| <= 1: 5 + 4 + 4
    assert train_step.band_pairs(3, 6, -2, 0) == 9  # i <= j <= i + 2, all within S
    fwd = train_step.attention_flops(2, 3, 10, D=4, Dv=4)
    assert fwd == 2 * 3 * 10 * 4 * 4  # Q·Kᵀ and P·V: 2·D + 2·Dv per pair
    assert train_step.attention_flops(2, 3, 10, D=4, Dv=4, backward=True) == 2.5 * fwd
    assert train_step.attention_flops(1, 1, 1, D=4, Dv=8, backward=True) == 2 * (3 * 4 + 2 * 8)


def _kernel_or_skip():
    from attn_zoo.kernels import flash_cpu

    if not flash_cpu.status()[0]:
        pytest.skip("the fused CPU kernel is unavailable here")
    return flash_cpu


def test_step_flops_count_the_kernel_analytically_in_either_layout():
    """XLA's cost analysis counts a custom call as -1 FLOPs: step_flops adds that back and counts
    the fused kernel from its operands' shapes and band; both kernel layouts agree in value too."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    flash_cpu = _kernel_or_skip()
    B, L, H, D = 2, 24, 2, 8
    r = np.random.RandomState(0)
    q, k, v, ct = (jnp.asarray(r.randn(B, L, H, D), jnp.float32) for _ in range(4))
    km = jnp.asarray(r.rand(B, L) > 0.2)
    w = jnp.asarray(r.randn(32, 32), jnp.float32)
    grads = {}
    for tokens_first in (False, True):
        def loss(q, k, v, w, tokens_first=tokens_first):
            out, _ = flash_cpu.attention(q, k, v, km, dlo=-3, dhi=5, scale=D ** -0.5, blocks=(8, 8),
                                         tokens_first=tokens_first)
            return jnp.sum(out * ct) + jnp.sum(w @ w)

        step = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))
        got = train_step.step_flops(step.lower(q, k, v, w).compile())
        pairs = train_step.band_pairs(L, L, -3, 5)
        assert got["kernel_calls"] == 2 and got["custom_calls"] == 2, got
        assert got["kernel_gflop"] * 1e9 == 3.5 * 4 * B * H * pairs * D  # forward + 2.5× backward
        assert 4 * 32**3 <= got["xla_gflop"] * 1e9 < 4 * 32**3 + 4096, got  # dW's two products
        assert got["loops"] == 0
        grads[tokens_first] = step(q, k, v, w)
        # forward only: the XLA count of a kernel call's graph equals that of the same graph with
        # an input of the output's shape in the kernel's place (the -1 added back, nothing else)
        fused = lambda q, k, v, w, tokens_first=tokens_first: jnp.sum(flash_cpu.attention(  # noqa: E731
            q, k, v, km, dlo=-3, dhi=5, scale=D ** -0.5, tokens_first=tokens_first)[0]) + jnp.sum(w @ w)
        plain = lambda q, k, v, w: jnp.sum(q) + jnp.sum(w @ w)  # noqa: E731
        counts = [train_step.step_flops(jax.jit(f).lower(q, k, v, w).compile()) for f in (fused, plain)]
        assert counts[0]["xla_gflop"] == counts[1]["xla_gflop"] and counts[0]["kernel_calls"] == 1
    for a, b in zip(grads[False], grads[True]):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_heavy_loops_are_the_ones_whose_body_multiplies():
    import jax
    import jax.numpy as jnp

    w = jnp.ones((16, 16))
    scan = jax.jit(lambda w: jax.lax.scan(lambda c, _: (c @ w, None), w, None, length=4)[0])
    assert train_step.heavy_loops(scan.lower(w).compile().as_text()) == 1
    adds = jax.jit(lambda w: jax.lax.fori_loop(0, 4, lambda i, c: c + 1.0, w))
    assert train_step.heavy_loops(adds.lower(w).compile().as_text()) == 0


def test_flops_table_sets_each_step_against_the_gemm_rate_of_its_run():
    row = lambda v, s, kernel, gemm, r: {"variant": v, "length": 256, "step_s": s, "compile_s": 1.0,  # noqa: E731
                                         "peak_mb": 10.0, "xla_gflop": 2.0, "kernel_gflop": kernel,
                                         "kernel_calls": 4 if kernel else 0, "loops": 0, "gemm_gflops": gemm,
                                         "gemm_gflops_range": [gemm - 10, gemm + 10], "shape_gemm_gflops": 80.0,
                                         "fraction": (2.0 + kernel) / s / gemm, "round": r}
    rounds = [[row("dense", 0.1, 0.0, 100.0, 0), row("blockwise", 0.05, 3.0, 100.0, 0)],
              [row("dense", 0.2, 0.0, 50.0, 1), row("blockwise", 0.1, 3.0, 50.0, 1)],
              [row("dense", 0.4, 0.0, 10.0, 2), row("blockwise", 0.05, 3.0, 100.0, 2)]]
    merged = train_step.merge_rounds(rounds)
    assert merged[0]["gemm_gflops"] == 50.0 and merged[0]["gemm_gflops_range"] == [0.0, 110.0]
    assert merged[0]["fraction"] == 0.2  # the median of each round's own 0.2, 0.2, 0.5
    assert merged[1]["fraction"] == 1.0 and merged[1]["fraction_rounds"] == [1.0, 1.0, 1.0]
    text = "\n".join(train_step.flops_table(merged))
    header = next(line for line in text.splitlines() if line.startswith("| variant"))
    for column in ("step ms", "GFLOP XLA", "GFLOP kernel", "GFLOP total", "GFLOP/s", "GEMM GFLOP/s",
                   "fraction of GEMM"):
        assert column in header, column
    assert "| dense | 256 | 200 | 2.00 | — | 2.00 | 10.0 | 50 (0–110) | 80 | 0.20 |" in text
    assert "| blockwise | 256 | 50 | 2.00 | 3.00 | 5.00 | 100.0 | 100 (40–110) | 80 | 1.00 |" in text


def test_rounds_merge_to_the_median_step_and_keep_errors():
    row = lambda v, s, mb: {"variant": v, "length": 64, "step_s": s, "compile_s": 1.0, "peak_mb": mb}  # noqa: E731
    rounds = [[row("dense", 2.0, 10), row("local", 1.0, 5), {"variant": "x", "length": 64, "error": "oom"}],
              [row("dense", 4.0, 12), row("local", 3.0, 4), row("x", 1.0, 1)],
              [row("dense", 3.0, 11), row("local", 0.5, 6), row("x", 1.0, 1)]]
    merged = train_step.merge_rounds(rounds)
    assert [(r["variant"], r.get("step_s"), r.get("peak_mb")) for r in merged] == [
        ("dense", 3.0, 12), ("local", 1.0, 6), ("x", None, None)]
    assert merged[0]["step_s_rounds"] == [2.0, 4.0, 3.0] and merged[2]["error"] == "oom"


def test_lra_comparison_puts_the_papers_ratio_beside_ours():
    rows = [{"variant": "dense", "length": 4096, "step_s": 2.0},
            {"variant": "performer", "length": 4096, "step_s": 0.25},
            {"variant": "local", "length": 4096, "error": "out of memory"}]
    text = "\n".join(train_step.lra_comparison(rows))
    assert "| performer | 8.0× / 5.7× |" in text  # LRA: 8.0 / 1.4 steps/s
    assert "| dense | 1.0× / 1.0× |" in text


def test_summary_survives_a_peak_too_small_to_measure():
    rows = [{"variant": "xla", "length": 64, "fwd_s": 2e-3, "fwdbwd_s": 4e-3, "fwdbwd_peak_mb": 3.0},
            {"variant": "local", "length": 64, "fwd_s": 1e-3, "fwdbwd_s": 2e-3, "fwdbwd_peak_mb": 0.0}]
    assert "| local | 2.00× | 2.00× | 0 |" in attention_alone.summary_at_longest(rows)


def test_peak_memory_counts_pages_a_caching_malloc_kept(tmp_path):
    """Under tcmalloc/jemalloc freed pages stay resident: without releasing them first, a call that
    reuses them would show no peak at all."""
    name, lib = common.malloc_preload("auto")
    if lib is None:
        import pytest
        pytest.skip("no tcmalloc or jemalloc installed")
    code = ("import numpy as np; from attn_zoo.bench.common import peak_rss_delta_mb\n"
            "np.ones(2**26).sum()\n"  # 512 MB allocated and freed: the allocator keeps it
            "print(peak_rss_delta_mb(lambda: np.ones(2**26).sum()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "LD_PRELOAD": lib})
    assert float(out.stdout.split()[-1]) > 400, (name, out.stdout)


def test_the_common_layer_imports_no_jax():
    """The driver uses attn_zoo.bench.common before it spawns any worker: it must not start JAX."""
    code = "import sys, attn_zoo.bench.common; assert 'jax' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    tree = ast.parse(pathlib.Path(common.__file__).read_text())  # not even inside a function
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not {m for m in imported if m.split(".")[0] in ("jax", "jaxlib", "attn_zoo")}, imported


def _bench_imports():
    """{module: {(sibling module, name or None)}}: what each attn_zoo.bench module imports from its
    siblings, lazy imports inside functions included."""
    package = pathlib.Path(common.__file__).parent
    modules = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    out = {}
    for m in modules:
        got = set()
        for node in ast.walk(ast.parse((package / f"{m}.py").read_text())):
            if isinstance(node, ast.Import):
                got |= {(a.name.split(".")[2], None) for a in node.names
                        if a.name.startswith("attn_zoo.bench.") and a.name.count(".") >= 2}
            elif isinstance(node, ast.ImportFrom) and node.level:  # relative: from .x import y
                got |= ({(node.module.split(".")[0], a.name) for a in node.names} if node.module
                        else {(a.name, None) for a in node.names})
            elif isinstance(node, ast.ImportFrom) and node.module == "attn_zoo.bench":
                got |= {(a.name, None) for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("attn_zoo.bench."):
                got |= {(node.module.split(".")[2], a.name) for a in node.names}
        out[m] = got
    return out


def test_bench_modules_are_layered_without_cycles_or_private_imports():
    imports = _bench_imports()
    assert {"common", "attention_alone", "train_step", "run", "worker"} <= set(imports)
    private = {(m, s, n) for m, got in imports.items() for s, n in got if n and n.startswith("_")}
    assert not private, private
    assert not imports["common"], imports["common"]
    assert {s for s, _ in imports["attention_alone"] | imports["train_step"]} <= {"common"}
    assert "worker" not in {s for s, _ in imports["run"]} and "run" not in {s for s, _ in imports["worker"]}
    graph = {m: {s for s, _ in got} for m, got in imports.items()}

    def reaches(start, target, seen=()):
        return any(s == target or (s not in seen and reaches(s, target, (*seen, s))) for s in graph.get(start, ()))

    assert not [m for m in graph if reaches(m, m)], graph


def test_train_step_builds_a_token_head_batch():
    """A token-head task (copy, recall) scores every position: its step gets labels [B, N]."""
    call, info = train_step.compiled_step({"config": "configs/copy.py:smoke", "variant": "local",
                                           "length": 32, "batch": 2})
    call()
    assert info["num_params"] > 0
