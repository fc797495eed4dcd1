"""The storage interface, the same contract for the local directory and an S3 bucket on a real S3
protocol server (moto's, over HTTP)."""

from __future__ import annotations

import io
import os
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from botocore.exceptions import ClientError

from conftest import new_bucket
from vidfactory.failures import ErrorType
from vidfactory.settings import Settings
from vidfactory.storage import ObjectMissing, StorageError, make_storage, tenant_key
from vidfactory.storage.local import LocalStorage
from vidfactory.storage.s3 import S3Storage


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path):
    if request.param == "local":
        return make_storage(Settings(data_dir=tmp_path))
    return make_storage(Settings(data_dir=tmp_path, **new_bucket(request.getfixturevalue("s3_server"))))


def test_settings_choose_the_implementation(tmp_path, s3_server):
    assert isinstance(make_storage(Settings(data_dir=tmp_path)), LocalStorage)
    bucket = make_storage(Settings(data_dir=tmp_path, **new_bucket(s3_server, prefix="a/b")))
    assert isinstance(bucket, S3Storage) and bucket.location.endswith("/a/b")


def test_put_read_list_delete(storage):
    before = datetime.now(UTC) - timedelta(seconds=5)  # S3 keeps whole seconds
    storage.put(tenant_key("t1", "j1", "video.mp4"), b"clip", content_type="video/mp4")
    storage.put(tenant_key("t1", "j2", "video.mp4"), io.BytesIO(b"other clip"))
    storage.put(tenant_key("t2", "j3", "video.mp4"), b"not t1's")
    assert storage.read("tenants/t1/j1/video.mp4") == b"clip"
    with storage.open("tenants/t1/j2/video.mp4") as stream:
        assert stream.read(5) + stream.read() == b"other clip"
    assert storage.exists("tenants/t1/j1/video.mp4") and storage.size("tenants/t1/j2/video.mp4") == 10
    listed = list(storage.list("tenants/t1/"))
    assert [(item.key, item.size_bytes) for item in listed] == [("tenants/t1/j1/video.mp4", 4),
                                                                 ("tenants/t1/j2/video.mp4", 10)]
    assert all(before <= item.modified_at <= datetime.now(UTC) + timedelta(seconds=5) for item in listed)
    assert [item.key for item in storage.list("tenants/t1/j2")] == ["tenants/t1/j2/video.mp4"]
    assert len(list(storage.list(""))) == 3
    storage.delete("tenants/t1/j1/video.mp4")
    storage.delete("tenants/t1/j1/video.mp4")  # already gone: not an error
    assert not storage.exists("tenants/t1/j1/video.mp4")
    assert [item.key for item in storage.list("tenants/t1/")] == ["tenants/t1/j2/video.mp4"]


def test_replacing_an_object_is_whole_for_readers(storage):
    storage.put("tenants/t/k", b"a" * 1000)
    storage.put("tenants/t/k", b"b" * 10)
    assert storage.read("tenants/t/k") == b"b" * 10


def test_absent_objects_and_bad_keys_are_storage_errors(storage):
    for call in (storage.read, storage.size, storage.open):
        with pytest.raises(ObjectMissing) as raised:
            call("tenants/t/none")
        assert raised.value.error_type == ErrorType.storage_error
        assert isinstance(raised.value, FileNotFoundError)  # callers that predate the interface
    for bad in ("../escape", "tenants/t/../x", "/absolute"):
        with pytest.raises(StorageError):
            storage.put(bad, b"x")
    with pytest.raises(StorageError):
        list(storage.list("tenants/../"))


def test_a_missing_bucket_is_a_storage_error_from_the_client_error(tmp_path, s3_server):
    settings = new_bucket(s3_server) | {"storage_url": "s3://no-such-bucket-here/x"}
    storage = make_storage(Settings(data_dir=tmp_path, **settings))
    with pytest.raises(StorageError) as raised:
        storage.put("tenants/t/k", b"x")
    assert not isinstance(raised.value, ObjectMissing)
    assert isinstance(raised.value.__cause__, Exception)
    with pytest.raises(StorageError) as listed:
        list(storage.list("tenants/"))
    assert isinstance(listed.value.__cause__, ClientError)


def test_a_large_stream_goes_up_in_parts_and_comes_back_whole(tmp_path, s3_server):
    """Above one part (S3's 5 MiB minimum), a stream is uploaded in parts, read chunk by chunk."""
    storage = make_storage(Settings(data_dir=tmp_path, storage_multipart_chunk_bytes=5 * 1024 * 1024,
                                    **new_bucket(s3_server)))
    data = os.urandom(11 * 1024 * 1024)
    storage.put("tenants/t/big.mp4", io.BufferedReader(io.BytesIO(data)), content_type="video/mp4")
    answer = storage.client.head_object(Bucket=storage.bucket, Key=storage.object_key("tenants/t/big.mp4"))
    assert answer["ETag"].strip('"').endswith("-3")  # a multipart upload's ETag counts its parts
    assert storage.size("tenants/t/big.mp4") == len(data)
    with storage.open("tenants/t/big.mp4") as stream:
        assert b"".join(iter(lambda: stream.read(1 << 20), b"")) == data


def test_a_signed_url_serves_the_object_to_a_plain_http_client(tmp_path, s3_server):
    """(moto's server does not check query-string signatures: that they are right is botocore's part.)"""
    storage = make_storage(Settings(data_dir=tmp_path, **new_bucket(s3_server)))
    storage.put("tenants/t/j/video.mp4", b"the clip", content_type="video/mp4")
    url = storage.signed_url("tenants/t/j/video.mp4", 60, content_type="video/mp4", filename="j.mp4")
    fetched = httpx.get(url)
    assert fetched.status_code == 200 and fetched.content == b"the clip"
    assert fetched.headers["content-type"] == "video/mp4"
    assert fetched.headers["content-disposition"] == 'inline; filename="j.mp4"'
    assert "X-Amz-Expires=60&" in url and "X-Amz-Signature=" in url


def test_the_local_directory_has_no_links_and_hides_writes_in_flight(tmp_path):
    storage = LocalStorage(tmp_path)
    storage.put("tenants/t/a", b"x")
    (tmp_path / "tenants" / "t" / ".tmp-partial").write_bytes(b"half")
    assert [item.key for item in storage.list("tenants/")] == ["tenants/t/a"]
    assert storage.signed_url("tenants/t/a", 60) is None
