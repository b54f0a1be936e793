# One image for all four Tessera services; the command picks the service:
#   docker run IMAGE tessera serve gateway   (issuer | revocation | keys)
#   docker run IMAGE tessera migrate
# See docs/deploy.md for docker-compose and Kubernetes.

# --- build: install the project and its dependencies into a venv ---------------------------
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/tessera
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
# Every dependency ships a manylinux wheel for CPython 3.11, so no compiler is needed even here;
# the venv is the only thing that moves on to the final image.
RUN /opt/tessera/bin/pip install --no-cache-dir /src \
    && /opt/tessera/bin/python -m compileall -q /opt/tessera/lib

# --- final: the venv on a fresh slim base, run as an unprivileged user ---------------------
FROM python:3.11-slim

LABEL org.opencontainers.image.title="tessera" \
      org.opencontainers.image.description="Tessera token authority (gateway, issuer, revocation, keys)"

# A fixed numeric uid/gid so Kubernetes runAsNonRoot can verify it without a passwd lookup.
RUN groupadd --system --gid 10001 tessera \
    && useradd --system --uid 10001 --gid tessera --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin tessera

COPY --from=build /opt/tessera /opt/tessera

# Bytecode is compiled at build time; nothing writes next to the code, so the root filesystem
# can be mounted read-only (Kubernetes mounts an emptyDir at /tmp for anything transient).
ENV PATH=/opt/tessera/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TESSERA_HOST=0.0.0.0

WORKDIR /tmp
USER 10001:10001
EXPOSE 8080 8081 8082 8083 9080 9081 9082 9083

# No curl in slim: Python probes /healthz on the ops listener. The service is the last word of
# the container's command (`tessera serve keys`), which is PID 1's, or docker-init's when
# `init: true`; its ops port is TESSERA_<SERVICE>_OPS_PORT or the default. `tessera migrate` has no port: compose disables this.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os,urllib.request as u;s=open('/proc/1/cmdline','rb').read().split(b'\\0')[-2].decode();p=os.environ.get('TESSERA_%s_OPS_PORT'%s.upper()) or {'gateway':9080,'issuer':9081,'revocation':9082,'keys':9083}[s];u.urlopen('http://127.0.0.1:%s/healthz'%p,timeout=2)"]

CMD ["tessera", "serve", "gateway"]
