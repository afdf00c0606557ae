"""Object storage behaves the same for s3:// (a real moto server) and local paths / file://."""

from __future__ import annotations

import pytest

from trainkit import storage


@pytest.fixture(params=["s3", "file", "plain"])
def root(request, tmp_path):
    if request.param == "s3":
        return request.getfixturevalue("s3_bucket") + "/prefix"
    return ("file://" if request.param == "file" else "") + str(tmp_path / "prefix")


def test_write_read_find_remove_round_trip(root):
    storage.write_bytes(f"{root}/a/one.bin", b"\x00\x01\x02")
    storage.write_json(f"{root}/b/two.json", {"tokens": 3})
    assert storage.read_bytes(f"{root}/a/one.bin") == b"\x00\x01\x02"
    assert storage.read_json(f"{root}/b/two.json") == {"tokens": 3}
    assert storage.size(f"{root}/a/one.bin") == 3
    found = storage.find(root)
    assert [f.rsplit("/prefix/", 1)[1] for f in found] == ["a/one.bin", "b/two.json"]
    assert storage.exists(f"{root}/a/one.bin")
    storage.remove(f"{root}/a/one.bin")
    storage.remove(f"{root}/a/one.bin")  # removing what is not there is fine
    assert not storage.exists(f"{root}/a/one.bin")
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(f"{root}/a/one.bin")
    with pytest.raises(FileNotFoundError, match="not found"):
        storage.find(f"{root}/nothing-here")


def test_compressed_input_is_decompressed_by_suffix(root):
    import gzip

    storage.write_bytes(f"{root}/docs.jsonl.gz", gzip.compress(b'{"text": "hello"}\n'))
    with storage.open_input(f"{root}/docs.jsonl.gz") as f:
        assert f.read() == b'{"text": "hello"}\n'


def test_missing_bucket_is_file_not_found(s3_endpoint):
    assert not storage.bucket_exists("s3://no-such-bucket-tk/x")
    with pytest.raises(FileNotFoundError, match="no such bucket"):
        storage.read_bytes("s3://no-such-bucket-tk/x/index.json")
