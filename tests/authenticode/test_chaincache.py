"""Chains validated in one process, taught to another: the same verdicts, no validation."""

from __future__ import annotations

import pickle
from collections.abc import Iterator

import pytest

from codeintegrity.authenticode import certcache, chaincache
from codeintegrity.authenticode.trust import TrustStore
from codeintegrity.options import VerifyOptions
from codeintegrity.verify import verify_path

from .conftest import FIXTURES
from .test_certcache import FILES, SIGNED_2030


def _cold() -> None:
    certcache.clear()
    chaincache.clear()


@pytest.fixture
def sharing() -> Iterator[None]:
    _cold()
    chaincache.share()
    try:
        yield
    finally:
        chaincache.share(False)
        _cold()


def _reports(options: VerifyOptions) -> list[dict]:
    return [verify_path(FIXTURES / name, options).to_dict() for name in FILES]


def test_a_cold_process_taught_the_news_judges_alike_without_validating(
    sharing: None, pki_store: TrustStore
):
    options = VerifyOptions(trust=pki_store, at=SIGNED_2030)
    first = _reports(options)
    validated = chaincache.stats()["misses"]
    news = chaincache.take_news()
    assert validated > 0 and len(news) == validated  # every chain here is valid: all travel
    assert chaincache.take_news() == []  # taken once
    assert {item.ok for item in news} == {True}
    # Another process: nothing cached, the news arrives through a pipe (pickled).
    _cold()
    chaincache.learn(pickle.loads(pickle.dumps(news)))
    assert _reports(options) == first
    assert chaincache.stats()["misses"] == 0
    # It validated nothing, so it has nothing to tell.
    assert chaincache.take_news() == []


def test_news_of_a_chain_known_already_changes_nothing(sharing: None, pki_store: TrustStore):
    options = VerifyOptions(trust=pki_store, at=SIGNED_2030)
    verify_path(FIXTURES / "t64_sha256.exe", options)
    news = chaincache.take_news()
    assert news
    known = chaincache.lookup(news[0].key, SIGNED_2030)
    chaincache.learn(news)
    chaincache.learn(news)
    assert chaincache.lookup(news[0].key, SIGNED_2030) is known
    assert len(chaincache._success[news[0].key]) == 1


def test_a_timeless_failure_travels_and_a_moment_bound_one_does_not(
    sharing: None, pki_store: TrustStore
):
    # No anchor issued this chain: untrusted at every moment (travels). The same file judged
    # after its certificates expired fails for that moment only (stays home).
    verify_path(FIXTURES / "t64_sha256.exe", VerifyOptions(trust=TrustStore.empty()))
    untrusted = chaincache.take_news()
    assert [(item.ok, item.timeless, item.window) for item in untrusted] == [(False, True, None)]
    from .test_certcache import AFTER_EXPIRY

    verify_path(FIXTURES / "t64_sha256.exe", VerifyOptions(trust=pki_store, at=AFTER_EXPIRY))
    assert chaincache.stats()["misses"] == 2 and chaincache.take_news() == []


def test_a_process_that_does_not_share_records_nothing(pki_store: TrustStore):
    _cold()
    verify_path(FIXTURES / "t64_sha256.exe", VerifyOptions(trust=pki_store, at=SIGNED_2030))
    assert chaincache.stats()["misses"] == 1 and chaincache.take_news() == []
