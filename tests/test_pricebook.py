from decimal import Decimal

import pytest
from pydantic import ValidationError

from vidfactory.billing.pricebook import PriceBookBody, body_sha256, default_price_book, quote


def test_seed_worked_example_ratio_720p_30s():
    book = default_price_book()
    assert book.method == "ratio" and book.unit_price == Decimal("0.001")
    q = quote(book, input_tokens=128, width=1280, height=720, seconds=30)
    assert (q.tier, q.input_tokens, q.output_tokens, q.total_tokens) == ("720p", 128, 1024, 1152)
    assert q.amount == Decimal("1.152") and str(q.amount) == "1.152" and q.currency == "CNY"


@pytest.mark.parametrize(("width", "height", "seconds", "expected"), [
    (1280, 720, 10, 512), (1280, 720, 30, 1024), (1920, 1080, 30, 2048), (832, 480, 5, 128),
])
def test_table_method_fixed_output_tokens(width, height, seconds, expected):
    book = PriceBookBody(method="table")
    q = quote(book, input_tokens=100, width=width, height=height, seconds=seconds)
    assert q.output_tokens == expected and q.total_tokens == 100 + expected


def test_table_method_audio_adds_256():
    book = PriceBookBody(method="table")
    assert quote(book, input_tokens=10, width=1280, height=720, seconds=10, audio=True).output_tokens == 512 + 256


def test_tier_is_chosen_by_the_shorter_side_and_duration_rounds_up():
    book = default_price_book()
    portrait = quote(book, input_tokens=10, width=720, height=1280, seconds=11)
    assert (portrait.tier, portrait.duration_bucket_s, portrait.output_tokens) == ("720p", 30, 80)
    tiny = quote(book, input_tokens=10, width=64, height=64, seconds=1)
    assert (tiny.tier, tiny.duration_bucket_s, tiny.output_tokens) == ("480p", 5, 20)


def test_money_rounds_once_half_up():
    book = PriceBookBody(unit_price=Decimal("0.0015"))
    assert quote(book, input_tokens=1, width=64, height=64, seconds=1).amount == Decimal("0.005")  # 3 × 0.0015


def test_a_book_must_price_every_tier_and_bucket():
    with pytest.raises(ValidationError, match="ratio_k"):
        PriceBookBody(ratio_k={"480p": {"5": 1}})


def test_prompt_over_the_max_must_be_truncated_before_quoting():
    with pytest.raises(AssertionError):
        quote(default_price_book(), input_tokens=513, width=64, height=64, seconds=1)


def test_body_hash_is_stable_across_a_json_round_trip():
    book = default_price_book()
    again = PriceBookBody.model_validate(book.model_dump(mode="json"))
    assert body_sha256(book) == body_sha256(again)
    assert body_sha256(PriceBookBody(unit_price=Decimal("0.002"))) != body_sha256(book)
