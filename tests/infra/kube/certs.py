"""Certificates and kubeconfigs for the test control plane (``cryptography``)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from . import paths


def _key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL
        if isinstance(key, rsa.RSAPrivateKey)
        else serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _cert(subject, issuer, pub, signer, *, ca=False, server=False, client=False, dns=(), ips=()):
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(pub)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=3650))
    )
    b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    if ca:
        b = b.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        b = b.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=True,
                key_cert_sign=False,
                crl_sign=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        ekus = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
            [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        )
        b = b.add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
    if dns or ips:
        b = b.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
            ),
            critical=False,
        )
    return b.sign(signer, hashes.SHA256())


def _newkey():
    return ec.generate_private_key(ec.SECP256R1())


def ensure_pki(pki: Path) -> dict[str, Path]:
    """Create CA, apiserver serving cert, SA key pair and client certs (once per state dir)."""
    pki.mkdir(parents=True, exist_ok=True)
    f = {
        k: pki / v
        for k, v in {
            "ca": "ca.crt",
            "ca_key": "ca.key",
            "apiserver": "apiserver.crt",
            "apiserver_key": "apiserver.key",
            "sa_key": "sa.key",
            "sa_pub": "sa.pub",
            "admin": "admin.crt",
            "admin_key": "admin.key",
            "kcm": "kcm.crt",
            "kcm_key": "kcm.key",
            "node": "node.crt",
            "node_key": "node.key",
            "operator": "operator.crt",
            "operator_key": "operator.key",
        }.items()
    }
    if all(p.exists() for p in f.values()):
        return f
    ca_key = _newkey()
    ca_name = _name("flyray-kube-ca")
    ca = _cert(ca_name, ca_name, ca_key.public_key(), ca_key, ca=True)
    f["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    f["ca_key"].write_bytes(_key_pem(ca_key))

    def issue(name, key_name, subject, **kw):
        k = _newkey()
        c = _cert(subject, ca_name, k.public_key(), ca_key, **kw)
        f[name].write_bytes(c.public_bytes(serialization.Encoding.PEM))
        f[key_name].write_bytes(_key_pem(k))

    issue(
        "apiserver",
        "apiserver_key",
        _name("kube-apiserver"),
        server=True,
        dns=[
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ],
        ips=["127.0.0.1", paths.APISERVER_SERVICE_IP, paths.BRIDGE_IP],
    )
    issue("admin", "admin_key", _name("flyray-admin", "system:masters"), client=True)
    issue("kcm", "kcm_key", _name("system:kube-controller-manager"), client=True)
    issue("node", "node_key", _name(f"system:node:{paths.NODE_NAME}", "system:nodes"), client=True)
    # The operator runs with cluster-admin rights via system:masters like a default Helm install's
    # ClusterRole would allow (simplest; its RBAC is not what these tests exercise).
    issue("operator", "operator_key", _name("kuberay-operator", "system:masters"), client=True)
    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    f["sa_key"].write_bytes(_key_pem(sa))
    f["sa_pub"].write_bytes(
        sa.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for p in f.values():
        if p.name.endswith(".key"):
            p.chmod(0o600)
    return f


def write_kubeconfig(path: Path, server: str, ca: Path, cert: Path, key: Path, user: str) -> Path:
    path.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: flyray
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: {user}
  user:
    client-certificate: {cert}
    client-key: {key}
contexts:
- name: flyray
  context:
    cluster: flyray
    user: {user}
    namespace: default
current-context: flyray
""")
    path.chmod(0o600)
    return path
