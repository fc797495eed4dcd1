"""Links to stored clips: /content redirects to a signed URL on object storage (or proxies, as the
operator chooses), the video object lists signed links per variant, and CDN URL signing matches
independent implementations."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from botocore.signers import CloudFrontSigner
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from fastapi.testclient import TestClient
from openai import OpenAI

from conftest import make_settings, new_bucket, new_tenant
from vidfactory.api.app import create_app
from vidfactory.jobs.worker import Worker
from vidfactory.settings import Settings
from vidfactory.storage.cdn import aliyun_type_a, cloudfront_canned
from vidfactory.storage.links import Links
from vidfactory.storage.local import LocalStorage

small = {"size": "64x64", "seconds": "1", "cache": "off"}


@pytest.fixture
def s3_app(tmp_path, sqlite_url, models_dir, s3_server):
    """The API on S3 storage, with its settings as the test asks; a worker the test drives."""
    clients = []

    def start(**overrides) -> TestClient:
        settings = make_settings(tmp_path / uuid.uuid4().hex, sqlite_url, models_dir, **new_bucket(s3_server),
                                 **overrides)
        clients.append(TestClient(create_app(settings, workers=0)).__enter__())
        return clients[-1]

    yield start
    for client in clients:
        client.__exit__(None, None, None)


class ApiThenNetwork(httpx.BaseTransport):
    """http://testserver to the app in process, every other URL over the network."""

    def __init__(self, api: TestClient) -> None:
        self.api, self.network = api, httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host != "testserver":
            return self.network.handle_request(request)
        answer = self.api.request(request.method, str(request.url), headers=dict(request.headers),
                                  content=request.read(), follow_redirects=False)
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)


def finished_video(client: TestClient) -> tuple[dict, dict[str, str]]:
    ctx = client.app.state.ctx
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    video = client.post("/v1/videos", headers=tenant.headers, json={"prompt": "a lantern", **small}).json()
    assert Worker(ctx.settings, ctx.sessions, ctx.storage, worker_id="w").run_once()
    return client.get(f"/v1/videos/{video['id']}", headers=tenant.headers).json(), tenant.headers


def test_content_redirects_to_a_short_lived_signed_url_with_the_stored_bytes(s3_app):
    client = s3_app(link_ttl_s=120)
    video, headers = finished_video(client)
    assert video["status"] == "completed" and "download_urls" not in video  # links listed only when enabled
    for variant in ("video", "thumbnail", "spritesheet"):
        answer = client.get(f"/v1/videos/{video['id']}/content?variant={variant}", headers=headers,
                            follow_redirects=False)
        assert answer.status_code == 307 and answer.headers["cache-control"] == "private, no-store"
        location = answer.headers["location"]
        assert parse_qs(urlsplit(location).query)["X-Amz-Expires"] == ["120"]
        fetched = httpx.get(location)  # a plain client, no API key: the link is the credential
        assert fetched.status_code == 200
        assert hashlib.sha256(fetched.content).hexdigest() == video["hashes"][variant]["sha256"]
    assert fetched.headers["content-type"] == "image/webp"


def test_the_openai_sdk_downloads_through_the_redirect(s3_app):
    client = s3_app()
    video, headers = finished_video(client)
    # The API in process; the bucket over HTTP. The SDK's own client follows redirects, as this one does.
    http = httpx.Client(transport=ApiThenNetwork(client), follow_redirects=True)
    sdk = OpenAI(base_url="http://testserver/v1", api_key=headers["Authorization"][7:], http_client=http,
                 max_retries=0)
    clip = sdk.videos.download_content(video["id"])
    assert clip.response.headers["content-type"] == "video/mp4"
    assert hashlib.sha256(clip.content).hexdigest() == video["hashes"]["video"]["sha256"]
    assert "authorization" not in clip.response.request.headers  # the key never goes to the bucket


def test_proxy_mode_streams_the_bytes_through_the_api(s3_app):
    client = s3_app(content_delivery="proxy")
    video, headers = finished_video(client)
    answer = client.get(f"/v1/videos/{video['id']}/content", headers=headers, follow_redirects=False)
    assert answer.status_code == 200 and answer.headers["content-type"] == "video/mp4"
    assert int(answer.headers["content-length"]) == len(answer.content)
    assert hashlib.sha256(answer.content).hexdigest() == answer.headers["x-content-sha256"]
    assert answer.headers["x-content-sha256"] == video["hashes"]["video"]["sha256"]


def test_the_video_object_lists_signed_links_per_variant_when_enabled(s3_app):
    client = s3_app(download_links=True)
    video, headers = finished_video(client)
    assert sorted(video["download_urls"]) == ["spritesheet", "thumbnail", "video"]
    assert video["download_urls_expire_at"] > datetime.now(UTC).timestamp()
    listed = client.get("/v1/videos", headers=headers).json()["data"]
    assert sorted(listed[0]["download_urls"]) == ["spritesheet", "thumbnail", "video"]
    for variant, url in video["download_urls"].items():
        assert hashlib.sha256(httpx.get(url).content).hexdigest() == video["hashes"][variant]["sha256"]


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_cloudfront_signed_urls_match_botocore(rsa_key):
    def rsa_signer(message: bytes) -> bytes:
        return rsa_key.sign(message, padding.PKCS1v15(), hashes.SHA1())

    expires = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
    for url in ("https://d111111abcdef8.cloudfront.net/tenants/t1/vid_1/video.mp4",
                "https://cdn.example.com/a%20b/clip.mp4?version=2"):
        theirs = CloudFrontSigner("K2JCJMDEHXQW5F", rsa_signer).generate_presigned_url(url, date_less_than=expires)
        assert cloudfront_canned(url, int(expires.timestamp()), "K2JCJMDEHXQW5F", rsa_key) == theirs


def test_aliyun_type_a_matches_the_published_example():
    signed = aliyun_type_a("http://cdn.example.com/video/standard/test.mp4", 1444435200, "aliyuncdnexp1234")
    assert signed == ("http://cdn.example.com/video/standard/test.mp4"
                      "?auth_key=1444435200-0-0-23bf85053008f5c0e791667a313e28ce")


def test_cdn_links_sign_the_key_under_the_cdn_base_url(tmp_path, rsa_key):
    pem = tmp_path / "cdn.pem"
    pem.write_bytes(rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    settings = Settings(data_dir=tmp_path, cdn_base_url="https://cdn.example.com/clips", cdn_signing="cloudfront",
                        cdn_key_id="KID", cdn_private_key_file=pem, link_ttl_s=300)
    links = Links(settings, LocalStorage(tmp_path / "s"), clock=lambda: 1_900_000_000.5)
    url = links.url("tenants/t1/vid_1/video.mp4")
    assert url.startswith("https://cdn.example.com/clips/tenants/t1/vid_1/video.mp4?Expires=1900000300&Signature=")
    assert url.endswith("&Key-Pair-Id=KID")
    aliyun = Links(Settings(data_dir=tmp_path, cdn_base_url="https://cdn.example.com", cdn_signing="aliyun-a",
                            cdn_auth_key="k" * 16), LocalStorage(tmp_path / "s"), clock=lambda: 1_900_000_000)
    assert aliyun.url("tenants/t1/x.mp4").startswith("https://cdn.example.com/tenants/t1/x.mp4?auth_key=1900000000-")
    with pytest.raises(ValueError, match="cdn_key_id"):
        Settings(data_dir=tmp_path, cdn_base_url="https://cdn.example.com", cdn_signing="cloudfront")
