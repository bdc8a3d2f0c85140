#!/usr/bin/env bash
# Makes the certificates of the benchmark's HTTPS upstream, fresh for each run:
#
#   bash bench/tls_certs.sh DIR
#
# DIR/ca.pem, ca.key          a CA ("mintproxy bench CA"), the one every proxy is told to trust
# DIR/server.pem, server.key  the backend's certificate: subjectAltName DNS:localhost, CA:FALSE,
#                             serverAuth, signed by that CA (server.pem holds the leaf alone)
# DIR/rogue.pem, rogue.key    a certificate for the same name, DNS:localhost, signed by another CA
#                             that nobody trusts (rogue-ca.pem): a proxy that verifies the
#                             upstream must refuse it, which run.sh checks for every proxy
#
# ECDSA P-256 keys, valid for 7 days from now. Needs openssl (1.1.1 or later).
set -euo pipefail
DIR=${1:?usage: tls_certs.sh DIR}
mkdir -p "$DIR"
cd "$DIR"

cat >server-ext.cnf <<'EOC'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost
EOC

ca() { # name subject
    openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -keyout "$1.key" -out "$1.pem" -days 7 -subj "$2" \
        -addext "basicConstraints = critical, CA:TRUE" -addext "keyUsage = critical, keyCertSign, cRLSign" 2>/dev/null
}
leaf() { # name ca-name: a localhost certificate signed by that CA
    openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -keyout "$1.key" -out "$1.csr" -subj "/CN=localhost" 2>/dev/null
    openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -set_serial "0x$(openssl rand -hex 8)" \
        -days 7 -extfile server-ext.cnf -out "$1.pem" 2>/dev/null
    rm -f "$1.csr"
}

ca ca "/CN=mintproxy bench CA"
leaf server ca
ca rogue-ca "/CN=mintproxy bench rogue CA"
leaf rogue rogue-ca
chmod 644 ./*.pem ./*.key # nginx workers (www-data) read the keys too; throwaway keys in a temp dir
openssl verify -CAfile ca.pem -verify_hostname localhost server.pem >/dev/null
if openssl verify -CAfile ca.pem rogue.pem >/dev/null 2>&1; then
    echo "tls_certs.sh: rogue.pem verifies against ca.pem" >&2
    exit 1
fi
