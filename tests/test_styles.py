"""Styles: LoRA adapters checked before they are stored, kept per tenant, and applied per job."""

from __future__ import annotations

import pytest
from alembic import command
from safetensors.torch import save
from sqlalchemy import inspect
import torch

from vidfactory.db.migrate import alembic_config
from vidfactory.db.session import make_engine
from vidfactory.engines.presets import PRESETS, TINY, TINY_I2V
from vidfactory.styles.adapters import check_adapter
from vidfactory.styles.errors import InvalidAdapter

from styles_support import community_adapter, peft_adapter, pickled

limits = dict(bytes_max=10_000_000, rank_max=16)


@pytest.mark.parametrize("layout", ["peft", "wan-down-up-alpha", "wan-A-B"])
def test_the_uploaded_layouts_diffusers_loads_are_accepted(layout):
    data = {"peft": peft_adapter, "wan-down-up-alpha": community_adapter,
            "wan-A-B": lambda: community_adapter(down_up=False)}[layout]()
    adapter = check_adapter(data, TINY, **limits)
    assert (adapter.rank, adapter.modules, adapter.size_bytes) == (4, 16, len(data))
    assert adapter.layout == ("diffusers" if layout == "peft" else "wan")
    assert check_adapter(data, TINY_I2V, **limits).rank == 4  # same attention layers, other latent channels


def _refusal(data: bytes, base=TINY, **overrides) -> InvalidAdapter:
    with pytest.raises(InvalidAdapter) as refused:
        check_adapter(data, base, **{**limits, **overrides})
    return refused.value


def test_what_is_not_a_fitting_safetensors_lora_is_refused_precisely():
    assert _refusal(pickled()).code == "not_safetensors"
    assert "pickled" in str(_refusal(pickled()))
    assert _refusal(b"\x80\x04\x95" + bytes(64)).code == "not_safetensors"  # a raw pickle stream
    assert "header length" in str(_refusal(b"not a tensor file at all"))
    truncated = peft_adapter()[:-10]
    assert "file holds" in str(_refusal(truncated))
    wrong_base = _refusal(peft_adapter(), PRESETS["wan2.1-t2v-1.3b"])
    assert wrong_base.code == "adapter_base_mismatch" and "1536 in" in str(wrong_base)
    assert _refusal(peft_adapter(rank=8), rank_max=4).code == "rank_too_large"
    assert _refusal(peft_adapter(), bytes_max=100).code == "adapter_too_large"
    stray = save({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 32),
                  "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.zeros(32, 4),
                  "transformer.blocks.9.attn1.to_q.lora_A.weight": torch.zeros(4, 32),
                  "transformer.blocks.9.attn1.to_q.lora_B.weight": torch.zeros(32, 4)})
    assert "'blocks.9.attn1.to_q' is not a linear layer of wan-tiny" in str(_refusal(stray))
    wrong_shape = save({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 48),
                        "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.zeros(32, 4)})
    assert _refusal(wrong_shape).code == "adapter_base_mismatch"
    half = save({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 32)})
    assert "without its lora_B" in str(_refusal(half))
    integers = save({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 32, dtype=torch.int32),
                     "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.zeros(32, 4)})
    assert "I32" in str(_refusal(integers))
    unknown_layout = save({"model.layers.0.q.weight": torch.zeros(4, 32)})
    assert _refusal(unknown_layout).param == "file"


def test_the_migration_adds_and_removes_styles(database_url):
    engine = make_engine(database_url)
    config = alembic_config()

    def shape() -> tuple[bool, bool, bool]:
        inspector = inspect(engine)
        return ("styles" in inspector.get_table_names(),
                "styles" in {c["name"] for c in inspector.get_columns("jobs")},
                "style_id" in {c["name"] for c in inspector.get_columns("templates")})

    assert shape() == (True, True, True)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0022_idem_scopes_suspension")
    assert shape() == (False, False, False)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    assert shape() == (True, True, True)
    engine.dispose()
