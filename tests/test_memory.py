"""The GPU-memory planner: pinned estimates for known cases, monotonic in every input, and the mode
choice a worker makes (the fastest mode that fits; an out-of-memory retry moves to the next one)."""

from __future__ import annotations

import itertools

import pytest

from vidfactory.engines.memory import (
    GIB,
    MEMORY_MODES,
    estimate,
    frugal_peak_bytes,
    mode_that_fits,
    next_memory_mode,
)
from vidfactory.engines.presets import PRESETS, TINY, TINY_I2V

ONE_3B, FOURTEEN_B, A14B, TI2V_5B = (PRESETS[k] for k in PRESETS)


def gib(p, w, h, f, mode) -> float:
    return round(estimate(p, w, h, f, mode).peak_bytes / GIB, 2)


@pytest.mark.parametrize(
    ("p", "w", "h", "f", "expected"),
    [
        (ONE_3B, 832, 480, 81, (18.49, 15.99, 11.58, 2.47)),
        (FOURTEEN_B, 1280, 720, 81, (47.41, 46.38, 35.33, 10.05)),
        (FOURTEEN_B, 832, 480, 81, (42.46, 42.01, 30.96, 5.67)),
        (A14B, 1280, 720, 81, (74.03, 73.0, 35.33, 10.05)),
        (TI2V_5B, 1280, 704, 121, (29.89, 25.5, 12.29, 5.22)),
    ],
)
def test_pinned_estimates_for_the_default_shapes(p, w, h, f, expected) -> None:
    """Changing the planner changes routing: these pins make that a deliberate act."""
    assert tuple(gib(p, w, h, f, mode) for mode in MEMORY_MODES) == expected


def test_what_the_estimates_mean_for_real_cards() -> None:
    card_24, card_80 = 24 * GIB, 80 * GIB
    assert mode_that_fits(ONE_3B, 832, 480, 81, card_24) == "none"  # the 1.3B on a 24 GB card
    assert mode_that_fits(FOURTEEN_B, 1280, 720, 81, card_24) == "group_offload"
    assert mode_that_fits(FOURTEEN_B, 1280, 720, 81, card_80) == "none"
    assert mode_that_fits(A14B, 1280, 720, 81, card_80) == "none"  # both experts resident, just
    assert mode_that_fits(TI2V_5B, 1280, 704, 121, card_24) == "model_cpu_offload"
    assert mode_that_fits(A14B, 1280, 720, 81, 4 * GIB) is None


def test_latent_tokens_drive_the_5b_at_32_px_per_token() -> None:
    assert estimate(TI2V_5B, 1280, 704, 121, "none").latent_tokens == 31 * 22 * 40
    assert estimate(ONE_3B, 832, 480, 81, "none").latent_tokens == 21 * 30 * 52


@pytest.mark.parametrize("p", [*PRESETS.values(), TINY, TINY_I2V], ids=lambda p: p.id)
def test_estimates_grow_with_every_input_and_shrink_along_the_modes(p) -> None:
    side = p.side_multiple_px
    sides = [side * k for k in (4, 15, 30, 45)]
    frames = [1, 17, 81, 121]
    for mode in MEMORY_MODES:
        for w, h, f in itertools.product(sides, sides, frames):
            base = estimate(p, w, h, f, mode).peak_bytes
            assert estimate(p, w + side, h, f, mode).peak_bytes >= base
            assert estimate(p, w, h + side, f, mode).peak_bytes >= base
            assert estimate(p, w, h, f + 4, mode).peak_bytes >= base
    for w, h, f in itertools.product(sides, sides, frames):
        peaks = [estimate(p, w, h, f, mode).peak_bytes for mode in MEMORY_MODES]
        assert peaks == sorted(peaks, reverse=True)
        assert frugal_peak_bytes(p, w, h, f) == peaks[-1]


def test_mode_choice_and_the_retry_ladder() -> None:
    need = {mode: estimate(ONE_3B, 832, 480, 81, mode).peak_bytes for mode in MEMORY_MODES}
    assert mode_that_fits(ONE_3B, 832, 480, 81, need["none"]) == "none"
    assert mode_that_fits(ONE_3B, 832, 480, 81, need["none"] - 1) == "vae_tiling"
    assert mode_that_fits(ONE_3B, 832, 480, 81, need["none"], at_least="model_cpu_offload") == "model_cpu_offload"
    assert [next_memory_mode(m) for m in MEMORY_MODES] == [*MEMORY_MODES[1:], None]
    with pytest.raises(ValueError, match="unknown memory mode"):
        estimate(ONE_3B, 832, 480, 81, "sequential")
