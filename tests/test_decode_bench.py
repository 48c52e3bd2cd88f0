"""`attn-zoo bench --mode decode` at tiny contexts: rows, cache sizes and the report files."""
import csv

from attn_zoo import cli


def test_decode_bench_writes_its_report(tmp_path, capsys):
    out = tmp_path / "b"
    assert cli.main(["bench", "--mode", "decode", "--variants", "local,linear,nystrom", "--lengths", "16,8",
                     "--heads", "2", "--head-dim", "4", "--repeats", "2", "--parallel-max", "8",
                     "--out", str(out), "--name", "dec"]) == 0
    printed = capsys.readouterr().out
    assert "nystrom: not decodable (no causal form), skipped" in printed
    text = (out / "dec.md").read_text()
    assert text.startswith("# decode benchmark") and "| local | window=256, block=128 | 8 |" in text
    rows = list(csv.DictReader(open(out / "dec.csv")))
    assert [(r["variant"], r["length"]) for r in rows] == [("local", "8"), ("local", "16"),
                                                           ("linear", "8"), ("linear", "16")]
    for r in rows:
        assert float(r["decode_step_s"]) > 0 and int(r["cache_floats"]) * 4 == int(r["state_size_bytes"])
        assert (r["parallel_per_token_s"] != "") == (r["length"] == "8")  # only up to --parallel-max
    local16 = next(r for r in rows if r["variant"] == "local" and r["length"] == "16")
    assert int(local16["cache_floats"]) == 2 * 2 * 4 * 16  # the ring is capped at N slots
    assert int(next(r for r in rows if r["variant"] == "linear")["cache_floats"]) == 2 * (4 * 4 + 4)
