# The Stampede image: the CLI, RQ workers, the Locust file, the dashboard and the simulator.
# Installed editable from /app, so the Alembic migrations and loadgen/chat.py are found by path.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/var/lib/stampede/journal \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY stampede stampede
COPY loadgen loadgen
COPY workers workers
COPY dashboard dashboard
COPY simulator simulator
COPY migrations migrations
COPY .streamlit .streamlit
# The journal directory, owned by the user, so a volume mounted on it (docker-compose.yml) is writable.
RUN pip install -e . && useradd --create-home --uid 10001 stampede \
    && mkdir -p /var/lib/stampede/journal && chown stampede /var/lib/stampede/journal

USER stampede
EXPOSE 8000 8089 8501
CMD ["stampede", "--help"]
