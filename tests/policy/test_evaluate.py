"""evaluate(report, policy) -> Decision, with Report values built by hand."""

from __future__ import annotations

import time

from codeintegrity.findings import Finding, FindingCode
from codeintegrity.options import VerifyOptions
from codeintegrity.policy.evaluate import apply_to_options, common_names, evaluate
from codeintegrity.policy.load import parse_policy
from codeintegrity.report import CatalogMatch, Check, Status

from .helpers import CA, LEAF, ROOT, cert, report, signature

C = FindingCode
DENIED_SHA256 = "c767a5895119154467ac3fce8e82c20e6538a4e54f6c109001c61f8abd58f9f8"
PAGE_SHA1 = "e083142033c9653977d319b3df4d2de369756138"

BLOCKLIST = parse_policy(
    f"""
name = "block"
id = "b1"
[deny]
hashes = [{{ hash = "{DENIED_SHA256.upper()}", name = "AsrDrv10.sys", scope = "kernel" }}]
page_hashes = ["{PAGE_SHA1}"]
file_hashes = ["{"22" * 32}"]
signers = [{{ tbs = "{CA.tbs_hash}", publisher = "Contoso, Ltd.", name = "Contoso" }}]
"""
)


def reason_codes(decision):
    return [f.code for f in decision.reasons]


def test_clean_valid_file_is_allowed():
    other = report(
        signatures=(signature(chain=(cert("CN=Other", "CN=Test CA,O=T", "dd" * 32), CA, ROOT)),)
    )
    decision = evaluate(other, BLOCKLIST)
    assert decision.allowed and decision.reasons == ()
    assert (decision.mode, decision.policy_name, decision.policy_id) == ("enforce", "block", "b1")


def test_authentihash_padded_unpadded_and_flat_all_match():
    signed_other = (signature(chain=(cert("CN=Other", "CN=X", "dd" * 32),)),)
    for kwargs in (
        {"authentihash": {"sha256": DENIED_SHA256}},
        {"authentihash": {"sha256": "33" * 32}, "unpadded": {"sha256": DENIED_SHA256}},
        {"flat": {"sha256": DENIED_SHA256}},  # LOLDrivers-style mix-up: flat hash in a hash rule
    ):
        decision = evaluate(report(signatures=signed_other, **kwargs), BLOCKLIST)
        assert reason_codes(decision) == [C.POLICY_DENIED_HASH], kwargs
        assert "AsrDrv10.sys" in decision.reasons[0].detail
        assert decision.reasons[0].event_id == 5038
        assert decision.enforced_denial


def test_padded_and_unpadded_match_report_once():
    same = {"sha256": DENIED_SHA256}
    decision = evaluate(
        report(authentihash=same, unpadded=same, signatures=(signature(chain=()),)), BLOCKLIST
    )
    assert reason_codes(decision) == [C.POLICY_DENIED_HASH]


def test_page_rules_match_only_the_first_page_hash():
    plain = (signature(chain=()),)
    assert evaluate(report(signatures=plain, first_page={"sha1": PAGE_SHA1}), BLOCKLIST).reasons
    as_image = report(signatures=plain, authentihash={"sha1": PAGE_SHA1})
    assert evaluate(as_image, BLOCKLIST).allowed


def test_kernel_scope_does_not_apply_to_user_mode_files():
    hashes = {"sha256": DENIED_SHA256}
    plain = (signature(chain=()),)
    assert evaluate(report(kernel=False, signatures=plain, authentihash=hashes), BLOCKLIST).allowed
    assert not evaluate(
        report(kernel=None, signatures=plain, authentihash=hashes), BLOCKLIST
    ).allowed


def test_denied_signer_needs_tbs_and_publisher():
    decision = evaluate(report(), BLOCKLIST)
    assert reason_codes(decision) == [C.POLICY_DENIED_SIGNER]
    assert decision.reasons[0].signature == 0 and "Contoso" in decision.reasons[0].detail
    other_leaf = cert("CN=Fabrikam,O=F", "CN=Test CA,O=T", "ee" * 32)
    assert evaluate(
        report(signatures=(signature(chain=(other_leaf, CA, ROOT)),)), BLOCKLIST
    ).allowed


