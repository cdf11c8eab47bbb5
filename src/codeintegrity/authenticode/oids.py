"""Object identifiers of Authenticode, CMS and the EKUs Code Integrity cares about.

Kept as plain dotted strings (no asn1crypto import) so every layer can use them cheaply.
"""

from __future__ import annotations

# --- content types -----------------------------------------------------------------------
SIGNED_DATA = "1.2.840.113549.1.7.2"
SPC_INDIRECT_DATA = "1.3.6.1.4.1.311.2.1.4"
SPC_PE_IMAGE_DATA = "1.3.6.1.4.1.311.2.1.15"
CTL = "1.3.6.1.4.1.311.10.1"  # szOID_CTL: the eContentType of catalog files
TST_INFO = "1.2.840.113549.1.9.16.1.4"  # id-ct-TSTInfo (RFC 3161)

# --- attributes ----------------------------------------------------------------------------
CONTENT_TYPE = "1.2.840.113549.1.9.3"
MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
SIGNING_TIME = "1.2.840.113549.1.9.5"
COUNTER_SIGNATURE = "1.2.840.113549.1.9.6"  # PKCS#9 legacy timestamp
RFC3161_COUNTER_SIGNATURE = "1.3.6.1.4.1.311.3.3.1"
NESTED_SIGNATURE = "1.3.6.1.4.1.311.2.4.1"
SPC_SP_OPUS_INFO = "1.3.6.1.4.1.311.2.1.12"
SPC_STATEMENT_TYPE = "1.3.6.1.4.1.311.2.1.11"

# --- page hashes (SpcSerializedObject inside SpcPeImageData.file) --------------------------
PAGE_HASH_CLASS_ID = bytes.fromhex("a6b586d5b4a12466ae05a217da8e60d6")
PAGE_HASHES_V1 = "1.3.6.1.4.1.311.2.3.1"  # SHA-1 table
PAGE_HASHES_V2 = "1.3.6.1.4.1.311.2.3.2"  # SHA-256 table
PAGE_HASH_ALGORITHMS = {PAGE_HASHES_V1: "sha1", PAGE_HASHES_V2: "sha256"}

# --- extended key usages -------------------------------------------------------------------
EKU_CODE_SIGNING = "1.3.6.1.5.5.7.3.3"
EKU_TIME_STAMPING = "1.3.6.1.5.5.7.3.8"
EKU_LIFETIME_SIGNING = "1.3.6.1.4.1.311.10.3.13"
EKU_ANY = "2.5.29.37.0"

# --- digest algorithms: OID -> hashlib name, and the digest size ----------------------------
DIGEST_OIDS: dict[str, str] = {
    "1.2.840.113549.2.5": "md5",
    "1.3.14.3.2.26": "sha1",
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
}
DIGEST_SIZES: dict[str, int] = {"md5": 16, "sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}

# Signature algorithms whose hash is implied by the OID (RSA, ECDSA, DSA "with" forms).
SIGNATURE_HASH_OIDS: dict[str, str] = {
    "1.2.840.113549.1.1.4": "md5",
    "1.2.840.113549.1.1.5": "sha1",
    "1.2.840.113549.1.1.11": "sha256",
    "1.2.840.113549.1.1.12": "sha384",
    "1.2.840.113549.1.1.13": "sha512",
    "1.3.14.3.2.29": "sha1",
    "1.2.840.10045.4.1": "sha1",
    "1.2.840.10045.4.3.2": "sha256",
    "1.2.840.10045.4.3.3": "sha384",
    "1.2.840.10045.4.3.4": "sha512",
    "1.2.840.10040.4.3": "sha1",
    "2.16.840.1.101.3.4.3.2": "sha256",
}
