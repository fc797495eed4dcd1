"""Implicit labels: the GB 45438-2025 `AIGC` metadata and a signed C2PA manifest, written and read back.

The `AIGC` JSON (GB 45438-2025 Annex E) is written by the encoder into the MP4's metadata (see
`encode_mp4(metadata=...)`); the C2PA manifest (c2pa-python) records that the clip was created by a
trained model (`c2pa.created`, digital source type trainedAlgorithmicMedia) and binds itself to the
file's bytes, so any later change shows up as a hash mismatch. Plain bytes in, plain values out.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Literal

import av
import c2pa

from vidfactory.media.errors import MediaError

__all__ = [
    "AIGC_KEY",
    "AigcLabel",
    "C2paFinding",
    "SigningKey",
    "read_aigc",
    "read_c2pa",
    "sign_c2pa",
]

AIGC_KEY = "AIGC"
aigc_field_chars_max = 256
digital_source_type = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
job_assertion_label = "com.vidfactory.job"
untrusted_code = "signingCredential.untrusted"
C2paState = Literal["absent", "valid", "trusted", "tampered"]


@dataclass(frozen=True)
class AigcLabel:
    """GB 45438-2025 Annex E implicit label. `Label` "1" = AI-generated; ReservedCode1 carries our own
    code, the invisible watermark id, so the metadata and the pixels name the same job."""

    content_producer: str
    produce_id: str
    reserved_code1: str = ""
    content_propagator: str = ""
    propagate_id: str = ""
    reserved_code2: str = ""
    label: str = "1"

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if len(value) > aigc_field_chars_max:
                raise MediaError(f"AIGC {name} over {aigc_field_chars_max} characters")

    def to_json(self) -> str:
        return json.dumps({"Label": self.label, "ContentProducer": self.content_producer,
                           "ProduceID": self.produce_id, "ReservedCode1": self.reserved_code1,
                           "ContentPropagator": self.content_propagator, "PropagateID": self.propagate_id,
                           "ReservedCode2": self.reserved_code2}, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> AigcLabel | None:
        """None when the text is not an Annex E object (a foreign or broken tag is a finding, not an error)."""
        try:
            data = json.loads(text)
            return cls(content_producer=str(data["ContentProducer"]), produce_id=str(data["ProduceID"]),
                       reserved_code1=str(data.get("ReservedCode1", "")),
                       content_propagator=str(data.get("ContentPropagator", "")),
                       propagate_id=str(data.get("PropagateID", "")),
                       reserved_code2=str(data.get("ReservedCode2", "")), label=str(data["Label"]))
        except (ValueError, KeyError, TypeError, MediaError):
            return None


def read_aigc(mp4: bytes) -> AigcLabel | None:
    """The `AIGC` tag of an MP4's container metadata, or None when absent, foreign, or not an MP4."""
    try:
        with av.open(io.BytesIO(mp4), mode="r") as container:
            text = container.metadata.get(AIGC_KEY)
    except av.FFmpegError:
        return None
    return None if text is None else AigcLabel.from_json(text)


@dataclass(frozen=True)
class SigningKey:
    """A C2PA signing identity: the signer certificate followed by its issuers (PEM), and its EC key."""

    cert_chain_pem: bytes
    key_pem: bytes = field(repr=False)  # never in logs


def sign_c2pa(mp4: bytes, key: SigningKey, *, produce_id: str, producer: str, generator: str) -> bytes:
    """The MP4 with an embedded C2PA manifest: created by a trained model, naming the job (`produce_id`)."""
    manifest = {
        "claim_generator_info": [{"name": generator}],
        "title": f"{produce_id}.mp4",
        "assertions": [
            {"label": "c2pa.actions.v2", "data": {"actions": [
                {"action": "c2pa.created", "digitalSourceType": digital_source_type,
                 "softwareAgent": {"name": generator}}]}},
            {"label": job_assertion_label, "data": {"produce_id": produce_id, "producer": producer}},
        ],
    }
    try:
        signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(alg=b"es256", sign_cert=key.cert_chain_pem,
                                                           private_key=key.key_pem, ta_url=None))
        signed = io.BytesIO()
        with c2pa.Builder(manifest) as builder:
            builder.sign(signer, "video/mp4", io.BytesIO(mp4), signed)
    except c2pa.C2paError as exc:
        raise MediaError(f"C2PA signing failed: {exc}") from exc
    return signed.getvalue()


@dataclass(frozen=True)
class C2paFinding:
    """`valid`: intact, signed, signer not known; `trusted`: intact and chains to a configured anchor;
    `tampered`: a manifest is there but its hashes or signature no longer match; `absent`: none."""

    state: C2paState
    produce_id: str | None = None
    failures: tuple[str, ...] = ()  # C2PA status codes, e.g. assertion.bmffHash.mismatch


def read_c2pa(data: bytes, mime: str, *, anchors_pem: bytes | None = None) -> C2paFinding:
    """Validate the manifest embedded in `data` (of type `mime`), trusting `anchors_pem` when given."""
    context = None
    if anchors_pem:
        context = c2pa.Context.from_dict({"trust": {"trust_anchors": anchors_pem.decode()},
                                          "verify": {"verify_trust": True}})
    try:
        with c2pa.Reader(mime, io.BytesIO(data), context=context) as reader:
            state = reader.get_validation_state()
            results = reader.get_validation_results() or {}
            store = json.loads(reader.json())
    except c2pa.C2paError.ManifestNotFound:
        return C2paFinding("absent")
    except c2pa.C2paError as exc:
        # A manifest box that does not parse is a broken manifest; a file that is not this format at all
        # carries none we could read.
        return C2paFinding("tampered" if "jumbf" in str(exc).lower() else "absent", failures=(str(exc)[:200],))
    finally:
        if context is not None:
            context.close()
    failures = tuple(entry["code"] for entry in results.get("activeManifest", {}).get("failure", []))
    return C2paFinding(_state(state, failures), _produce_id(store), failures)


def _state(validation_state: str | None, failures: tuple[str, ...]) -> C2paState:
    if validation_state == "Trusted":
        return "trusted"
    if validation_state == "Valid" and set(failures) <= {untrusted_code}:
        return "valid"
    return "tampered"


def _produce_id(store: dict) -> str | None:
    manifest = store.get("manifests", {}).get(store.get("active_manifest", ""), {})
    for assertion in manifest.get("assertions", []):
        if assertion.get("label") == job_assertion_label:
            value = assertion.get("data", {}).get("produce_id")
            return value if isinstance(value, str) else None
    return None
