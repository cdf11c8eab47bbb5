"""Bad input never escapes as anything but PolicyError (no tracebacks, no hangs)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codeintegrity.errors import PolicyError
from codeintegrity.policy.load import parse_policy
from codeintegrity.policy.loldrivers import import_loldrivers
from codeintegrity.policy.wdac import import_wdac

from ..conftest import DATA
from .test_load import GOOD
from .test_wdac import MINIMAL

CSV_HEAD = (DATA / "policy" / "loldrivers-drivers.csv").read_bytes()[:6000]
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def mutate(base: bytes, cuts: list[tuple[int, int]]) -> bytes:
    data = bytearray(base)
    for position, value in cuts:
        if data:
            data[position % len(data)] = value
    return bytes(data)


edits = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6)


def _policy_error_only(call) -> None:
    try:
        call()
    except PolicyError as exc:
        assert "\n" not in str(exc)


@FAST
@given(edits, st.integers(0, len(GOOD)))
def test_policy_loader_mutations(cuts, length):
    data = mutate(GOOD.encode(), cuts)[:length]
    text = data.decode("utf-8", errors="replace")
    _policy_error_only(lambda: parse_policy(text, source="f.toml"))


@FAST
@given(st.text(max_size=300))
def test_policy_loader_random_text(text):
    _policy_error_only(lambda: parse_policy(text))


@FAST
@given(edits, st.integers(0, len(MINIMAL)))
def test_wdac_mutations(cuts, length):
    data = mutate(MINIMAL.encode(), cuts)[:length]
    _policy_error_only(lambda: import_wdac(data, source="x.xml"))


@FAST
@given(edits, st.integers(0, len(CSV_HEAD)))
def test_loldrivers_mutations(cuts, length):
    data = mutate(CSV_HEAD, cuts)[:length]
    _policy_error_only(lambda: import_loldrivers(data, source="x.csv"))


@FAST
@given(
    st.recursive(
        st.none() | st.integers() | st.text(max_size=20),
        lambda c: (
            st.lists(c)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "Id",
                        "Tags",
                        "KnownVulnerableSamples",
                        "Authentihash",
                        "SHA1",
                        "SHA256",
                        "MD5",
                    ]
                ),
                c,
            )
        ),
        max_leaves=20,
    )
)
def test_loldrivers_json_shapes(document):
    import json

    _policy_error_only(lambda: import_loldrivers(json.dumps([document]).encode()))
