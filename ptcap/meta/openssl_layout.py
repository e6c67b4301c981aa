"""Where an OpenSSL 3 libssl keeps a connection's secrets, measured on that very file.

OpenSSL exports no function that hands out TLS 1.3 secrets and its structs are private
(their layout changes between releases and builds), so ptcap measures them: it loads the
library in a child process that runs as nobody (measure_apart), runs a TLS 1.2
and a TLS 1.3 handshake between two in-memory connections with a key-log callback set,
and looks for the logged secrets (and what the public getters return) inside the client's
SSL object. The offsets found are checked by deriving a handshake secret from them.
`python -m ptcap.meta.openssl_layout LIBSSL` prints them as JSON, to look at a library.
"""
from __future__ import annotations

import ctypes
import hashlib
import hmac
import json
import os
import select
import signal
import sys
import time

# tls13 slots in bpf/keylog.bpf.c order: client/server application traffic secret, exporter
# secret, handshake secret, transcript hash after ServerHello
TLS13_LABELS = ("CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0", "EXPORTER_SECRET")
SHA384_SUITES = {0x03001302}
MD_MAX = 64      # EVP_MAX_MD_SIZE: the size of each secret array in the SSL object


def expand_label(secret: bytes, label: str, context: bytes, length: int, digest) -> bytes:
    """TLS 1.3 HKDF-Expand-Label (RFC 8446 7.1), for lengths up to one hash block."""
    full = b"tls13 " + label.encode()
    info = length.to_bytes(2, "big") + bytes([len(full)]) + full + bytes([len(context)]) + context
    return hmac.new(secret, info + b"\x01", digest).digest()[:length]


def digest_for(cipher_id: int):
    return hashlib.sha384 if cipher_id in SHA384_SUITES else hashlib.sha256


class _Lib:
    def __init__(self, path: str) -> None:
        self.ssl = ctypes.CDLL(path)
        p, i = ctypes.c_void_p, ctypes.c_int
        for name, res, args in (
            ("TLS_method", p, []), ("SSL_CTX_new", p, [p]), ("SSL_CTX_free", None, [p]),
            ("SSL_CTX_ctrl", ctypes.c_long, [p, i, ctypes.c_long, p]),
            ("SSL_CTX_use_certificate", i, [p, p]), ("SSL_CTX_use_PrivateKey", i, [p, p]),
            ("SSL_CTX_set_keylog_callback", None, [p, p]), ("SSL_new", p, [p]), ("SSL_free", None, [p]),
            ("SSL_set_connect_state", None, [p]), ("SSL_set_accept_state", None, [p]),
            ("SSL_set_bio", None, [p, p, p]), ("SSL_do_handshake", i, [p]),
            ("SSL_write", i, [p, p, i]), ("SSL_read", i, [p, p, i]),
            ("SSL_get_client_random", ctypes.c_size_t, [p, p, ctypes.c_size_t]),
            ("SSL_get_session", p, [p]), ("SSL_SESSION_get_master_key", ctypes.c_size_t, [p, p, ctypes.c_size_t]),
            ("SSL_SESSION_get0_cipher", p, [p]), ("SSL_CIPHER_get_id", ctypes.c_uint32, [p]),
            ("BIO_new_bio_pair", i, [ctypes.POINTER(p), ctypes.c_size_t, ctypes.POINTER(p), ctypes.c_size_t]),
            ("EVP_PKEY_Q_keygen", p, None), ("X509_new", p, []), ("X509_set_version", i, [p, ctypes.c_long]),
            ("X509_getm_notBefore", p, [p]), ("X509_getm_notAfter", p, [p]),
            ("X509_gmtime_adj", p, [p, ctypes.c_long]), ("X509_set_pubkey", i, [p, p]),
            ("X509_sign", i, [p, p, p]), ("EVP_sha256", p, []), ("OpenSSL_version", ctypes.c_char_p, [i]),
        ):
            fn = getattr(self.ssl, name)      # libssl's handle finds libcrypto's symbols too
            fn.restype = res
            if args is not None:
                fn.argtypes = args
        self.libc = ctypes.CDLL(None)
        self.libc.malloc_usable_size.restype = ctypes.c_size_t
        self.libc.malloc_usable_size.argtypes = [p]


_SET_MIN_PROTO, _SET_MAX_PROTO = 123, 124      # SSL_CTRL_SET_{MIN,MAX}_PROTO_VERSION
_KEYLOG_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p)


def _handshake(lib: _Lib, version: int) -> tuple[int, dict[str, bytes], list]:
    """A finished client connection (its SSL pointer) and the secrets it logged."""
    f = lib.ssl
    logged: dict[str, bytes] = {}

    @_KEYLOG_FN
    def keylog(_ssl, line):
        label, _random, secret = line.decode().split()
        logged[label] = bytes.fromhex(secret)

    pkey = f.EVP_PKEY_Q_keygen(None, None, b"EC", b"P-256")
    cert = f.X509_new()
    f.X509_set_version(cert, 2)
    f.X509_gmtime_adj(f.X509_getm_notBefore(cert), 0)
    f.X509_gmtime_adj(f.X509_getm_notAfter(cert), 3600)
    f.X509_set_pubkey(cert, pkey)
    if not pkey or f.X509_sign(cert, pkey, f.EVP_sha256()) <= 0:
        raise RuntimeError("cannot make a test certificate")
    ctxs = [f.SSL_CTX_new(f.TLS_method()) for _ in range(2)]
    for ctx in ctxs:
        f.SSL_CTX_ctrl(ctx, _SET_MIN_PROTO, version, None)
        f.SSL_CTX_ctrl(ctx, _SET_MAX_PROTO, version, None)
    f.SSL_CTX_use_certificate(ctxs[1], cert)
    f.SSL_CTX_use_PrivateKey(ctxs[1], pkey)
    f.SSL_CTX_set_keylog_callback(ctxs[0], ctypes.cast(keylog, ctypes.c_void_p))
    client, server = f.SSL_new(ctxs[0]), f.SSL_new(ctxs[1])
    a, b = ctypes.c_void_p(), ctypes.c_void_p()
    f.BIO_new_bio_pair(ctypes.byref(a), 0, ctypes.byref(b), 0)
    f.SSL_set_bio(client, a, a)
    f.SSL_set_bio(server, b, b)
    f.SSL_set_connect_state(client)
    f.SSL_set_accept_state(server)
    for _ in range(20):
        done = [f.SSL_do_handshake(s) == 1 for s in (client, server)]
        if all(done):
            break
    else:
        raise RuntimeError("the test handshake did not finish")
    buf = ctypes.create_string_buffer(16)
    f.SSL_write(client, b"ping", 4)
    f.SSL_read(server, buf, 16)
    f.SSL_write(server, b"pong", 4)
    f.SSL_read(client, buf, 16)
    return client, logged, [keylog, server]      # kept alive with the connection


