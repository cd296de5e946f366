"""Schema of the push component (numbered SQL files, applied on start)."""
