# TuneScout: the API served by gunicorn. Build: docker build -t tunescout .
# Stage 1 builds the wheels that need a compiler (mysqlclient); stage 2 carries only runtime libraries
# (no ffmpeg: audio is decoded in the process by PyAV, whose wheels carry the FFmpeg libraries).
FROM python:3.11-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc pkg-config libmariadb-dev \
 && rm -rf /var/lib/apt/lists/*
COPY requirements.txt /src/requirements.txt
RUN pip wheel --no-cache-dir --wheel-dir /wheels -r /src/requirements.txt
COPY pyproject.toml README.md /src/
COPY dejavu /src/dejavu
COPY tunescout /src/tunescout
COPY uploader /src/uploader
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels /src

FROM python:3.11-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libmariadb3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --create-home --uid 10001 tunescout \
 && mkdir -p /data /etc/tunescout && chown tunescout /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/* && rm -rf /wheels
COPY config.json /etc/tunescout/config.json
USER tunescout
WORKDIR /home/tunescout
ENV TUNESCOUT_CONFIG=/etc/tunescout/config.json TUNESCOUT_DATA_DIR=/data PYTHONUNBUFFERED=1
EXPOSE 5000
VOLUME ["/data"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:5000/api/health', timeout=4).status != 200)"
# Inside the container the server must listen on all interfaces; publish the port on 127.0.0.1
# (docker-compose.yml does) or behind a reverse proxy.
CMD ["tunescout", "serve", "--host", "0.0.0.0", "--port", "5000", "--workers", "2"]
