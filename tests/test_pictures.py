"""Pattern pictures: what is drawn is the variant's pattern (or chosen pattern), as PNG files."""
import numpy as np
import pytest

from attn_zoo import attention, pictures


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_panels_are_the_pattern():
    panels, note = pictures.pattern_panels("strided", 16, causal=True, stride=4)
    assert note == "" and len(panels) == 1
    np.testing.assert_array_equal(panels[0][1], attention.get("strided").pattern(16, 16, causal=True, stride=4))


def test_per_head_panels_and_chosen_pattern():
    panels, _ = pictures.pattern_panels("mixture", 16, groups="local(window=1)*2+strided(stride=4)*3")
    assert [t for t, _ in panels] == ["heads 0–1", "heads 2–4"]
    # bigbird with params-fixed blocks has no pattern(): the chosen pattern of a random input is drawn
    panels, _ = pictures.pattern_panels("bigbird", 24, block=4, num_random=1, random_source="params")
    assert len(panels) == 1 and panels[0][0].startswith("chosen") and panels[0][1].shape == (24, 24)


def test_draw_pattern_and_message(tmp_path):
    out = pictures.draw_pattern("longformer", 32, str(tmp_path / "lf.png"), window=2, num_global=2)
    assert _is_png(out)
    attention.register("no_pattern_here", family="kernel", exact=False, supports_causal=False,
                       impl=lambda p, q, k, v, **kw: v)
    try:
        assert pictures.pattern_panels("no_pattern_here", 8)[0] == []
        assert _is_png(pictures.draw_pattern("no_pattern_here", 8, str(tmp_path / "none.png")))
    finally:
        attention.unregister("no_pattern_here")
    with pytest.raises(TypeError, match="has no option"):
        pictures.draw_pattern("local", 8, str(tmp_path / "x.png"), no_such=1)


def test_draw_all(tmp_path):
    assert _is_png(pictures.draw_all(16, str(tmp_path / "all.png")))
