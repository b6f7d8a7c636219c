"""The operator console: the admin API under `/api/` (read-only rows first: providers,
provider models, service mode, the config dir's files) and, later, the web UI at `/ui/`.

Each module exports ROUTES, Litestar handlers that the app registers; every one of them
needs the admin key (client keys never open them) and never answers a secret value."""
