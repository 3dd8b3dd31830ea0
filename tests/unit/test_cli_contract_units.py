"""The library pieces behind the CLI's contract (issue 9), without servers: the exit-code
scheme on the error classes, secret redaction in ``--debug`` lines, the loopback rule's
host test, host-only references, semver ranges, addresses and ``--provider``."""

from __future__ import annotations

import io
import logging

import pytest

from ocigitops import exitcodes, httplog
from ocigitops.errors import (
    AuthenticationError,
    ClusterUnreachableError,
    DeadlineExceededError,
    InvalidAddressError,
    InvalidReferenceError,
    NotFoundError,
    OcigitopsError,
    PermissionDeniedError,
    RegistryError,
    RegistryUnreachableError,
    UsageError,
)
from ocigitops.options import RegistryOptions
from ocigitops.puller.kube import KubeError
from ocigitops.reference import is_loopback, parse_reference
from ocigitops.regserver import parse_address
from ocigitops.tags import check_semver_range

pytestmark = pytest.mark.unit


def test_exit_codes_of_the_error_classes() -> None:
    assert OcigitopsError("x").exit_code == exitcodes.FAILURE == 3
    assert RegistryError("x").exit_code == exitcodes.FAILURE
    assert UsageError("x").exit_code == InvalidReferenceError("x").exit_code == 2
    assert NotFoundError("x").exit_code == exitcodes.NOT_FOUND == 4
    assert AuthenticationError("x").exit_code == PermissionDeniedError("x").exit_code == 5
    assert RegistryUnreachableError("x").exit_code == exitcodes.UNREACHABLE == 6
    assert ClusterUnreachableError("x").exit_code == DeadlineExceededError("x").exit_code == 6
    assert KubeError("x", status=404).exit_code == 4
    assert KubeError("x", status=403).exit_code == 5
    assert KubeError("x", status=422).exit_code == 3
    assert {code for code, _ in exitcodes.TABLE} == {0, 1, 2, 3, 4, 5, 6, 130}


def test_redaction() -> None:
    assert httplog.redact_header("Authorization", "Basic dXNlcjpwYXNz") == "Basic <redacted>"
    assert httplog.redact_header("authorization", "Bearer abc.def") == "Bearer <redacted>"
    assert httplog.redact_header("Cookie", "session=1") == "<redacted>"
    assert httplog.redact_header("Content-Type", "application/json") == "application/json"
    url = httplog.redact_url("https://u:pw@auth.example/token?scope=repo:x:pull&token=t1"
                             "&password=p&service=s")
    assert "pw" not in url and "t1" not in url and "=p&" not in url
    assert url.startswith("https://auth.example/token?scope=repo")


def test_debug_lines_redact_even_what_slips_into_a_message() -> None:
    out = io.StringIO()
    httplog.enable_debug(out)
    try:
        logging.getLogger("ocigitops.registry").debug("sent Authorization: Basic c2VjcmV0")
        logging.getLogger("ocigitops.http").debug("x proxy-authorization: Bearer tok; y")
    finally:
        for name in httplog.DEBUG_LOGGERS:
            logger = logging.getLogger(name)
            logger.handlers.clear()
            logger.setLevel(logging.NOTSET)
            logger.propagate = True
    text = out.getvalue()
    assert "c2VjcmV0" not in text and "tok" not in text, text
    assert "debug: sent Authorization: Basic <redacted>" in text


@pytest.mark.parametrize("host,loopback", [
    ("localhost", True), ("localhost:5000", True), ("LOCALHOST:1", True),
    ("127.0.0.1:5000", True), ("127.1.2.3", True), ("[::1]:5000", True), ("::1", True),
    ("ghcr.io", False), ("10.0.0.1:5000", False), ("localhost.example.com", False),
    ("127.0.0.1.nip.io:5000", False), ("[::2]:5000", False),
])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("text", ["oci://127.0.0.1:5000", "oci://ghcr.io", "localhost:5000",
                                  "oci://[::1]:5000/"])
def test_a_host_without_a_repository_is_refused(text: str) -> None:
    with pytest.raises(InvalidReferenceError, match="but no repository"):
        parse_reference(text)


def test_docker_hub_short_names_still_parse() -> None:
    assert parse_reference("nginx").name == "docker.io/library/nginx"
    assert parse_reference("redis:7").tag == "7"


def test_semver_ranges() -> None:
    for good in (">=1.0.0 <2.0.0", "1.x", "~1.2", "^0.1", "*", "1.2.3 || 2.x", ">=1.0.0-0"):
        assert check_semver_range(good) == good
    for bad in ("garbage", "", ">=1.0.0 <two"):
        with pytest.raises(UsageError, match="invalid semver range"):
            check_semver_range(bad)


def test_addresses() -> None:
    assert parse_address("0.0.0.0:5000") == ("0.0.0.0", 5000)
    assert parse_address("[::1]:5000") == ("::1", 5000)
    for bad in ("0.0.0.0:abc", "nonsense", "127.0.0.1:99999"):
        with pytest.raises(InvalidAddressError, match="HOST:PORT"):
            parse_address(bad)
    with pytest.raises(ValueError):  # still a ValueError for callers that caught that
        parse_address("x")


def test_cloud_providers_fail_clearly() -> None:
    RegistryOptions(provider="generic").client()  # made, never opened
    for provider in ("aws", "azure", "gcp"):
        with pytest.raises(OcigitopsError, match=f"--provider {provider} is not implemented"):
            RegistryOptions(provider=provider).client()
    with pytest.raises(UsageError, match="use one of generic, aws, azure, gcp"):
        RegistryOptions(provider="oracle").client()
