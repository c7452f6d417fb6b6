"""Server-side TLS settings for the client port.

ALPN offers "h2" and "http/1.1" (gRPC clients ask for h2, curl for either); TLS 1.2 is the
floor, as in etcd 3.5. With `client_cert_auth`, a client must present a certificate that chains
to `trusted_ca_file` (or to the system roots when there is none).
"""

import ssl

__all__ = ["server_context", "ALPN_PROTOCOLS"]

ALPN_PROTOCOLS = ("h2", "http/1.1")


def server_context(cert_file: str, key_file: str, trusted_ca_file: str = "",
                   client_cert_auth: bool = False) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    ctx.set_alpn_protocols(list(ALPN_PROTOCOLS))
    # HTTP/2 forbids renegotiation and compression (RFC 7540 section 9.2).
    ctx.options |= ssl.OP_NO_COMPRESSION | getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    if trusted_ca_file:
        ctx.load_verify_locations(cafile=trusted_ca_file)
    if client_cert_auth:
        if not trusted_ca_file:
            # Go verifies client chains against the system roots when no CA file is given.
            ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