def _find(memory: bytes, value: bytes, what: str) -> int:
    at = memory.find(value)
    if at < 0 or memory.find(value, at + 1) >= 0:
        raise RuntimeError(f"{what} not found once in the SSL object")
    return at


def _memory(lib: _Lib, ptr: int) -> bytes:
    return ctypes.string_at(ptr, lib.libc.malloc_usable_size(ptr))


def measure(path: str) -> dict:
    lib = _Lib(path)
    f = lib.ssl
    out: dict = {"version": f.OpenSSL_version(0).decode()}
    # TLS 1.2: client random in the SSL object, master key and cipher in its session
    ssl12, logged12, _keep12 = _handshake(lib, 0x0303)
    mem = _memory(lib, ssl12)
    random = ctypes.create_string_buffer(32)
    f.SSL_get_client_random(ssl12, random, 32)
    out["random"] = _find(mem, random.raw, "client random")
    session = f.SSL_get_session(ssl12)
    out["session"] = _find(mem, session.to_bytes(8, "little"), "session pointer")
    smem = _memory(lib, session)
    master = ctypes.create_string_buffer(48)
    f.SSL_SESSION_get_master_key(session, master, 48)
    if logged12.get("CLIENT_RANDOM") != master.raw:
        raise RuntimeError("the logged TLS 1.2 master key is not the session's")
    out["master"] = _find(smem, master.raw, "master key")
    cipher = f.SSL_SESSION_get0_cipher(session)
    out["cipher"] = _find(smem, cipher.to_bytes(8, "little"), "cipher pointer")
    cid = f.SSL_CIPHER_get_id(cipher).to_bytes(4, "little")
    out["cipher_id"] = _find(ctypes.string_at(cipher, 64), cid, "cipher id")
    # TLS 1.3: the secrets that stay in the SSL object after the handshake
    ssl13, logged13, _keep13 = _handshake(lib, 0x0304)
    mem = _memory(lib, ssl13)
    if _find(mem, _client_random(lib, ssl13), "client random") != out["random"]:
        raise RuntimeError("the client random moved between TLS 1.2 and 1.3")
    slots = [_find(mem, logged13[label], label) for label in TLS13_LABELS]
    suite = f.SSL_CIPHER_get_id(f.SSL_SESSION_get0_cipher(f.SSL_get_session(ssl13)))
    digest = digest_for(suite)
    size = digest().digest_size
    want = logged13["CLIENT_HANDSHAKE_TRAFFIC_SECRET"]
    near = [slots[0] - k * MD_MAX for k in range(1, 16) if slots[0] - k * MD_MAX >= 0]
    for secret_at in near:
        for hash_at in near:
            if expand_label(mem[secret_at:secret_at + size], "c hs traffic",
                            mem[hash_at:hash_at + size], size, digest) == want:
                out["tls13"] = slots + [secret_at, hash_at]
                return out
    raise RuntimeError("the TLS 1.3 handshake secret was not found")


def _client_random(lib: _Lib, ssl: int) -> bytes:
    random = ctypes.create_string_buffer(32)
    lib.ssl.SSL_get_client_random(ssl, random, 32)
    return random.raw


NOBODY = 65534
_PR_SET_DUMPABLE = 4


def measure_apart(path: str, timeout: float = 30) -> dict:
    """measure() in a forked child that runs as nobody, without capabilities: loading a
    library runs its code, and the file may belong to a container or to any user. The
    child reads the library through a descriptor opened here; the result comes back as
    JSON through a pipe ({"error": reason} when it cannot be measured)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        return {"error": e.strerror}
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                    # the child: never returns
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            # a changed uid makes /proc/self root's: readable again for our own descriptor
            ctypes.CDLL(None).prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)
            result = measure(f"/proc/self/fd/{fd}")
        except BaseException as e:          # noqa: BLE001 (the child must never return)
            result = {"error": str(e) or type(e).__name__}
        os.write(w, json.dumps(result).encode())
        os._exit(0)
    os.close(fd)
    os.close(w)
    data, deadline = b"", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([r], [], [], deadline - time.monotonic())[0]:
                chunk = os.read(r, 65536)
                if not chunk:
                    break
                data += chunk
    finally:
        os.close(r)
        if os.waitpid(pid, os.WNOHANG)[0] == 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    try:
        return json.loads(data)
    except ValueError:
        return {"error": "measuring it failed (the test handshake crashed or hung)"}


def main() -> int:
    try:
        result = measure(sys.argv[1])
    except (OSError, AttributeError, RuntimeError, KeyError, ValueError) as e:
        result = {"error": str(e)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