def test_audit_mode_still_reports_denial():
    audit = parse_policy(f'mode = "audit"\n[deny]\nhashes = ["{DENIED_SHA256}"]\n')
    decision = evaluate(report(authentihash={"sha256": DENIED_SHA256}), audit)
    assert not decision.allowed
    assert decision.mode == "audit" and not decision.enforced_denial


def test_invalid_report_is_denied_with_its_errors():
    tampered = Finding(C.IMAGE_HASH_MISMATCH, "hash differs", signature=0)
    bad = report(status=Status.INVALID, findings=(tampered,), signatures=(signature(valid=False),))
    decision = evaluate(bad, parse_policy(""))
    assert decision.reasons == (tampered,)
    malformed = report(status=Status.MALFORMED, signatures=())
    assert reason_codes(evaluate(malformed, parse_policy(""))) == [C.IMAGE_MALFORMED]


def test_unsigned_driver_denied_unless_policy_allows_it():
    unsigned = report(status=Status.UNSIGNED, signatures=())
    assert reason_codes(evaluate(unsigned, parse_policy(""))) == [C.UNSIGNED_DRIVER]
    lax = parse_policy("drivers_must_be_signed = false")
    assert evaluate(unsigned, lax).allowed
    user = report(status=Status.UNSIGNED, signatures=(), kernel=False)
    assert evaluate(user, parse_policy("")).allowed


def test_unsigned_driver_finding_from_engine_is_not_duplicated():
    engine_says = Finding(C.UNSIGNED_DRIVER, "kernel driver unsigned")
    unsigned = report(status=Status.UNSIGNED, signatures=(), findings=(engine_says,))
    assert evaluate(unsigned, parse_policy("")).reasons == (engine_says,)


def test_page_hash_requirement():
    no_pages = report(signatures=(signature(page_hashes=Check.ABSENT),))
    policy = parse_policy('require_page_hashes = "drivers"')
    assert reason_codes(evaluate(no_pages, policy)) == [C.PAGE_HASHES_REQUIRED]
    assert evaluate(report(signatures=(signature(),)), policy).allowed
    user = report(kernel=False, signatures=(signature(page_hashes=Check.ABSENT),))
    assert evaluate(user, policy).allowed
    assert not evaluate(user, parse_policy('require_page_hashes = "all"')).allowed


ALLOW = parse_policy(
    f"""
[allow]
signers = [
  {{ tbs = "{ROOT.tbs_hash}", publisher = "Contoso, Ltd.", scope = "kernel" }},
  {{ publisher = "Fabrikam", scope = "user" }},
]
hashes = [{{ hash = "{"44" * 32}", scope = "kernel" }}]
"""
)


def test_allowlist_by_root_and_publisher():
    assert evaluate(report(), ALLOW).allowed
    stranger = cert("CN=Stranger", "CN=Test CA,O=T", "ee" * 32)
    decision = evaluate(report(signatures=(signature(chain=(stranger, CA, ROOT)),)), ALLOW)
    assert reason_codes(decision) == [C.POLICY_SIGNER_NOT_ALLOWED]
    assert "CN=Stranger" in decision.reasons[0].detail


def test_allowlist_ignores_invalid_signatures_and_accepts_allowed_hashes():
    invalid = report(status=Status.INVALID, signatures=(signature(valid=False),))
    assert C.POLICY_SIGNER_NOT_ALLOWED in reason_codes(evaluate(invalid, ALLOW))
    unsigned = report(status=Status.UNSIGNED, signatures=(), authentihash={"sha256": "44" * 32})
    # The hash satisfies the allowlist; an unsigned kernel driver still breaks the signing rule.
    assert reason_codes(evaluate(unsigned, ALLOW)) == [C.UNSIGNED_DRIVER]
    other = report(status=Status.UNSIGNED, signatures=(), authentihash={"sha256": "45" * 32})
    assert reason_codes(evaluate(other, ALLOW)) == [C.UNSIGNED_DRIVER, C.POLICY_SIGNER_NOT_ALLOWED]


def test_allowlist_scopes_and_rules_without_tbs():
    fabrikam = cert("CN=Fabrikam,O=F", "CN=Elsewhere", "ff" * 32)
    user_file = report(kernel=False, signatures=(signature(chain=(fabrikam,)),))
    assert evaluate(user_file, ALLOW).allowed
    assert not evaluate(report(kernel=False), ALLOW).allowed  # Contoso rule is kernel-only


