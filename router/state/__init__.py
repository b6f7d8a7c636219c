"""Runtime state the workers of a server share through the state store (the SQLite
database of router.records.store): runtime overrides of instances, each worker's
status and health, commands for every worker, and the console's events."""
