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
# protoc plugins tools/gen_protos.py expects next to the interpreter (a venv's bin/).
RUN python -m venv /opt/build \
    && /opt/build/bin/pip install "grpcio-tools>=1.70" "mypy-protobuf>=3.6"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY protos ./protos
COPY tools ./tools
COPY src ./src
RUN /opt/build/bin/python tools/gen_protos.py --out src/ensemble_extproc/_pb
RUN /opt/build/bin/python -m pip wheel . --no-deps -w /wheels \
    && /opt/build/bin/python -c "import glob, sys, zipfile; \
names = zipfile.ZipFile(glob.glob('/wheels/*.whl')[0]).namelist(); \
need = 'ensemble_extproc/_pb/envoy/service/ext_proc/v3/external_processor_pb2_grpc.py'; \
sys.exit(0 if need in names else 'the wheel lacks the generated gRPC code: ' + need)"

# --- runtime: the wheel and its runtime dependencies only --------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/venv \
    && /opt/venv/bin/pip install /wheels/*.whl
RUN groupadd --system --gid 10001 ensemble \
    && useradd --system --uid 10001 --gid ensemble --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin ensemble
# The demo config, so the image runs check-config out of the box; Kubernetes mounts the
# real one over this directory (deploy/kubernetes/base/configmap.yaml).
COPY config/default.yaml /etc/ensemble-extproc/config.yaml
# Numeric, so Kubernetes can verify runAsNonRoot (the manifests use runAsUser 10001).
USER 10001:10001
WORKDIR /tmp
# gRPC ext_proc, processor metrics, ensemble upstream (HTTP, /metrics, /healthz).
EXPOSE 50051 9464 8090
ENTRYPOINT ["ensemble-extproc"]
CMD ["upstream", "--config", "/etc/ensemble-extproc/config.yaml"]
