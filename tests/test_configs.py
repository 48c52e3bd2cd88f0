"""Configs: every variant resolves with every preset; overrides are typed; mistakes fail clearly."""
import pytest

from attn_zoo import attention, configs

LISTOPS = "configs/listops.py"


@pytest.mark.parametrize("preset", ["", ",smoke", ",small"])
@pytest.mark.parametrize("variant", attention.names())
def test_every_variant_resolves(variant, preset):
    c = configs.load(f"{LISTOPS}:{variant}{preset}")
    opts = c.attention.to_dict()
    assert opts.pop("name") == variant
    spec = attention.get(variant)
    assert spec.options(**opts).keys() == spec.defaults.keys()
    assert c.model.qkv_dim % c.model.num_heads == 0
    if spec.max_length is not None:
        assert opts[spec.max_length] >= c.data.max_length + 1


def test_default_is_lra_listops():
    c = configs.load(LISTOPS)
    assert (c.model.num_layers, c.model.emb_dim, c.model.qkv_dim, c.model.mlp_dim, c.model.num_heads) == (
        4, 512, 512, 1024, 8)
    assert (c.train.batch_size, c.train.num_steps, c.train.learning_rate, c.train.warmup_steps) == (
        32, 5000, 0.05, 1000)
    assert (c.model.pooling, c.model.positions, c.data.max_length, c.train.weight_decay) == (
        "cls", "sinusoidal", 2000, 0.1)
    assert c.attention.name == "dense"


def test_overrides_parse_by_field_type():
    c = configs.load(f"{LISTOPS}:local,smoke", [
        "--config.model.num_layers=3", "--config.train.learning_rate", "1e-3",
        "--config.data.generate=false", "--config.model.pooling=mean", "--config.attention.window=5",
        "--config.model.layer_attention=('local', 'dense', {'name': 'local', 'window': 2})"])
    assert c.model.num_layers == 3 and isinstance(c.model.num_layers, int)
    assert c.train.learning_rate == 1e-3 and c.data.generate is False
    assert c.model.pooling == "mean" and c.attention.window == 5
    assert c.model.layer_attention == ("local", "dense", {"name": "local", "window": 2})
    short = configs.load(f"{LISTOPS}:local,smoke", ["--config.model.layer_attention=local,dense"])
    assert short.model.layer_attention == ("local", "dense")


@pytest.mark.parametrize("override,error,match", [
    ("--config.model.num_layer=2", KeyError, r"config.model.num_layer.*num_layers"),
    ("--config.modle.num_layers=2", KeyError, r"config.modle.*model"),
    ("--config.model.num_layers=two", ValueError, r"'two'.*config.model.num_layers.*int"),
    ("--config.data.generate=maybe", ValueError, r"config.data.generate"),
    ("--config.model=3", ValueError, r"is a section"),
    ("--config.attention.name=local", ValueError, r"configs/listops.py|path.py:<variant>"),
    ("--model.num_layers=2", ValueError, r"--config\."),
])
def test_bad_overrides_fail_clearly(override, error, match):
    with pytest.raises(error, match=match):
        configs.load(f"{LISTOPS}:dense,smoke", [override])


def test_unknown_variant_preset_and_file():
    with pytest.raises(ValueError, match="known: .*dense"):
        configs.load(f"{LISTOPS}:nonesuch")
    with pytest.raises(ValueError, match="presets: smoke"):
        configs.load(f"{LISTOPS}:dense,fast")
    with pytest.raises(FileNotFoundError, match="nope.py"):
        configs.load("configs/nope.py:dense")


def test_config_is_locked():
    c = configs.load(f"{LISTOPS}:dense")
    with pytest.raises(AttributeError):
        c.train.num_step = 3
