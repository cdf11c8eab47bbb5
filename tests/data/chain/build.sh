#!/usr/bin/env bash
# Chain-rule fixtures: small PKIs made with openssl 3.0 and PE files signed by osslsigncode 2.x.
# Every certificate but the "old" PKI has a fixed 2025-01-01 .. 2045-01-01 window; signing time
# 2026-01-01 (T0). The "old" PKI starts in 2005 so that a timestamp of 2009-06-01 can be valid.
# Output: tests/data/chain/*.exe, certs/*.pem (every certificate, for direct chain tests), and
# anchors.pem (the test roots). Keys are throwaway and kept out of the repository (work/).
set -euo pipefail
cd "$(dirname "$0")"
HERE=$PWD
BASE=$HERE/../fixtures_base/setuptools_cli32.exe
rm -rf work certs *.exe *.cat anchors.pem && mkdir -p work certs && cd work
START=20250101000000Z; END=20450101000000Z
T0=1767225600          # 2026-01-01T00:00:00Z
T2009=1243814400       # 2009-06-01T00:00:00Z
T2009JAN=1231977600    # 2009-01-15T00:00:00Z
cat > ca.cnf <<'CNF'
[ ca ]
default_ca = CA_default
[ CA_default ]
dir = .
database = $dir/index.txt
new_certs_dir = $dir/newcerts
serial = $dir/serial
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
[ policy_any ]
commonName = supplied
organizationName = optional
emailAddress = optional
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = unused
[ root ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[ root_pathlen0 ]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[ ica ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ ica_serverauth ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ ica_codesign ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
extendedKeyUsage = codeSigning, timeStamping
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ ica_notca ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyCertSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ ica_nc ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
nameConstraints = critical, permitted;email:example.com, permitted;otherName:1.3.6.1.4.1.311.20.2.3;UTF8:example.com
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ leaf ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = codeSigning
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ leaf_noeku ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ leaf_critical ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = codeSigning
1.3.6.1.4.1.55555.1 = critical, ASN1:NULL
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ leaf_email_ok ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = codeSigning
subjectAltName = email:signer@example.com, otherName:1.3.6.1.4.1.311.20.2.3;UTF8:signer@example.com
[ leaf_email_bad ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = codeSigning
subjectAltName = email:signer@evil.test
[ leaf_upn_bad ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = codeSigning
subjectAltName = otherName:1.3.6.1.4.1.311.20.2.3;UTF8:signer@evil.test
[ tsa ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = critical, timeStamping
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF
: > index.txt; echo 1000 > serial; mkdir -p newcerts

# key NAME SPEC   (SPEC: rsa:BITS | ec:CURVE)
key() {
  case $2 in
    rsa:*) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:${2#rsa:} -out $1.key 2>/dev/null ;;
    ec:*)  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:${2#ec:} -pkeyopt ec_param_enc:named_curve -out $1.key 2>/dev/null ;;
  esac
}
# root NAME CN EXT [START]
root() {
  key $1 rsa:2048
  openssl req -new -key $1.key -out $1.csr -subj "/CN=$2/O=codeintegrity chain fixtures" -config ca.cnf
  openssl ca -batch -selfsign -config ca.cnf -keyfile $1.key -in $1.csr -out $1.pem -notext \
    -startdate ${4:-$START} -enddate $END -extensions $3 2>/dev/null
}
# cert NAME CN ISSUER EXT KEYSPEC [MD] [START]
cert() {
  key $1 $5
  openssl req -new -key $1.key -out $1.csr -subj "/CN=$2/O=codeintegrity chain fixtures" -config ca.cnf
  openssl ca -batch -config ca.cnf -cert $3.pem -keyfile $3.key -in $1.csr -out $1.pem -notext \
    -md ${6:-sha256} -startdate ${7:-$START} -enddate $END -extensions $4 2>/dev/null
}
# sign OUT LEAF CHAIN... (the signature carries leaf + chain, not the root)
sign() {
  local out=$1 leaf=$2; shift 2
  cat $leaf.pem "${@/%/.pem}" > $out.chain.pem
  osslsigncode sign -certs $out.chain.pem -key $leaf.key -h sha256 -n "chain fixture" \
    -time $T0 -in $BASE -out $HERE/$out.exe >/dev/null
}

root root   "Chain Test Root"        root
root root0  "Chain Test Root pathlen 0" root_pathlen0
root oldroot "Chain Test Old Root"   root 20050101000000Z

cert ica         "Chain Test CA"                 root  ica            rsa:2048
cert ica_sa      "Chain Test CA serverAuth only" root  ica_serverauth rsa:2048
cert ica_cs      "Chain Test CA codeSigning"     root  ica_codesign   rsa:2048
cert ica_notca   "Chain Test CA:FALSE issuer"    root  ica_notca      rsa:2048
cert ica_p0      "Chain Test CA under pathlen 0" root0 ica            rsa:2048
cert ica_nc      "Chain Test CA name-constrained" root ica_nc         rsa:2048

cert leaf         "Chain Test Publisher"                 ica       leaf          rsa:2048
cert leaf_noeku   "Chain Test Publisher without EKU"     ica       leaf_noeku    rsa:2048
cert leaf_sa      "Chain Test Publisher under serverAuth CA" ica_sa leaf         rsa:2048
cert leaf_cs      "Chain Test Publisher under codeSigning CA" ica_cs leaf        rsa:2048
cert leaf_notca   "Chain Test Publisher under CA:FALSE"  ica_notca leaf          rsa:2048
cert leaf_p0      "Chain Test Publisher too deep"        ica_p0    leaf          rsa:2048
cert leaf_512     "Chain Test Publisher 512-bit"         ica       leaf          rsa:512
cert leaf_1024    "Chain Test Publisher 1024-bit"        ica       leaf          rsa:1024
cert leaf_md5     "Chain Test Publisher MD5-signed"      ica       leaf          rsa:2048 md5
cert leaf_sha1    "Chain Test Publisher SHA1-signed"     ica       leaf          rsa:2048 sha1
cert leaf_p256    "Chain Test Publisher P-256"           ica       leaf          ec:P-256
cert leaf_k256    "Chain Test Publisher secp256k1"       ica       leaf          ec:secp256k1
cert leaf_crit    "Chain Test Publisher unknown critical" ica      leaf_critical rsa:2048
cert leaf_future  "Chain Test Publisher not yet valid"   ica       leaf          rsa:2048 sha256 20300101000000Z
cert leaf_nc_none "Chain Test Publisher constrained, no email" ica_nc leaf       rsa:2048
cert leaf_nc_ok   "Chain Test Publisher constrained, good names" ica_nc leaf_email_ok rsa:2048
cert leaf_nc_mail "Chain Test Publisher constrained, bad email" ica_nc leaf_email_bad rsa:2048
cert leaf_nc_upn  "Chain Test Publisher constrained, bad UPN"   ica_nc leaf_upn_bad   rsa:2048
# the "old" PKI: a 512-bit publisher and a TSA valid in 2009
cert oldica      "Chain Test Old CA"                     oldroot   ica           rsa:2048 sha256 20050101000000Z
cert oldleaf_512 "Chain Test Old Publisher 512-bit"      oldica    leaf          rsa:512  sha256 20050101000000Z
cert oldleaf_md5 "Chain Test Old Publisher MD5-signed"   oldica    leaf          rsa:2048 md5    20050101000000Z
cert oldtsa      "Chain Test Old TSA"                    oldica    tsa           rsa:2048 sha256 20050101000000Z
cert tsa_sa      "Chain Test TSA under serverAuth CA"    ica_sa    tsa           rsa:2048

sign eku_issuer_serverauth leaf_sa     ica_sa
sign eku_issuer_codesign   leaf_cs     ica_cs
sign eku_none              leaf_noeku  ica
sign valid                 leaf        ica
sign weak_rsa512           leaf_512    ica
sign rsa1024               leaf_1024   ica
sign md5_cert              leaf_md5    ica
sign sha1_cert             leaf_sha1   ica
sign ecdsa_p256            leaf_p256   ica
sign ecdsa_secp256k1       leaf_k256   ica
sign issuer_not_ca         leaf_notca  ica_notca
sign pathlen_exceeded      leaf_p0     ica_p0
sign critical_unknown      leaf_crit   ica
sign not_yet_valid         leaf_future ica
sign nc_no_names           leaf_nc_none ica_nc
sign nc_good_names         leaf_nc_ok   ica_nc
sign nc_bad_email          leaf_nc_mail ica_nc
sign nc_bad_upn            leaf_nc_upn  ica_nc
# catalog signers: osslsigncode's makecat test catalog, signed under the restricted / plain CA
cat_sign() { # OUT LEAF CHAIN
  cat $2.pem $3.pem > $1.chain.pem
  osslsigncode sign -certs $1.chain.pem -key $2.key -h sha256 -time $T0 \
    -in $HERE/../thirdparty/osslsigncode/unsigned.cat -out $HERE/$1.cat >/dev/null
}
cat_sign catalog_eku_issuer_serverauth leaf_sa ica_sa
cat_sign catalog_valid                 leaf    ica
# timestamped in 2009 by a TSA of the old PKI: the pre-2010 weak-key and pre-2009-03 MD5 exemptions
tsa_sign() { # OUT LEAF CHAIN TSA TSACHAIN TIME
  cat $2.pem $3.pem > $1.chain.pem; cat $4.pem $5.pem > $1.tsa.pem
  osslsigncode sign -certs $1.chain.pem -key $2.key -h sha256 -n "chain fixture" -time $6 \
    -TSA-certs $1.tsa.pem -TSA-key $4.key -TSA-time $6 -in $BASE -out $HERE/$1.exe >/dev/null
}
tsa_sign ts2009_weak_rsa512 oldleaf_512 oldica oldtsa oldica $T2009
tsa_sign ts2009_md5_cert    oldleaf_md5 oldica oldtsa oldica $T2009
tsa_sign ts2009jan_md5_cert oldleaf_md5 oldica oldtsa oldica $T2009JAN
tsa_sign ts_tsa_eku_restricted leaf    ica    tsa_sa ica_sa $T0

for c in *.pem; do case $c in *.chain.pem|*.tsa.pem) ;; *) cp $c ../certs/ ;; esac; done
cat root.pem root0.pem oldroot.pem > ../anchors.pem
cd .. && rm -rf work
ls -la *.exe *.cat | awk '{print $5, $9}'
