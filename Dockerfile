# syntax=docker/dockerfile:1
# One image for both servers: the command picks one (Kubernetes passes args).
#   docker build -t ensemble-extproc:0.1.0 .
#   docker run --rm ensemble-extproc:0.1.0 check-config --config /etc/ensemble-extproc/config.yaml
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: generate the gRPC code (not committed), then build the wheel -----------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# Code generators live only in this stage: grpcio-tools (protoc) and mypy-protobuf, whose
# protoc plugins tools/gen_protos.py expects next to the interpreter (a venv's bin/), and
# the build backend. Every dependency is pinned with its hashes (`make lock` refreshes them).
COPY requirements/build-lock.txt /tmp/build-lock.txt
RUN python -m venv /opt/build \
    && /opt/build/bin/pip install --require-hashes --no-deps -r /tmp/build-lock.txt
WORKDIR /src
COPY pyproject.toml README.md ./
COPY protos ./protos
COPY tools ./tools
COPY src ./src
RUN /opt/build/bin/python tools/gen_protos.py --out src/ensemble_extproc/_pb
# No build isolation: the backend is the pinned setuptools above, not whatever is newest.
RUN /opt/build/bin/python -m pip wheel . --no-deps --no-build-isolation -w /wheels \
    && /opt/build/bin/python -c "import glob, sys, zipfile; \
names = zipfile.ZipFile(glob.glob('/wheels/*.whl')[0]).namelist(); \
need = 'ensemble_extproc/_pb/envoy/service/ext_proc/v3/external_processor_pb2_grpc.py'; \
sys.exit(0 if need in names else 'the wheel lacks the generated gRPC code: ' + need)"

# --- runtime: the wheel and its runtime dependencies only, pinned with their hashes -------
FROM ${PYTHON_IMAGE} AS runtime
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
# The locked dependencies (with the otel extra, so tracing needs only config), then our
# own wheel (built above) without resolving anything;
# pip check fails the build if the lock misses a dependency of the wheel.
RUN --mount=type=bind,source=requirements/lock.txt,target=/tmp/lock.txt \
    --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/venv \
    && /opt/venv/bin/pip install --require-hashes --no-deps -r /tmp/lock.txt \
    && /opt/venv/bin/pip install --no-deps /wheels/*.whl \
    && /opt/venv/bin/pip check
RUN groupadd --system --gid 10001 ensemble \
    && useradd --system --uid 10001 --gid ensemble --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin ensemble
# The demo config, so the image runs check-config out of the box; Kubernetes mounts the
# real one over this directory (deploy/kubernetes/base/configmap.yaml).
COPY config/default.yaml /etc/ensemble-extproc/config.yaml
# Numeric, so Kubernetes can verify runAsNonRoot (the manifests use runAsUser 10001).
USER 10001:10001
WORKDIR /tmp
# The ports of that config (listen.extproc, listen.extproc_metrics, listen.upstream);
# tests/test_deploy.py keeps them equal. It listens on loopback: to publish a port, mount a
# config whose listen hosts are 0.0.0.0 (as the Kubernetes ConfigMap's).
EXPOSE 9002 9464 8090
# The server this container runs (found from its command line, with its config and
# replica) answers its health check: the upstream's /healthz, the processor's gRPC health.
# Both fail while draining. Kubernetes ignores this and uses the manifests' probes.
HEALTHCHECK --interval=15s --timeout=10s --start-period=20s --retries=3 \
    CMD ["ensemble-extproc", "healthcheck", "--timeout", "3"]
ENTRYPOINT ["ensemble-extproc"]
CMD ["upstream", "--config", "/etc/ensemble-extproc/config.yaml"]
