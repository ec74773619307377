"""Test certificates made with the openssl command line at test time: a CA, a server
certificate for 127.0.0.1 and localhost, and client certificates, all in a temporary
directory. Used by tests/tls and by the TLS rows of `make bench`."""
import os
import subprocess


def _run(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


class Certs:
    """ca.pem; server.pem/server.key; client certificates by name (client(...))."""

    def __init__(self, directory):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.ca = self.path("ca.pem")
        self.ca_key = self.path("ca.key")
        _run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "2", "-subj", "/O=Ferry Test/CN=Ferry Test CA", cwd=directory)
        self.server_cert, self.server_key = self.server("server", serial=1000)

    def path(self, name):
        return os.path.join(self.dir, name)

    def _sign(self, name, subj, serial, ext_lines):
        _run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", subj, cwd=self.dir)
        with open(self.path(f"{name}.ext"), "w") as f:
            f.write("\n".join(ext_lines) + "\n")
        _run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial", str(serial),
             "-days", "2", "-sha256", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=self.dir)
        return self.path(f"{name}.pem"), self.path(f"{name}.key")

    def server(self, name, serial):
        """A server certificate for 127.0.0.1 / localhost with the given serial number."""
        return self._sign(name, "/O=Ferry Test/CN=localhost", serial,
                          ["basicConstraints=CA:FALSE", "keyUsage=digitalSignature,keyEncipherment",
                           "extendedKeyUsage=serverAuth", "subjectAltName=IP:127.0.0.1,DNS:localhost"])

    def client(self, name, subj, serial=2000):
        """A client certificate with the given subject ("/O=Test/CN=client")."""
        return self._sign(name, subj, serial,
                          ["basicConstraints=CA:FALSE", "keyUsage=digitalSignature,keyEncipherment",
                           "extendedKeyUsage=clientAuth"])


def fingerprint(der):
    """SHA-256 fingerprint of a DER certificate (what a client saw)."""
    import hashlib
    return hashlib.sha256(der).hexdigest()
