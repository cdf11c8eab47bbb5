"""An independent, stdlib-only Authenticode hash for catalog tests (not the project's PE layer).

Linear form: everything up to the certificate table except the CheckSum and the security
directory entry; an unsigned file is zero-padded to a multiple of 8 (as Windows and Wine do).
"""

from __future__ import annotations

import hashlib
import struct


def authentihash(data: bytes, algorithm: str) -> bytes:
    e_lfanew = struct.unpack_from("<I", data, 0x3C)[0]
    optional_header = e_lfanew + 24
    magic = struct.unpack_from("<H", data, optional_header)[0]
    checksum = optional_header + 64
    security_dir = optional_header + (96 if magic == 0x10B else 112) + 4 * 8
    cert_offset, cert_size = struct.unpack_from("<II", data, security_dir)
    signed = cert_offset != 0 and cert_size != 0
    end = cert_offset if signed else len(data)
    digest = hashlib.new(algorithm)
    digest.update(data[:checksum])
    digest.update(data[checksum + 4 : security_dir])
    digest.update(data[security_dir + 8 : end])
    if not signed:
        digest.update(b"\0" * ((8 - len(data) % 8) % 8))
    return digest.digest()
