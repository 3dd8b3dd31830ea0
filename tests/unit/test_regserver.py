"""The embedded registry, exercised in-process over HTTP with httpx."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ocigitops.regserver import BackgroundRegistry, make_server, parse_address

pytestmark = pytest.mark.unit

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
EMPTY = b"{}"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def client(reg: BackgroundRegistry) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=reg.url, timeout=10) as c:
        yield c


def error_code(resp: httpx.Response) -> str:
    return str(resp.json()["errors"][0]["code"])


def push_blob(client: httpx.Client, repo: str, data: bytes) -> str:
    digest = sha(data)
    resp = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data)
    assert resp.status_code == 201, resp.text
    return digest


def desc(media_type: str, data: bytes) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha(data), "size": len(data)}


def image_manifest(client: httpx.Client, repo: str, *, layer: bytes = b"layer",
                   config_type: str = "application/vnd.oci.image.config.v1+json",
                   config: bytes = EMPTY, **extra: Any) -> bytes:
    """Push a config and one layer, return a manifest referencing them (not pushed)."""
    push_blob(client, repo, config)
    push_blob(client, repo, layer)
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": desc(config_type, config),
           "layers": [desc("application/vnd.oci.image.layer.v1.tar", layer)], **extra}
    return json.dumps(doc, indent=1).encode()


def put_manifest(client: httpx.Client, repo: str, ref: str, data: bytes,
                 media_type: str = OCI_MANIFEST) -> httpx.Response:
    return client.put(f"/v2/{repo}/manifests/{ref}", content=data,
                      headers={"Content-Type": media_type})


def test_base_endpoint(client: httpx.Client, reg: BackgroundRegistry) -> None:
    resp = client.get("/v2/")
    assert resp.status_code == 200
    assert resp.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert reg.url == f"http://127.0.0.1:{reg.port}" and reg.host == f"127.0.0.1:{reg.port}"


def test_monolithic_post_creates_oci_layout(client: httpx.Client, reg: BackgroundRegistry) -> None:
    data = os.urandom(3000)
    digest = sha(data)
    resp = client.post("/v2/team/app/blobs/uploads/", params={"digest": digest}, content=data)
    assert resp.status_code == 201
    assert resp.headers["Location"] == f"/v2/team/app/blobs/{digest}"
    assert resp.headers["Docker-Content-Digest"] == digest

    head = client.head(f"/v2/team/app/blobs/{digest}")
    assert head.status_code == 200
    assert head.headers["Content-Length"] == "3000"
    assert head.headers["Docker-Content-Digest"] == digest
    assert client.get(f"/v2/team/app/blobs/{digest}").content == data

    layout = reg.storage / "team" / "app"
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    assert (layout / "blobs" / "sha256" / digest[7:]).read_bytes() == data
    assert json.loads((layout / "index.json").read_text())["manifests"] == []


def test_post_then_put_monolithic(client: httpx.Client) -> None:
    data = b"hello registry"
    resp = client.post("/v2/repo/blobs/uploads/")
    assert resp.status_code == 202
    location = resp.headers["Location"]
    assert location.startswith("/v2/repo/blobs/uploads/")
    resp = client.put(location, params={"digest": sha(data)}, content=data)
    assert resp.status_code == 201
    assert client.get(f"/v2/repo/blobs/{sha(data)}").content == data


def test_chunked_upload_with_content_range(client: httpx.Client) -> None:
    data = os.urandom(100)
    one, two, three = data[:40], data[40:70], data[70:]
    location = client.post("/v2/repo/blobs/uploads/").headers["Location"]

    resp = client.patch(location, content=one, headers={"Content-Range": "0-39"})
    assert resp.status_code == 202
    assert resp.headers["Range"] == "0-39"
    location = resp.headers["Location"]

    # Resending the same chunk (or any chunk not at the end) is out of order.
    resp = client.patch(location, content=one, headers={"Content-Range": "0-39"})
    assert resp.status_code == 416
    assert resp.headers["Range"] == "0-39"

    status = client.get(location)
    assert status.status_code == 204
    assert status.headers["Range"] == "0-39"

    # A streamed chunk without Content-Range is appended.
    resp = client.patch(location, content=two)
    assert resp.status_code == 202
    assert resp.headers["Range"] == "0-69"

    # The last chunk may come with the closing PUT.
    resp = client.put(location, params={"digest": sha(data)}, content=three,
                      headers={"Content-Range": "70-99"})
    assert resp.status_code == 201
    assert client.get(f"/v2/repo/blobs/{sha(data)}").content == data
    assert client.get(location).status_code == 404


def test_streamed_patch_with_chunked_transfer_encoding(client: httpx.Client) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)

    def pieces() -> Iterator[bytes]:
        for i in range(0, len(data), 700_000):
            yield data[i:i + 700_000]

    location = client.post("/v2/big/blobs/uploads/").headers["Location"]
    resp = client.patch(location, content=pieces())
    assert resp.status_code == 202
    assert resp.headers["Range"] == f"0-{len(data) - 1}"
    assert client.put(resp.headers["Location"], params={"digest": sha(data)}).status_code == 201
    assert client.get(f"/v2/big/blobs/{sha(data)}").content == data


def test_digest_mismatch_is_digest_invalid(client: httpx.Client) -> None:
    location = client.post("/v2/repo/blobs/uploads/").headers["Location"]
    resp = client.put(location, params={"digest": sha(b"other")}, content=b"content")
    assert resp.status_code == 400
    assert error_code(resp) == "DIGEST_INVALID"
    assert client.get(f"/v2/repo/blobs/{sha(b'other')}").status_code == 404

    resp = client.post("/v2/repo/blobs/uploads/", params={"digest": sha(b"x")}, content=b"y")
    assert error_code(resp) == "DIGEST_INVALID"


def test_upload_session_belongs_to_its_repository(client: httpx.Client) -> None:
    location = client.post("/v2/one/blobs/uploads/").headers["Location"]
    upload_id = location.rsplit("/", 1)[1]
    resp = client.patch(f"/v2/two/blobs/uploads/{upload_id}", content=b"x")
    assert resp.status_code == 404
    assert error_code(resp) == "BLOB_UPLOAD_UNKNOWN"
    assert error_code(client.get("/v2/one/blobs/uploads/" + "0" * 32)) == "BLOB_UPLOAD_UNKNOWN"
    assert client.delete(location).status_code == 204
    assert client.get(location).status_code == 404


def test_cross_repository_mount(client: httpx.Client) -> None:
    digest = push_blob(client, "source/repo", b"shared layer")
    resp = client.post("/v2/target/repo/blobs/uploads/",
                       params={"mount": digest, "from": "source/repo"})
    assert resp.status_code == 201
    assert resp.headers["Location"] == f"/v2/target/repo/blobs/{digest}"
    assert client.get(f"/v2/target/repo/blobs/{digest}").content == b"shared layer"

    # Deleting the mounted copy leaves the source intact.
    assert client.delete(f"/v2/target/repo/blobs/{digest}").status_code == 202
    assert client.get(f"/v2/source/repo/blobs/{digest}").status_code == 200

    # Unknown blob, or no "from": an ordinary upload session starts.
    resp = client.post("/v2/target/repo/blobs/uploads/",
                       params={"mount": sha(b"nope"), "from": "source/repo"})
    assert resp.status_code == 202
    assert resp.headers["Location"].startswith("/v2/target/repo/blobs/uploads/")
    resp = client.post("/v2/target/repo/blobs/uploads/", params={"mount": digest})
    assert resp.status_code == 202


def test_manifest_round_trip_is_byte_exact(client: httpx.Client, reg: BackgroundRegistry) -> None:
    # Odd spacing and key order must survive: the digest is of the bytes as pushed.
    body = image_manifest(client, "app", annotations={"z": "1", "a": "2"})
    body = body.replace(b"\n", b"\n   ") + b"\n"
    digest = sha(body)
    resp = put_manifest(client, "app", "v1", body)
    assert resp.status_code == 201
    assert resp.headers["Docker-Content-Digest"] == digest
    assert resp.headers["Location"] == f"/v2/app/manifests/{digest}"
    assert "OCI-Subject" not in resp.headers

    for ref in ("v1", digest):
        got = client.get(f"/v2/app/manifests/{ref}")
        assert got.status_code == 200
        assert got.content == body
        assert got.headers["Content-Type"] == OCI_MANIFEST
        assert got.headers["Docker-Content-Digest"] == digest
        head = client.head(f"/v2/app/manifests/{ref}")
        assert head.status_code == 200 and head.headers["Content-Length"] == str(len(body))

    index = json.loads((reg.storage / "app" / "index.json").read_text())
    assert index["manifests"] == [{"mediaType": OCI_MANIFEST, "digest": digest,
                                   "size": len(body),
                                   "annotations": {"org.opencontainers.image.ref.name": "v1"}}]


def test_manifest_push_by_digest(client: httpx.Client) -> None:
    body = image_manifest(client, "app")
    assert put_manifest(client, "app", sha(body), body).status_code == 201
    assert client.get(f"/v2/app/manifests/{sha(body)}").content == body
    assert client.get("/v2/app/tags/list").json()["tags"] == []

    resp = put_manifest(client, "app", sha(b"something else"), body)
    assert resp.status_code == 400 and error_code(resp) == "DIGEST_INVALID"


def test_manifest_validation_errors(client: httpx.Client) -> None:
    resp = put_manifest(client, "app", "v1", b"not json")
    assert resp.status_code == 400 and error_code(resp) == "MANIFEST_INVALID"

    missing = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                          "config": desc("application/vnd.oci.empty.v1+json", EMPTY),
                          "layers": []}).encode()
    resp = put_manifest(client, "app", "v1", missing)
    assert resp.status_code == 400 and error_code(resp) == "MANIFEST_BLOB_UNKNOWN"

    body = image_manifest(client, "app")
    resp = put_manifest(client, "app", "v1", body, OCI_INDEX)
    assert resp.status_code == 400 and error_code(resp) == "MANIFEST_INVALID"

    resp = put_manifest(client, "app", "-bad-tag", body)
    assert resp.status_code == 400 and error_code(resp) == "TAG_INVALID"

    resp = put_manifest(client, "app", "sha512:" + "a" * 128, body)
    assert resp.status_code == 400 and error_code(resp) == "UNSUPPORTED"


def test_tags_pagination(client: httpx.Client) -> None:
    body = image_manifest(client, "app")
    names = ["b", "a", "d", "c", "e"]
    for name in names:
        assert put_manifest(client, "app", name, body).status_code == 201

    resp = client.get("/v2/app/tags/list")
    assert resp.json() == {"name": "app", "tags": sorted(names)}
    assert "Link" not in resp.headers

    page = client.get("/v2/app/tags/list", params={"n": 2})
    assert page.json()["tags"] == ["a", "b"]
    assert page.headers["Link"] == '</v2/app/tags/list?n=2&last=b>; rel="next"'
    following = client.get(page.headers["Link"].split(";")[0].strip("<>"))
    assert following.json()["tags"] == ["c", "d"]
    last_page = client.get("/v2/app/tags/list", params={"n": 2, "last": "d"})
    assert last_page.json()["tags"] == ["e"]
    assert "Link" not in last_page.headers
    assert client.get("/v2/app/tags/list", params={"n": 0}).json()["tags"] == []
    assert client.get("/v2/app/tags/list", params={"n": "x"}).status_code == 400


def test_delete_tag_versus_manifest(client: httpx.Client) -> None:
    body = image_manifest(client, "app")
    digest = sha(body)
    put_manifest(client, "app", "one", body)
    put_manifest(client, "app", "two", body)

    assert client.delete("/v2/app/manifests/one").status_code == 202
    assert client.get("/v2/app/manifests/one").status_code == 404
    assert client.get("/v2/app/manifests/two").status_code == 200
    assert client.delete("/v2/app/manifests/one").status_code == 404

    # The last tag gone, the manifest stays reachable by digest.
    assert client.delete("/v2/app/manifests/two").status_code == 202
    assert client.get(f"/v2/app/manifests/{digest}").content == body

    put_manifest(client, "app", "three", body)
    assert client.delete(f"/v2/app/manifests/{digest}").status_code == 202
    resp = client.get("/v2/app/manifests/three")
    assert resp.status_code == 404 and error_code(resp) == "MANIFEST_UNKNOWN"
    assert client.get(f"/v2/app/manifests/{digest}").status_code == 404
    assert client.get("/v2/app/tags/list").json()["tags"] == []
    assert client.delete(f"/v2/app/manifests/{digest}").status_code == 404


def test_moving_a_tag_keeps_the_old_manifest(client: httpx.Client) -> None:
    old = image_manifest(client, "app", layer=b"old")
    new = image_manifest(client, "app", layer=b"new")
    put_manifest(client, "app", "latest", old)
    put_manifest(client, "app", "latest", new)
    assert client.get("/v2/app/manifests/latest").content == new
    assert client.get(f"/v2/app/manifests/{sha(old)}").content == old
    assert client.get("/v2/app/tags/list").json()["tags"] == ["latest"]


def test_blob_delete(client: httpx.Client) -> None:
    digest = push_blob(client, "app", b"to delete")
    assert client.delete(f"/v2/app/blobs/{digest}").status_code == 202
    resp = client.get(f"/v2/app/blobs/{digest}")
    assert resp.status_code == 404 and error_code(resp) == "BLOB_UNKNOWN"
    assert client.delete(f"/v2/app/blobs/{digest}").status_code == 404

    body = image_manifest(client, "app")
    put_manifest(client, "app", "v1", body)
    assert client.delete(f"/v2/app/blobs/{sha(body)}").status_code == 405


def _push_referrers(client: httpx.Client) -> tuple[str, dict[str, bytes]]:
    subject_body = image_manifest(client, "app")
    subject = desc(OCI_MANIFEST, subject_body)
    assert put_manifest(client, "app", "v1", subject_body).status_code == 201
    sig = image_manifest(client, "app", layer=b"sig", artifactType="application/x.sig",
                         subject=subject, annotations={"kind": "signature"})
    sbom = image_manifest(client, "app", layer=b"sbom", config_type="application/x.sbom",
                          config=b'{"sbom":1}', subject=subject)
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                        "artifactType": "application/x.bundle",
                        "manifests": [desc(OCI_MANIFEST, sig)], "subject": subject}).encode()
    for body, media_type in ((sig, OCI_MANIFEST), (sbom, OCI_MANIFEST), (index, OCI_INDEX)):
        resp = put_manifest(client, "app", sha(body), body, media_type)
        assert resp.status_code == 201
        assert resp.headers["OCI-Subject"] == subject["digest"]
    return str(subject["digest"]), {"sig": sig, "sbom": sbom, "index": index}


def test_referrers(client: httpx.Client) -> None:
    subject, bodies = _push_referrers(client)
    resp = client.get(f"/v2/app/referrers/{subject}")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == OCI_INDEX
    assert "OCI-Filters-Applied" not in resp.headers
    doc = resp.json()
    assert doc["schemaVersion"] == 2 and doc["mediaType"] == OCI_INDEX
    by_digest = {d["digest"]: d for d in doc["manifests"]}
    assert by_digest == {
        sha(bodies["sig"]): {"mediaType": OCI_MANIFEST, "digest": sha(bodies["sig"]),
                             "size": len(bodies["sig"]), "artifactType": "application/x.sig",
                             "annotations": {"kind": "signature"}},
        sha(bodies["sbom"]): {"mediaType": OCI_MANIFEST, "digest": sha(bodies["sbom"]),
                              "size": len(bodies["sbom"]), "artifactType": "application/x.sbom"},
        sha(bodies["index"]): {"mediaType": OCI_INDEX, "digest": sha(bodies["index"]),
                               "size": len(bodies["index"]),
                               "artifactType": "application/x.bundle"},
    }

    filtered = client.get(f"/v2/app/referrers/{subject}",
                          params={"artifactType": "application/x.sbom"})
    assert filtered.headers["OCI-Filters-Applied"] == "artifactType"
    assert [d["digest"] for d in filtered.json()["manifests"]] == [sha(bodies["sbom"])]

    # Deleting a referrer removes it from the list.
    assert client.delete(f"/v2/app/manifests/{sha(bodies['sbom'])}").status_code == 202
    left = client.get(f"/v2/app/referrers/{subject}").json()["manifests"]
    assert sha(bodies["sbom"]) not in {d["digest"] for d in left} and len(left) == 2


def test_referrers_of_unknown_subject_or_repository_is_empty(client: httpx.Client) -> None:
    for path in (f"/v2/app/referrers/{sha(b'x')}", f"/v2/never/pushed/referrers/{sha(b'x')}"):
        resp = client.get(path)
        assert resp.status_code == 200
        assert resp.headers["Content-Type"] == OCI_INDEX
        assert resp.json() == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    assert error_code(client.get("/v2/app/referrers/sha256:nothex")) == "DIGEST_INVALID"


def test_error_codes(client: httpx.Client) -> None:
    push_blob(client, "app", b"x")
    cases = [
        ("GET", "/v2/Bad/Name/tags/list", 400, "NAME_INVALID"),
        ("GET", "/v2/app/blobs/index.json/tags/list", 400, "NAME_INVALID"),
        ("GET", "/v2/missing/tags/list", 404, "NAME_UNKNOWN"),
        ("GET", f"/v2/missing/manifests/{sha(b'm')}", 404, "NAME_UNKNOWN"),
        ("GET", f"/v2/app/blobs/{sha(b'none')}", 404, "BLOB_UNKNOWN"),
        ("GET", "/v2/app/blobs/sha256:1234", 400, "DIGEST_INVALID"),
        ("GET", "/v2/app/manifests/sha256:totallywrong", 400, "DIGEST_INVALID"),
        ("GET", "/v2/app/manifests/nope", 404, "MANIFEST_UNKNOWN"),
        ("GET", "/v2/app/manifests/.INVALID", 404, "MANIFEST_UNKNOWN"),
        ("PUT", "/v2/app/blobs/uploads/" + "1" * 32 + "?digest=" + sha(b""), 404,
         "BLOB_UPLOAD_UNKNOWN"),
        ("POST", "/v2/app/blobs/uploads/?digest=sha512:" + "a" * 128, 400, "UNSUPPORTED"),
        ("POST", f"/v2/app/blobs/{sha(b'x')}", 405, "UNSUPPORTED"),
    ]
    for method, path, status, code in cases:
        resp = client.request(method, path)
        assert (resp.status_code, error_code(resp)) == (status, code), (method, path)
        assert resp.json()["errors"][0]["message"]


def test_range_requests(client: httpx.Client) -> None:
    data = bytes(range(100))
    digest = push_blob(client, "app", data)
    url = f"/v2/app/blobs/{digest}"
    cases = {"bytes=10-19": (10, 19), "bytes=90-": (90, 99), "bytes=-5": (95, 99),
             "bytes=95-500": (95, 99)}
    for header, (start, end) in cases.items():
        resp = client.get(url, headers={"Range": header})
        assert resp.status_code == 206, header
        assert resp.content == data[start:end + 1]
        assert resp.headers["Content-Range"] == f"bytes {start}-{end}/100"
        assert resp.headers["Content-Length"] == str(end - start + 1)
    resp = client.get(url, headers={"Range": "bytes=100-"})
    assert resp.status_code == 416
    assert resp.headers["Content-Range"] == "bytes */100"
    # Unsupported forms are ignored: the whole blob.
    resp = client.get(url, headers={"Range": "bytes=0-1,5-6"})
    assert resp.status_code == 200 and resp.content == data


def test_keep_alive_survives_errors_with_unread_bodies(reg: BackgroundRegistry) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", reg.port, timeout=10)
    try:
        conn.request("POST", "/v2/app/blobs/uploads/")
        resp = conn.getresponse()
        location = resp.getheader("Location")
        resp.read()
        assert resp.status == 202 and location
        # Out-of-order chunk: refused before the body is read, which must then be drained.
        conn.request("PATCH", location, body=b"x" * 5000, headers={"Content-Range": "10-5009"})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 416
        conn.request("PUT", "/v2/app/manifests/v1", body=b"junk",
                     headers={"Content-Type": OCI_MANIFEST})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 400
        conn.request("GET", "/v2/")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == b"{}"
    finally:
        conn.close()


def test_restart_keeps_content_and_rebuilds_referrers(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    with BackgroundRegistry(storage) as first, httpx.Client(base_url=first.url) as client:
        subject, bodies = _push_referrers(client)
        blob = push_blob(client, "other/repo", b"persisted")
        location = client.post("/v2/app/blobs/uploads/").headers["Location"]
        assert client.patch(location, content=b"half ").status_code == 202

    with BackgroundRegistry(storage) as second, httpx.Client(base_url=second.url) as client:
        assert client.get(f"/v2/other/repo/blobs/{blob}").content == b"persisted"
        assert client.get("/v2/app/manifests/v1").status_code == 200
        refs = client.get(f"/v2/app/referrers/{subject}").json()["manifests"]
        assert {d["digest"] for d in refs} == {sha(b) for b in bodies.values()}
        # An upload session started before the restart can be finished after it.
        resp = client.patch(location, content=b"done", headers={"Content-Range": "5-8"})
        assert resp.status_code == 202
        assert client.put(location, params={"digest": sha(b"half done")}).status_code == 201
        assert client.get(f"/v2/app/blobs/{sha(b'half done')}").content == b"half done"


def test_stop_closes_the_server(tmp_path: Path) -> None:
    reg = BackgroundRegistry(tmp_path / "s")
    with httpx.Client(base_url=reg.url) as client:
        assert client.get("/v2/").status_code == 200
        reg.stop()
        reg.stop()
        with pytest.raises(httpx.TransportError):
            client.get("/v2/")


def test_make_server_and_parse_address(tmp_path: Path) -> None:
    server = make_server(tmp_path / "s", "127.0.0.1", 0)
    try:
        assert server.server_address[1] > 0
        assert (tmp_path / "s" / "_uploads").is_dir()
    finally:
        server.server_close()
    assert parse_address("0.0.0.0:5000") == ("0.0.0.0", 5000)
    assert parse_address("[::1]:8080") == ("::1", 8080)
    with pytest.raises(ValueError):
        parse_address("localhost")
