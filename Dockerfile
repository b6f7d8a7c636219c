FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY router ./router
RUN pip install --no-cache-dir .

COPY providers.yaml routes.yaml ./
COPY pipelines ./pipelines
COPY schemas ./schemas

# Binding a non-loopback address needs a client key: pass REQUIRED_API_KEY at run time.
EXPOSE 3000
CMD ["router", "serve", "--config-dir", "/app", "--host", "0.0.0.0", "--port", "3000"]
