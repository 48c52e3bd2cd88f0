"""The contract as executable checks, run on every registered variant by tests/ (see base.py).

    from attn_zoo import conformance
    conformance.run_all(attention.get("my_variant"))      # every applicable check, every option set
    conformance.CHECKS["matches_dense"](spec, options)    # one check

base.py: checks 1-8 and the machinery; contract.py: grouped K/V heads, segment_ids, sinks, ALiBi;
decode.py: token-by-token decoding against the parallel causal call.
"""
from attn_zoo.conformance import contract, decode
from attn_zoo.conformance.base import *  # noqa: F401,F403  (the checks and helpers, as before)
from attn_zoo.conformance.base import CHECKS, CONTRACT_CHECKS

CHECKS.update({"decode": decode.check_decode, **{name: contract.CHECKS[name] for name in CONTRACT_CHECKS}})
