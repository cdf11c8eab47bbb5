"""Property tests of the whole engine: mutated and truncated real files always give a report.

Whatever the bytes, `verify_bytes` returns a Report (a verdict), never raises, never hangs; a
file that still carries a certificate table is never reported `unsigned`.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codeintegrity.options import VerifyOptions
from codeintegrity.pe.layout import parse_pe
from codeintegrity.report import Report, Status
from codeintegrity.verify import verify_bytes

from .conftest import FIXTURES, SAMPLES

SOURCES = [
    (FIXTURES / "t64_nested_sha1+sha256ph.exe").read_bytes(),
    (FIXTURES / "t64_sha256_ph_ts.exe").read_bytes(),
    (FIXTURES / "fbx64_sbsign.efi").read_bytes(),
    (
        SAMPLES / "signed" / "pypi__pydivert-4.0.1-py3-none-win_amd64" / "WinDivert64.sys"
    ).read_bytes(),
]
SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _options(trust) -> VerifyOptions:
    return VerifyOptions(trust=trust, require_page_hashes="all", cert_padding_check=True)


@SETTINGS
@given(
    source=st.sampled_from(range(len(SOURCES))),
    edits=st.lists(
        st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8
    ),
)
def test_mutated_files_give_a_report(fixture_trust, source, edits):
    data = bytearray(SOURCES[source])
    for where, value in edits:
        data[int(where * len(data))] = value
    report = verify_bytes(bytes(data), _options(fixture_trust))
    assert isinstance(report, Report)
    assert report.status in set(Status)
    for finding in report.findings:
        assert finding.detail and isinstance(finding.detail, str)


@SETTINGS
@given(source=st.sampled_from(range(len(SOURCES))), keep=st.floats(0, 1))
def test_truncated_files_give_a_report(fixture_trust, source, keep):
    original = SOURCES[source]
    data = original[: int(keep * len(original))]
    report = verify_bytes(data, _options(fixture_trust))
    assert isinstance(report, Report)
    certdir = parse_pe(original).certdir_offset
    assert certdir is not None
    if certdir + 8 <= len(data) < len(original):
        # The directory still claims a certificate table that the cut made run past the end:
        # a damaged signature, never "unsigned".
        assert report.status is Status.MALFORMED


@SETTINGS
@given(garbage=st.binary(min_size=0, max_size=4096))
def test_random_bytes_are_malformed(fixture_trust, garbage):
    report = verify_bytes(b"MZ" + garbage, _options(fixture_trust))
    assert report.status in (Status.MALFORMED, Status.UNSIGNED, Status.INVALID)
