# The gateway (Granian) as a non-root user. Config lives in the volume /app/configs (the
# server's --config-dir and working directory, so a .env there is read too), state in
# /app/state. compose.yaml runs it on a single host.
#   docker build -t router .                                  # without Claude Code
#   docker build -t router --build-arg WITH_CLAUDE_CODE=1 .   # with the Claude Code CLI
#   docker run -p 3000:3000 -e REQUIRED_API_KEY=... router    # a client key is required:
#                                                             # the server binds 0.0.0.0
#   docker run --rm router check                              # any other router command
FROM python:3.11-slim

# 1: Node.js and npm from Debian, and the Claude Code CLI (the claudeCode-custom provider)
ARG WITH_CLAUDE_CODE=0
ARG CLAUDE_CODE_VERSION=latest

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Debian's own versions: pinning them would break the build at every point release.
# hadolint ignore=DL3008
RUN if [ "$WITH_CLAUDE_CODE" = "1" ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends nodejs npm \
        && npm install -g --no-audit --no-fund "@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION}" \
        && npm cache clean --force \
        && rm -rf /var/lib/apt/lists/*; \
    elif [ "$WITH_CLAUDE_CODE" != "0" ]; then \
        echo "WITH_CLAUDE_CODE must be 0 or 1, not $WITH_CLAUDE_CODE" >&2; exit 1; \
    fi

RUN groupadd --gid 10001 router && useradd --uid 10001 --gid router --create-home router

WORKDIR /app
COPY pyproject.toml README.md ./
COPY router ./router
RUN pip install --no-cache-dir . && rm -rf build ./*.egg-info

# The shipped config, copied into the config volume when it is first created.
COPY --chown=router:router providers.yaml routes.yaml routes.test.yaml ./configs/
COPY --chown=router:router pipelines ./configs/pipelines
COPY --chown=router:router schemas ./configs/schemas
RUN mkdir -p /app/configs/gemini /app/state \
    && chown router:router /app/configs /app/configs/gemini /app/state

# OAuth credentials beside the config (/app/configs/gemini/), as in the seed's layout;
# records, usage and the prompt log (PROMPT_LOG_MODE=file) in the state volume.
ENV ROUTER_STATE_DIR=/app/state \
    GEMINI_OAUTH_CREDS=gemini/oauth_creds.json \
    PROMPT_LOG_FILENAME=/app/state/logs/conversation.log

VOLUME ["/app/configs", "/app/state"]
# 3000: the API; 8085 and 8086: the OAuth sign-in callbacks of gemini-cli-oauth and
# gemini-antigravity (give --callback-host, see README "Gemini OAuth providers").
EXPOSE 3000 8085 8086

# numeric, so that a runtime can tell it is not root (runAsNonRoot)
USER 10001:10001
WORKDIR /app/configs

# No curl in the image: Python's urllib, ignoring any HTTP(S)_PROXY set for upstreams.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:3000/health', timeout=4)"]

ENTRYPOINT ["router"]
CMD ["serve", "--config-dir", "/app/configs", "--host", "0.0.0.0", "--port", "3000"]
