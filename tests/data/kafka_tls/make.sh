#!/bin/sh
# Test-only TLS material for tests/unit/test_kafka_security.py (and the SASL_SSL integration test):
# a CA, a broker certificate for broker.test / 127.0.0.1 and a client certificate, valid for 100 years.
# Nothing here protects anything; regenerate with: sh tests/data/kafka_tls/make.sh
set -eu
cd "$(dirname "$0")"
days=36500
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days $days -subj "/CN=regionguard test CA" 2>/dev/null
for who in broker client; do
  openssl req -newkey rsa:2048 -nodes -keyout $who.key -out $who.csr -subj "/CN=regionguard test $who" 2>/dev/null
done
printf 'subjectAltName=DNS:broker.test,IP:127.0.0.1\n' > broker.ext
printf 'extendedKeyUsage=clientAuth\n' > client.ext
for who in broker client; do
  openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $who.pem -days $days \
    -extfile $who.ext 2>/dev/null
done
# the client key again, encrypted (ssl.key.password: fixture-pass)
openssl pkcs8 -topk8 -in client.key -out client-encrypted.key -v2 aes-256-cbc -passout pass:fixture-pass
# the broker's PEM keystore for Apache Kafka (PKCS#8 key, then its certificate)
openssl pkcs8 -topk8 -nocrypt -in broker.key -out broker-pk8.key
cat broker-pk8.key broker.pem > broker-keystore.pem
rm -f ./*.csr ./*.ext ca.srl ca.key broker-pk8.key
