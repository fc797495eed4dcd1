"""Implicit labels and hashes without a database: the GB 45438 AIGC tag survives encoding, the C2PA
manifest reads valid, trusted with the anchor, tampered after any byte changes; previews and hashes."""

import io
import stat

import numpy as np
import pytest
from PIL import Image

from vidfactory.media.devca import ensure_dev_credentials
from vidfactory.media.encode import encode_mp4
from vidfactory.media.errors import MediaError
from vidfactory.media.hashes import file_hashes
from vidfactory.media.preview import spritesheet_image
from vidfactory.media.provenance import AIGC_KEY, AigcLabel, SigningKey, read_aigc, read_c2pa, sign_c2pa

FRAMES = np.random.default_rng(7).integers(0, 256, (9, 64, 96, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def dev(tmp_path_factory):
    return ensure_dev_credentials(tmp_path_factory.mktemp("pki") / "c2pa-dev")


@pytest.fixture(scope="module")
def signed(dev) -> bytes:
    label = AigcLabel(content_producer="acme video", produce_id="video_abc", reserved_code1="0badf00d")
    mp4 = encode_mp4(FRAMES, 8, metadata={AIGC_KEY: label.to_json()})
    key = SigningKey(dev.cert_chain_path.read_bytes(), dev.key_path.read_bytes())
    return sign_c2pa(mp4, key, produce_id="video_abc", producer="acme video", generator="vidfactory/test")


def test_the_aigc_tag_carries_every_annex_e_field(signed):
    label = read_aigc(signed)
    assert label == AigcLabel(content_producer="acme video", produce_id="video_abc", reserved_code1="0badf00d")
    assert label.label == "1"
    assert set(__import__("json").loads(label.to_json())) == {
        "Label", "ContentProducer", "ProduceID", "ReservedCode1", "ContentPropagator", "PropagateID",
        "ReservedCode2"}


def test_a_signed_clip_is_valid_and_trusted_with_the_anchor(signed, dev):
    untrusted = read_c2pa(signed, "video/mp4")
    assert (untrusted.state, untrusted.produce_id) == ("valid", "video_abc")
    trusted = read_c2pa(signed, "video/mp4", anchors_pem=dev.anchor_path.read_bytes())
    assert (trusted.state, trusted.failures) == ("trusted", ())


def test_a_changed_byte_reads_tampered(signed, dev):
    changed = bytearray(signed)
    changed[-200] ^= 0x01  # inside the media data
    finding = read_c2pa(bytes(changed), "video/mp4", anchors_pem=dev.anchor_path.read_bytes())
    assert finding.state == "tampered"
    assert "assertion.bmffHash.mismatch" in finding.failures


def test_an_unsigned_file_has_no_manifest():
    assert read_c2pa(encode_mp4(FRAMES, 8), "video/mp4").state == "absent"
    assert read_c2pa(b"not a video at all", "video/mp4").state == "absent"
    assert read_aigc(b"not a video at all") is None


def test_a_wrong_key_cannot_sign(dev, tmp_path):
    other = ensure_dev_credentials(tmp_path / "other")
    key = SigningKey(dev.cert_chain_path.read_bytes(), other.key_path.read_bytes())
    with pytest.raises(MediaError, match="C2PA signing failed"):
        sign_c2pa(encode_mp4(FRAMES, 8), key, produce_id="v", producer="p", generator="g")


def test_the_dev_ca_is_made_once_and_its_key_kept_private(tmp_path):
    first = ensure_dev_credentials(tmp_path / "c2pa-dev")
    chain = first.cert_chain_path.read_bytes()
    assert ensure_dev_credentials(tmp_path / "c2pa-dev").cert_chain_path.read_bytes() == chain
    assert chain.count(b"BEGIN CERTIFICATE") == 2  # signer, then the CA
    assert stat.S_IMODE(first.key_path.parent.stat().st_mode) == 0o700
    assert not list(tmp_path.glob(".c2pa-dev-*"))  # no staging directory left behind


def test_the_aigc_fields_are_bounded():
    with pytest.raises(MediaError, match="ProduceID|produce_id"):
        AigcLabel(content_producer="p", produce_id="x" * 257)


def test_file_hashes_are_sha256_and_md5():
    hashes = file_hashes(b"abc")
    assert hashes.sha256 == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert hashes.md5 == "900150983cd24fb0d6963f7d28e17f72"


def test_the_spritesheet_is_a_grid_of_evenly_spaced_frames():
    frames = np.zeros((20, 40, 80, 3), np.uint8)
    for index in range(20):
        frames[index] = index * 12  # each frame a distinct grey
    sheet = Image.open(io.BytesIO(spritesheet_image(frames, columns=3, tiles=5, tile_width_px=40)))
    assert sheet.format == "WEBP" and sheet.size == (3 * 40, 2 * 20)  # 5 tiles: a row of 3, then 2
    grid = np.asarray(sheet.convert("L"), dtype=float)
    greys = [grid[row * 20 + 10, col * 40 + 20] for row, col in ((0, 0), (0, 1), (0, 2), (1, 0), (1, 1))]
    assert greys == sorted(greys) and abs(greys[0] - 0) < 4 and abs(greys[-1] - 19 * 12) < 4


def test_a_short_clip_gives_one_tile_per_frame_and_bad_input_is_refused():
    sheet = Image.open(io.BytesIO(spritesheet_image(FRAMES[:2], columns=5, tile_width_px=200)))
    assert sheet.size == (2 * 96, 64)  # never upscaled, never more tiles than frames
    with pytest.raises(MediaError, match="columns"):
        spritesheet_image(FRAMES, columns=0)
    with pytest.raises(MediaError, match="uint8"):
        spritesheet_image(FRAMES.astype(np.int16))
