# OpenBao for compose/compose.yaml: file storage, TLS with the certificates from
# scripts/compose-certs. Initialise and unseal it once (bao operator init), then enable
# the database, ssh and approle engines as docs/credentials.md describes.
storage "file" {
  path = "/openbao/data"
}
listener "tcp" {
  address       = "0.0.0.0:8200"
  tls_cert_file = "/etc/openbao/certs/openbao.pem"
  tls_key_file  = "/etc/openbao/certs/openbao-key.pem"
}
api_addr = "https://openbao:8200"
disable_mlock = false
