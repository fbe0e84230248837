"""`scripts/local-cluster up --tls`: a throw-away CA and one server certificate for 127.0.0.1 and
localhost, made with the openssl CLI in DIR/tls/, the InstanceConfig sections that use them (the
API over HTTPS with optional client certificates, Postgres with `ssl = on` and replication with
`sslmode=verify-full`), and this script's own HTTPS client trusting that CA.

Why the openssl CLI and not a subcommand of the binary: it is the standard tool for this, on
every machine that has Postgres, and three commands make the set. A helper in `instance-manager`
would put certificate generation (rcgen, today confined to the `testkit` feature) into the
production binary for the sake of a throw-away development CA, which no pod ever needs.

Python 3 standard library only. Functions that can fail raise `Failure(message, hint)`.
"""

import os
import shutil
import ssl
import subprocess
import urllib.request

from pgwarden_local import Failure

TLS_DIR = "tls"
DAYS = 90


def tls_dir(cluster_dir):
    return os.path.join(cluster_dir, TLS_DIR)


def ca_file(cluster_dir):
    """The CA clients verify the API and Postgres with (`--ca-file`, `sslrootcert`)."""
    return os.path.join(tls_dir(cluster_dir), "ca.crt")


def cert_files(cluster_dir):
    d = tls_dir(cluster_dir)
    return os.path.join(d, "tls.crt"), os.path.join(d, "tls.key"), ca_file(cluster_dir)


def _openssl(args, cwd):
    try:
        res = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise Failure("--tls needs the openssl command, which is not on PATH",
                      "install it (apt-get install openssl)") from None
    if res.returncode != 0:
        raise Failure(f"openssl {args[0]} failed: {res.stderr.strip()[-300:]}")


def generate(cluster_dir):
    """Creates DIR/tls/{ca.crt,ca.key,tls.crt,tls.key} unless ca.crt exists (running managers use
    the files; delete DIR/tls and `stop`/`start` the instances for new ones)."""
    d = tls_dir(cluster_dir)
    if os.path.exists(ca_file(cluster_dir)):
        return
    if shutil.which("openssl") is None:
        raise Failure("--tls needs the openssl command, which is not on PATH", "install it (apt-get install openssl)")
    os.makedirs(d, mode=0o700, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    _openssl(["req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt.tmp", "-days", str(DAYS),
              "-subj", "/CN=pgwarden local-cluster CA",
              "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"], d)
    _openssl(["req", *ec, "-keyout", "tls.key", "-out", "tls.csr", "-subj", "/CN=localhost"], d)
    with open(os.path.join(d, "server.ext"), "w") as f:
        f.write("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\n")
    _openssl(["x509", "-req", "-in", "tls.csr", "-CA", "ca.crt.tmp", "-CAkey", "ca.key", "-set_serial",
              "0x" + os.urandom(8).hex(), "-days", str(DAYS), "-extfile", "server.ext", "-out", "tls.crt"], d)
    for name in ("tls.csr", "server.ext"):
        os.remove(os.path.join(d, name))
    for name in ("ca.key", "tls.key"):
        os.chmod(os.path.join(d, name), 0o600)
    os.replace(os.path.join(d, "ca.crt.tmp"), ca_file(cluster_dir))  # last: marks the set complete


def api_tls(cluster_dir):
    """`api.tls` of an InstanceConfig: HTTPS with this certificate, client certificates optional."""
    cert, key, ca = cert_files(cluster_dir)
    return {"certFile": cert, "keyFile": key, "caFile": ca, "clientAuth": "optional"}


def postgres_tls(cluster_dir):
    """What goes into `postgres`: TLS with this certificate, and TLS required. A local cluster
    created with --tls refuses plain TCP (`sslmode=disable` included), as whoever asked for TLS
    expects."""
    cert, key, ca = cert_files(cluster_dir)
    return {"requireTls": True, "tls": {"certFile": cert, "keyFile": key, "caFile": ca}}


def trust(cluster_dir):
    """This script's own https:// requests (status, probes) verify the managers with the CA."""
    ctx = ssl.create_default_context(cafile=ca_file(cluster_dir))
    urllib.request.install_opener(urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx)))
