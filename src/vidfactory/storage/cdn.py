"""URL signing for a CDN in front of the bucket: CloudFront signed URLs with a canned policy, and
Alibaba Cloud CDN type-A authentication. Pure functions of the URL, the expiry and the key."""

from __future__ import annotations

import base64
import hashlib
import json
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = ["aliyun_type_a", "cloudfront_canned", "load_rsa_key"]


def load_rsa_key(pem: bytes) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("a CloudFront signing key is an RSA private key")
    return key


def _cloudfront_base64(data: bytes) -> str:
    # CloudFront's URL-safe alphabet: + = / become - _ ~ .
    return base64.b64encode(data).decode().translate(str.maketrans("+=/", "-_~"))


def cloudfront_canned(url: str, expires_at: int, key_pair_id: str, key: rsa.RSAPrivateKey) -> str:
    """The URL with Expires, Signature and Key-Pair-Id: an RSA-SHA1 signature of the canned policy
    (this exact resource until `expires_at`, epoch seconds)."""
    policy = json.dumps({"Statement": [{"Resource": url, "Condition": {"DateLessThan": {"AWS:EpochTime": expires_at}}}]},
                        separators=(",", ":"))
    signature = key.sign(policy.encode(), padding.PKCS1v15(), hashes.SHA1())  # CloudFront's algorithm
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}Expires={expires_at}&Signature={_cloudfront_base64(signature)}&Key-Pair-Id={key_pair_id}"


def aliyun_type_a(url: str, timestamp: int, auth_key: str, rand: str = "0", uid: str = "0") -> str:
    """The URL with auth_key=timestamp-rand-uid-md5(path-timestamp-rand-uid-key). The CDN accepts it
    until timestamp + the validity period configured on the CDN."""
    path = urlsplit(url).path
    digest = hashlib.md5(f"{path}-{timestamp}-{rand}-{uid}-{auth_key}".encode()).hexdigest()  # the scheme's hash
    return f"{url}?auth_key={timestamp}-{rand}-{uid}-{digest}"
