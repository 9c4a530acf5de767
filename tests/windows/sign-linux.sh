#!/usr/bin/env bash
# Test-sign the cross-built driver on Linux, for a Windows test VM in test-signing mode.
#
#   tests/windows/sign-linux.sh [UNSIGNED.sys]      (default: target/cross/stagedrv.sys)
#
# 1. Once, under target/signing/: a self-signed code-signing certificate made with
#    openssl (RSA 3072, SHA-256, EKU codeSigning, CN "stagedrv Test Signing (do not
#    trust)"), kept as
#      stagedrv-test.key  private key (PEM, mode 0600)
#      stagedrv-test.crt  certificate (PEM; the CA file for `osslsigncode verify`)
#      stagedrv-test.cer  certificate (DER; import into LocalMachine\Root and
#                         \TrustedPublisher on the VM: tests/windows/enable-test-signing.ps1)
#      stagedrv-test.pfx  key + certificate for osslsigncode (empty password: a test key)
#    Later runs reuse it; it is made again only when a file is missing, the key does not
#    match the certificate, or the certificate expires within 30 days.
# 2. Signs the image with osslsigncode: Authenticode, SHA-256, signature embedded in the
#    PE (what a service created with sc.exe needs: no INF, no catalog). The output is a
#    separate file, target/cross/stagedrv-signed.sys; the unsigned build output is left
#    as it is, so tests/cross/build-sys.sh keeps comparing against its own copy. Copy
#    the signed file to the VM (install.ps1 installs it as
#    %SystemRoot%\System32\drivers\stagedrv.sys). The signature is not timestamped
#    (no network): irrelevant for test signing.
#    Signing is skipped when neither the unsigned image nor the certificate changed
#    since the last run (a stamp file records both); every run verifies.
# 3. Verifies: `osslsigncode verify` with the test certificate as the only CA must report
#    the signature valid, and tests/cross/check_image.py must still pass on the signed
#    image. About the PE checksum: Windows checks it when it loads a driver, and it
#    covers the whole file -- the certificate table included -- so it can only be
#    computed after the signature is embedded. osslsigncode does recompute it when it
#    writes the signature (the Authenticode digest excludes the checksum field, so this
#    does not invalidate the signature); check_image.py would catch it if it did not.
# 4. Prints the signer and the SHA-256 of the signed image.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

unsigned=${1:-target/cross/stagedrv.sys}
signed=target/cross/stagedrv-signed.sys
stamp=$signed.inputs
dir=target/signing
name=stagedrv-test
subject="stagedrv Test Signing (do not trust)"
python=.venv/bin/python

tests/cross/ensure-apt.sh openssl osslsigncode
[[ -f $unsigned ]] || { echo "sign-linux: no $unsigned: build it first (tests/cross/build-sys.sh)" >&2; exit 1; }
[[ -x $python ]] || { echo "sign-linux: no $python: run tests/all.sh once (its 'python venv' stage makes it)" >&2; exit 1; }

# --- 1. the test certificate ------------------------------------------------------
cert_usable() {
    local f
    for f in key crt cer pfx; do [[ -s $dir/$name.$f ]] || return 1; done
    openssl x509 -in "$dir/$name.crt" -noout -checkend $((30 * 24 * 3600)) >/dev/null || return 1
    [[ "$(openssl x509 -in "$dir/$name.crt" -noout -pubkey)" == "$(openssl pkey -in "$dir/$name.key" -pubout)" ]]
}

if cert_usable; then
    echo "sign-linux: reusing the test certificate in $dir"
else
    echo "sign-linux: making a test certificate in $dir"
    tmp=$dir.tmp
    rm -rf "$tmp"
    mkdir -p "$tmp"
    cat >"$tmp/req.cnf" <<EOF
[req]
distinguished_name = dn
x509_extensions = ext
prompt = no
[dn]
CN = $subject
[ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = codeSigning
subjectKeyIdentifier = hash
EOF
    (umask 077 && openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out "$tmp/$name.key")
    openssl req -new -x509 -config "$tmp/req.cnf" -key "$tmp/$name.key" -sha256 -days 1825 -out "$tmp/$name.crt"
    openssl x509 -in "$tmp/$name.crt" -outform DER -out "$tmp/$name.cer"
    openssl pkcs12 -export -inkey "$tmp/$name.key" -in "$tmp/$name.crt" -name "$subject" \
        -passout pass: -out "$tmp/$name.pfx"
    rm "$tmp/req.cnf"
    rm -rf "$dir"
    mv "$tmp" "$dir"
fi

# --- 2. sign ------------------------------------------------------------------------
cert_sha256=$(openssl x509 -in "$dir/$name.crt" -noout -fingerprint -sha256 | cut -d= -f2 | tr -d :)
want="unsigned=$(sha256sum "$unsigned" | cut -d' ' -f1) cert=$cert_sha256 tool=$(osslsigncode --version 2>&1 | head -n1)"
if [[ -f $signed && "$(cat "$stamp" 2>/dev/null)" == "$want" ]]; then
    echo "sign-linux: $signed is up to date (same image, same certificate)"
else
    rm -f "$stamp" "$signed.tmp"
    osslsigncode sign -pkcs12 "$dir/$name.pfx" -pass '' -h sha256 -n stagedrv \
        -in "$unsigned" -out "$signed.tmp" >/dev/null
    mv "$signed.tmp" "$signed"
    echo "$want" >"$stamp"
    echo "sign-linux: signed $unsigned -> $signed"
fi

# --- 3. verify ------------------------------------------------------------------------
if ! report=$(osslsigncode verify -in "$signed" -CAfile "$dir/$name.crt" 2>&1) ||
    ! grep -qx 'Signature verification: ok' <<<"$report"; then
    printf '%s\n' "$report" >&2
    echo "sign-linux: osslsigncode verify did not accept $signed" >&2
    exit 1
fi
echo "sign-linux: osslsigncode verify: Signature verification: ok ($(grep -m1 '^PE checksum' <<<"$report" | tr -s ' '))"
"$python" tests/cross/check_image.py "$signed"

# --- 4. report ------------------------------------------------------------------------
echo "sign-linux: signer      $(openssl x509 -in "$dir/$name.crt" -noout -subject -nameopt RFC2253 | sed 's/^subject=//')"
echo "sign-linux: valid until $(openssl x509 -in "$dir/$name.crt" -noout -enddate | cut -d= -f2)"
echo "sign-linux: thumbprint  $(openssl x509 -in "$dir/$name.crt" -noout -fingerprint -sha1 | cut -d= -f2 | tr -d :) (SHA-1, as Windows shows it)"
echo "sign-linux: certificate $dir/$name.cer (DER, for the VM)"
echo "sign-linux: sha256      $(sha256sum "$signed" | cut -d' ' -f1)  $signed"
