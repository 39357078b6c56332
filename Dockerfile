# credgw container image. Build it with `make image` (docs/deploy.md,
# "Container image"): podman, on a Debian 12 base made locally by
# debootstrap (cmd/credgw/dist/base-image.sh), so no registry is needed.
#
# The binary is built on the host (`make build`: Go 1.26, cgo) and copied
# in: Debian 12's golang is too old to build credgw in a builder stage, and
# no registry is reachable for a golang image. The host must be Debian 12
# (or older glibc) so that the binary's glibc needs match the base's.
ARG BASE=localhost/debian-base:bookworm
FROM ${BASE}

# PKCS#11 modules are C libraries loaded by the cgo binary. WITH_SOFTHSM=yes
# adds SoftHSM 2 and OpenSC (development, tests); a real HSM's module is
# mounted or added in an image built from this one.
ARG WITH_SOFTHSM=no
RUN set -eu; \
    pkgs="ca-certificates curl"; \
    if [ "$WITH_SOFTHSM" = yes ]; then pkgs="$pkgs softhsm2 opensc"; fi; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $pkgs; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin; \
    adduser --system --group --home /var/lib/credgw --no-create-home credgw; \
    install -d -o credgw -g credgw -m 0700 /var/lib/credgw; \
    install -d -m 0755 /etc/credgw

COPY bin/credgw /usr/bin/credgw

# /etc/credgw: credgw.yaml and what it names (certificates, PIN files: mount
# them read-only). /var/lib/credgw: the SQLite database, a SoftHSM token
# directory; the gateway's own, kept across containers.
VOLUME ["/etc/credgw", "/var/lib/credgw"]
# gRPC (TLS), public HTTP (OCSP, CRLs), management (/healthz, /metrics), as in
# the example config cmd/credgw/dist/credgw.yaml.
EXPOSE 8443 8080 9090
USER credgw
WORKDIR /var/lib/credgw
# Liveness from the management listener (listen.management on port 9090).
HEALTHCHECK --interval=30s --timeout=5s CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:9090/healthz"]
ENTRYPOINT ["/usr/bin/credgw"]
CMD ["serve", "--config", "/etc/credgw/credgw.yaml"]
