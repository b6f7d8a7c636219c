"""The config compiler: YAML files in a config dir -> an immutable `Plan`.

plan, diagnostics = compile_config("path/to/config", env=os.environ)
plan.resolve(protocol=..., model=..., headers=..., body=...)
"""

from router.compiler.compile import compile_config
from router.compiler.dump import dump, generation

__all__ = ["compile_config", "dump", "generation"]
