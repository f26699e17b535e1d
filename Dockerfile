# The judge server (`arena-judge serve`): gRPC on 50051, HTTP on 8000.
#
#   docker build -t reasoning-arena/judge:0.1.0 .                          # embedded judge, no model
#   docker build --build-arg EXTRAS=server,vllm -t reasoning-arena/judge:0.1.0-vllm .
#   docker run --rm -p 50051:50051 -p 8000:8000 reasoning-arena/judge:0.1.0
#
# EXTRAS picks the pip extras of pyproject.toml: `server` (default: the embedded rule-based
# judge; also enough for `--comparator openai` against a model server elsewhere), `server,vllm`
# (the in-process vLLM engine: CUDA wheels, run with a GPU), `server,openai` (adds the served
# model's tokenizer, for verdicts read by token id), ... Every option is an ARENA_* environment
# variable (README, "Configuration"); arguments after the image name replace `serve`, e.g.
# `docker run IMAGE serve --comparator openai --judge-base-url http://vllm:8000 ...`.
#
# Trainers do not need this image: the client is the base install, `pip install
# reasoning-arena` (grpcio, protobuf and httpx only).

# Build stage: a virtual environment with the package and its extras, copied whole below.
FROM python:3.11.7-slim-bookworm AS build
ARG EXTRAS=server
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/arena
WORKDIR /src
COPY pyproject.toml README.md ./
COPY trainer_client ./trainer_client
COPY judge_server ./judge_server
RUN /opt/arena/bin/pip install ".[${EXTRAS}]"

# Run stage: no build tools, no sources, a non-root user.
FROM python:3.11.7-slim-bookworm
ARG EXTRAS=server
LABEL org.opencontainers.image.title="reasoning-arena judge server" \
      org.opencontainers.image.description="Judge-as-a-service for RL on reasoning (extras: ${EXTRAS})" \
      org.opencontainers.image.licenses="Apache-2.0"
# Numeric uid/gid, so that Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
RUN groupadd --system --gid 10001 arena \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/arena \
       --shell /usr/sbin/nologin arena \
    && mkdir -p /var/lib/arena \
    && chown 10001:10001 /var/lib/arena
COPY --from=build /opt/arena /opt/arena
# State (the sqlite store, a model cache) lives in /var/lib/arena: mount a volume there.
ENV PATH=/opt/arena/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/var/lib/arena \
    HF_HOME=/var/lib/arena/huggingface \
    ARENA_SQLITE_PATH=/var/lib/arena/arena.sqlite3
WORKDIR /var/lib/arena
USER 10001:10001
EXPOSE 50051 8000
# slim has no curl: the probe is Python's urllib (any non-2xx answer raises, exit 1).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('ARENA_HTTP_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["arena-judge"]
CMD ["serve"]