def test_allowlist_counts_a_catalog_signature():
    unsigned = report(
        status=Status.VALID,
        signatures=(),
        catalog=CatalogMatch("x.cat", "tag", "sha256", signature()),
    )
    assert evaluate(unsigned, ALLOW).allowed


def test_eku_rules_need_eku_data_on_the_certificate():
    policy = parse_policy(
        '[allow]\nsigners = [{ publisher = "Contoso, Ltd.", eku = "1.3.6.1.4.1.311.10.3.5" }]'
    )
    assert C.POLICY_SIGNER_NOT_ALLOWED in reason_codes(evaluate(report(), policy))


def test_minimum_digest():
    policy = parse_policy('min_digest = "sha256"')
    sha1_only = report(signatures=(signature(digest="sha1"),))
    decision = evaluate(sha1_only, policy)
    assert reason_codes(decision) == [C.POLICY_WEAK_DIGEST]
    assert "sha1" in decision.reasons[0].detail
    dual = report(signatures=(signature(0, digest="sha1"), signature(1, digest="sha256")))
    assert evaluate(dual, policy).allowed
    unsigned_user = report(status=Status.UNSIGNED, kernel=False, signatures=())
    assert evaluate(unsigned_user, policy).allowed


def test_disallowed_certificate_from_the_policy():
    policy = parse_policy(f'[revocation]\ndisallowed = ["{CA.sha1}"]')
    decision = evaluate(report(), policy)
    assert reason_codes(decision) == [C.POLICY_CERT_DISALLOWED]
    assert decision.reasons[0].event_id == 6281
    by_tbs = parse_policy(f'[revocation]\ndisallowed = ["{LEAF.tbs_hash}"]')
    assert reason_codes(evaluate(report(), by_tbs)) == [C.POLICY_CERT_DISALLOWED]
    engine_found = Finding(C.POLICY_CERT_DISALLOWED, "engine", signature=0)
    already = report(status=Status.INVALID, findings=(engine_found,))
    assert evaluate(already, policy).reasons == (engine_found,)


def test_common_names_undo_rfc4514_escapes():
    assert common_names(LEAF) == ["Contoso, Ltd."]
    utf8 = cert("CN=Caf\\C3\\A9 \\+ Co,O=x", "CN=y", "00" * 20)
    assert common_names(utf8) == ["Café + Co"]
    assert common_names(cert("O=only", "CN=y", "00" * 20)) == []


def test_hash_needs_and_apply_to_options():
    image, page, flat = BLOCKLIST.hash_needs()
    assert image == {"sha256"} and page == {"sha1"} and flat == {"sha256"}
    base = VerifyOptions(require_page_hashes="all", extra_digests=frozenset({"sha1"}))
    options = apply_to_options(
        parse_policy('require_page_hashes = "drivers"\ndrivers_must_be_signed = false'), base
    )
    assert options.require_page_hashes == "all"  # the stricter one wins
    assert options.drivers_must_be_signed is False
    options = apply_to_options(BLOCKLIST, VerifyOptions(extra_digests=frozenset({"md5"})))
    assert options.extra_digests == {"md5"} | image
    assert options.first_page_digests == {"sha1"} and options.flat_digests == {"sha256"}
    assert options.revocation is None


def test_apply_to_options_loads_disallowed_into_revocation():
    policy = parse_policy(f'[revocation]\ndisallowed = ["{CA.sha1}"]')
    options = apply_to_options(policy, VerifyOptions())
    assert options.revocation is not None and CA.sha1 in options.revocation.disallowed


def test_evaluation_is_fast_against_a_large_policy():
    hashes = ",\n".join(f'"{n:064x}"' for n in range(2000))
    big = parse_policy(f"[deny]\nhashes = [{hashes}]\npage_hashes = [{hashes}]\n")
    probe = report(authentihash={"sha256": f"{1999:064x}"}, first_page={"sha256": "55" * 32})
    started = time.perf_counter()
    for _ in range(2000):
        decision = evaluate(probe, big)
    elapsed = time.perf_counter() - started
    assert reason_codes(decision) == [C.POLICY_DENIED_HASH]
    assert elapsed < 2.0, f"2000 evaluations took {elapsed:.2f} s"
